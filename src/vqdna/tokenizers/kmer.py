"""k-mer tokenizers (DNABERT: overlapping; Nucleotide Transformer: non-overlapping), k = 3, 6, ...

Ids 0..4^k−1 are the k-mers in base 4 (A=0, C=1, G=2, T=3, first base most significant).
Ids 4^k..4^k+3 are single nucleotides, used where a sequence does not fill a whole k-mer:
the tail of a non-overlapping split (as the Nucleotide Transformer does) and sequences
shorter than k. Encoding is exact, so `decode(encode(s)) == s`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import write_json
from ..dna import INVALID, to_ascii, to_codes
from ..errors import InputError
from .base import GenomeTokenizer


class KmerTokenizer(GenomeTokenizer):
    kind = "kmer"

    def __init__(self, k: int = 6, overlap: bool = False):
        if not 1 <= k <= 12:
            raise ValueError(f"k must be in 1..12, not {k}")
        self.k = int(k)
        self.overlap = bool(overlap)
        self._powers = 4 ** np.arange(self.k - 1, -1, -1, dtype=np.int64)

    @property
    def levels(self) -> int:
        return 1

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        return (4 ** self.k + 4,)

    @property
    def single_base_offset(self) -> int:
        return 4 ** self.k

    def num_tokens(self, length: int) -> int:
        if length < self.k:
            return length
        if self.overlap:
            return length - self.k + 1
        return length // self.k + length % self.k

    def config(self) -> dict:
        return {"kind": self.kind, "k": self.k, "overlap": self.overlap, "vocab_sizes": list(self.vocab_sizes)}

    def _encode_one(self, codes: np.ndarray) -> np.ndarray:
        codes = codes.astype(np.int64)
        if len(codes) < self.k:
            return self.single_base_offset + codes
        if self.overlap:
            windows = np.lib.stride_tricks.sliding_window_view(codes, self.k)
            return windows @ self._powers
        n_full = len(codes) // self.k
        full = codes[: n_full * self.k].reshape(n_full, self.k) @ self._powers
        tail = self.single_base_offset + codes[n_full * self.k:]
        return np.concatenate([full, tail])

    def encode(self, seqs: Sequence[str | bytes]) -> list[np.ndarray]:
        out = []
        for i, s in enumerate(seqs):
            codes = to_codes(s)
            if (codes == INVALID).any():
                raise ValueError(f"sequence {i} holds symbols other than A/C/G/T; apply the shard IUPAC policy first")
            out.append(self._encode_one(codes)[:, None])
        return out

    def _kmer_bases(self, ids: np.ndarray) -> np.ndarray:
        """[T] k-mer ids -> [T, k] base codes."""
        return (ids[:, None] // self._powers[None, :]) % 4

    def decode(self, ids: Sequence[np.ndarray]) -> list[str]:
        out = []
        for a in ids:
            a = np.asarray(a, dtype=np.int64).reshape(-1)
            if a.size and (a.min() < 0 or a.max() >= self.vocab_sizes[0]):
                raise ValueError(f"ids outside 0..{self.vocab_sizes[0] - 1}")
            single = a >= self.single_base_offset
            if single.all():
                out.append(to_ascii(a - self.single_base_offset))
                continue
            kmers = a[~single]
            tail = a[single] - self.single_base_offset
            bases = self._kmer_bases(kmers)
            if self.overlap:  # first k-mer whole, then the last base of each following one
                body = np.concatenate([bases[0], bases[1:, -1]])
            else:
                body = bases.reshape(-1)
            out.append(to_ascii(np.concatenate([body, tail])))
        return out

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / "config.json", self.config())

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "KmerTokenizer":
        cfg_file = Path(path) / "config.json"
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("kind") != cls.kind or "k" not in cfg:
            raise InputError(cfg_file, "not a k-mer tokenizer config")
        return cls(k=cfg["k"], overlap=cfg.get("overlap", False))
