"""Turn raw record bytes into clean upper-case sequence and fixed-length window starts (numpy only).

Per batch of records (concatenated), all steps are array operations:
  1. classify every byte: A/C/G/T, N, other IUPAC code, or not a nucleotide at all (error);
  2. soft-masked (lower-case) bases become upper case;
  3. N runs of at least `n_split_min_run` cut the sequence into segments (shorter N runs are
     treated like other IUPAC codes); record ends and, when splitting by position block, block
     edges cut segments too, so no window spans two records or two split units;
  4. other IUPAC codes follow `iupac_policy`: `error`, `drop` (windows holding one are dropped;
     the stride grid stays anchored at the segment start) or `replace` (by one of the bases the
     code stands for, chosen by a hash of seed and position, so it repeats exactly);
  5. windows start every `stride` bases from each segment start while `window` bases fit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

# byte classes
ACGT, N_BASE, IUPAC, INVALID = 0, 1, 2, 3

_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a"):ord("z") + 1] -= 32

_CLASS = np.full(256, INVALID, dtype=np.uint8)
_COMPATIBLE = {  # IUPAC ambiguity codes -> bases they stand for
    "R": "AG", "Y": "CT", "S": "CG", "W": "AT", "K": "GT", "M": "AC",
    "B": "CGT", "D": "AGT", "H": "ACT", "V": "ACG",
}
for _c in "ACGT":
    _CLASS[ord(_c)] = _CLASS[ord(_c.lower())] = ACGT
_CLASS[ord("N")] = _CLASS[ord("n")] = N_BASE
for _c in _COMPATIBLE:
    _CLASS[ord(_c)] = _CLASS[ord(_c.lower())] = IUPAC

# replacement table: row = upper-case byte, columns = 3 candidate bases (cycled when fewer)
_REPLACE = np.zeros((256, 3), dtype=np.uint8)
_N_CHOICES = np.ones(256, dtype=np.uint64)
for _c, _bases in _COMPATIBLE.items():
    _REPLACE[ord(_c)] = [ord(_bases[i % len(_bases)]) for i in range(3)]
    _N_CHOICES[ord(_c)] = len(_bases)


@dataclass(frozen=True)
class WindowParams:
    window: int
    stride: int
    n_split_min_run: int = 1
    iupac_policy: str = "drop"          # drop | replace | error
    split_by: str = "record"            # record | block
    block_size: int = 100_000
    valid_fraction: float = 0.05
    seed: int = 0

    @classmethod
    def from_config(cls, shards_cfg: dict) -> "WindowParams":
        split = shards_cfg["split"]
        return cls(
            window=int(shards_cfg["window"]), stride=int(shards_cfg["stride"]),
            n_split_min_run=int(shards_cfg["n_split_min_run"]),
            iupac_policy=shards_cfg["iupac_policy"], split_by=split["by"],
            block_size=int(split["block_size"]), valid_fraction=float(split["valid_fraction"]),
            seed=int(split["seed"]),
        )


@dataclass
class BatchWindows:
    clean: np.ndarray        # [n] uint8 upper-case sequence (replaced when policy is replace)
    starts: np.ndarray       # [w] int64 window start inside `clean`
    records: np.ndarray      # [w] int64 record index inside the batch
    local_starts: np.ndarray  # [w] int64 start inside the record
    units: np.ndarray        # [w] int64 split unit inside the record (block index, or 0)
    n_bases: int
    n_n: int
    n_iupac: int
    n_dropped_windows: int


class BadByte(Exception):
    """A byte that is no nucleotide code, or an IUPAC code under policy `error`."""

    def __init__(self, position: int, byte: int, kind: str):
        self.position, self.byte, self.kind = position, byte, kind
        super().__init__(f"{kind} {bytes([byte])!r} at position {position}")


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of the runs of True in a bool array."""
    edges = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _mark_runs(n: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    delta = np.zeros(n + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    return np.cumsum(delta[:-1]) > 0


def _position_hash(positions: np.ndarray, salt: int) -> np.ndarray:
    """A cheap, stable integer hash of positions (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        z = positions.astype(np.uint64) + np.uint64(salt & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def stable_salt(*parts: object) -> int:
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def batch_windows(raw: np.ndarray, record_lengths: np.ndarray, record_offsets_global: np.ndarray,
                  params: WindowParams, salt: int) -> BatchWindows:
    """Clean one batch of concatenated records and enumerate its windows.

    `record_offsets_global` is where each record starts in the whole genome (for the position
    hash of `replace`, so results do not depend on how records were batched).
    """
    n = raw.shape[0]
    cls = _CLASS[raw]
    clean = _UPPER[raw]
    bad = np.flatnonzero(cls == INVALID)
    if bad.size:
        raise BadByte(int(bad[0]), int(raw[bad[0]]), "not a nucleotide code")
    is_n = cls == N_BASE
    is_iupac = cls == IUPAC
    rec_starts = np.concatenate(([0], np.cumsum(record_lengths)[:-1])).astype(np.int64)
    rec_of = np.repeat(np.arange(len(record_lengths), dtype=np.int64), record_lengths)
    local = np.arange(n, dtype=np.int64) - rec_starts[rec_of]

    if params.n_split_min_run > 1 and is_n.any():
        n_starts, n_ends = _runs(is_n)
        short = (n_ends - n_starts) < params.n_split_min_run
        short_mask = _mark_runs(n, n_starts[short], n_ends[short])
        is_n &= ~short_mask
        is_iupac |= short_mask
    n_iupac = int(is_iupac.sum())
    n_n = int(is_n.sum())

    if n_iupac:
        if params.iupac_policy == "error":
            first = int(np.flatnonzero(is_iupac)[0])
            raise BadByte(first, int(raw[first]), "IUPAC ambiguity code (shards.iupac_policy: error)")
        if params.iupac_policy == "replace":
            pos = np.flatnonzero(is_iupac)
            global_pos = record_offsets_global[rec_of[pos]] + local[pos]
            codes = clean[pos]
            choice = (_position_hash(global_pos, salt) % _N_CHOICES[codes]).astype(np.intp)
            # an N inside a short run stands for any base
            is_plain_n = codes == ord("N")
            replaced = _REPLACE[codes, np.minimum(choice, 2)]
            replaced[is_plain_n] = np.frombuffer(b"ACGT", dtype=np.uint8)[choice[is_plain_n] % 4]
            clean[pos] = replaced
            is_iupac[:] = False

    good = ~is_n
    seg_cut = local == 0
    if params.split_by == "block":
        seg_cut |= (local % params.block_size) == 0
    prev_good = np.concatenate(([False], good[:-1]))
    seg_start = np.flatnonzero(good & (~prev_good | seg_cut))
    # a segment ends where the next position is bad or starts a new record/block
    next_cut = np.concatenate((seg_cut[1:], [True]))
    next_good = np.concatenate((good[1:], [False]))
    seg_end = np.flatnonzero(good & (~next_good | next_cut)) + 1
    seg_len = seg_end - seg_start
    w, s = params.window, params.stride
    per_seg = np.where(seg_len >= w, (seg_len - w) // s + 1, 0)
    total = int(per_seg.sum())
    first_idx = np.repeat(np.cumsum(per_seg) - per_seg, per_seg)
    starts = np.repeat(seg_start, per_seg) + (np.arange(total, dtype=np.int64) - first_idx) * s

    dropped = 0
    if n_iupac and params.iupac_policy == "drop" and total:
        cs = np.concatenate(([0], np.cumsum(is_iupac, dtype=np.int64)))
        keep = cs[starts + w] == cs[starts]
        dropped = int((~keep).sum())
        starts = starts[keep]
    records = rec_of[starts] if starts.size else np.zeros(0, dtype=np.int64)
    local_starts = local[starts] if starts.size else np.zeros(0, dtype=np.int64)
    units = local_starts // params.block_size if params.split_by == "block" else np.zeros_like(local_starts)
    return BatchWindows(clean=clean, starts=starts.astype(np.int64), records=records,
                        local_starts=local_starts, units=units, n_bases=n, n_n=n_n,
                        n_iupac=n_iupac, n_dropped_windows=dropped)


def unit_is_valid(seed: int, accession: str, record_id: str, unit: int, valid_fraction: float) -> bool:
    """Seeded, order-independent train/valid assignment of one split unit (record or block)."""
    if valid_fraction <= 0:
        return False
    u = stable_salt("split", seed, accession, record_id, unit) / 2.0**64
    return u < valid_fraction
