"""Nucleotide alphabet shared by every stage: A,C,G,T -> 0..3 (upper or lower case)."""

from __future__ import annotations

import numpy as np

ALPHABET = b"ACGT"
INVALID = 255

# Lookup table over all 256 byte values: soft-masked (lower-case) bases map like upper case.
_LUT = np.full(256, INVALID, dtype=np.uint8)
for _i, _c in enumerate(ALPHABET):
    _LUT[_c] = _i
    _LUT[ord(chr(_c).lower())] = _i
_ASCII = np.frombuffer(ALPHABET, dtype=np.uint8)


def to_codes(seq: str | bytes | np.ndarray) -> np.ndarray:
    """ASCII DNA -> uint8 codes 0..3; anything not A/C/G/T becomes 255 (caller applies a policy)."""
    if isinstance(seq, str):
        seq = seq.encode("ascii", errors="replace")
    arr = np.frombuffer(seq, dtype=np.uint8) if isinstance(seq, (bytes, bytearray, memoryview)) else np.asarray(seq, dtype=np.uint8)
    return _LUT[arr]


def to_ascii(codes: np.ndarray) -> str:
    codes = np.asarray(codes)
    if codes.size and codes.max() > 3:
        raise ValueError("codes must be in 0..3")
    return _ASCII[codes.astype(np.intp)].tobytes().decode("ascii")


def batch_to_codes(seqs, length: int | None = None) -> np.ndarray:
    """Equal-length sequences -> [B, L] uint8 codes (raises if lengths differ and no length given)."""
    seqs = list(seqs)
    if not seqs:
        return np.zeros((0, length or 0), dtype=np.uint8)
    L = length or len(seqs[0])
    out = np.empty((len(seqs), L), dtype=np.uint8)
    for i, s in enumerate(seqs):
        c = to_codes(s)
        if c.shape[0] != L:
            raise ValueError(f"sequence {i} has length {c.shape[0]}, expected {L}")
        out[i] = c
    return out
