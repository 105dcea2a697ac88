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
import zlib
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

# the same two tables for bytes.translate (much faster than a numpy lookup per base)
UPPER_TABLE = _UPPER.tobytes()
CLASS_TABLE = _CLASS.tobytes()

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


def _runs(positions: np.ndarray, breaks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Runs of consecutive sorted positions -> (starts, ends exclusive); a run also ends before
    each position in `breaks` (record starts: an N run never continues into the next record)."""
    if not positions.size:
        return positions, positions
    new_run = np.diff(positions) > 1
    if breaks is not None and breaks.size:
        at = np.searchsorted(breaks, positions[1:])
        new_run |= (at < breaks.size) & (breaks[np.minimum(at, breaks.size - 1)] == positions[1:])
    gaps = np.flatnonzero(new_run)
    starts = np.concatenate((positions[:1], positions[gaps + 1]))
    ends = np.concatenate((positions[gaps] + 1, positions[-1:] + 1))
    return starts, ends


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


def short_runs_as_iupac(n_starts: np.ndarray, n_ends: np.ndarray, iupac_pos: np.ndarray,
                        min_run: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N runs shorter than `min_run` stop being split points and join the IUPAC positions."""
    if min_run <= 1 or not n_starts.size:
        return n_starts, n_ends, iupac_pos
    short = (n_ends - n_starts) < min_run
    if not short.any():
        return n_starts, n_ends, iupac_pos
    lens = n_ends[short] - n_starts[short]
    first = np.repeat(n_starts[short], lens)
    short_pos = first + np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    return n_starts[~short], n_ends[~short], np.union1d(iupac_pos, short_pos).astype(np.int64)


def replacement_bases(codes: np.ndarray, positions: np.ndarray, salt: int) -> np.ndarray:
    """The base each IUPAC code (upper case) becomes under policy `replace`: one of those it
    stands for, chosen by a hash of salt and genome position (`positions`), so it repeats."""
    choice = (_position_hash(positions, salt) % _N_CHOICES[codes]).astype(np.intp)
    replaced = _REPLACE[codes, np.minimum(choice, 2)]
    is_plain_n = codes == ord("N")  # an N of a short run stands for any base
    replaced[is_plain_n] = np.frombuffer(b"ACGT", dtype=np.uint8)[choice[is_plain_n] % 4]
    return replaced


@dataclass
class SparseWindows:
    starts: np.ndarray        # [w] int64 window start (same coordinates as rec_starts)
    records: np.ndarray       # [w] int64 record index
    local_starts: np.ndarray  # [w] int64 start inside the record
    units: np.ndarray         # [w] int64 split unit inside the record (block index, or 0)
    n_dropped_windows: int


def sparse_windows(n: int, rec_starts: np.ndarray, record_lengths: np.ndarray, n_starts: np.ndarray,
                   n_ends: np.ndarray, drop_pos: np.ndarray, params: WindowParams) -> SparseWindows:
    """Window starts of `n` concatenated bases from the sparse facts alone: record starts, the N
    runs that split, and the positions whose windows are dropped (IUPAC under policy drop)."""
    # segment edges: record starts, block starts (split by block), N run starts and ends
    cuts = [rec_starts, n_starts, n_ends, np.array([n], dtype=np.int64)]
    if params.split_by == "block":
        nblocks = -(-record_lengths // params.block_size)
        first_block = np.repeat(np.cumsum(nblocks) - nblocks, nblocks)
        k = np.arange(int(nblocks.sum()), dtype=np.int64) - first_block
        cuts.append(np.repeat(rec_starts, nblocks) + k * params.block_size)
    edges = np.sort(np.concatenate(cuts))
    edges = edges[np.concatenate(([True], edges[1:] != edges[:-1]))]  # unique; sort-based is faster here
    seg_start, seg_end = edges[:-1], edges[1:]
    if n_starts.size:
        # an interval between two edges lies either inside one N run or outside all of them
        run = np.searchsorted(n_starts, seg_start, side="right") - 1
        inside_n = (run >= 0) & (seg_start < n_ends[np.maximum(run, 0)])
        seg_start, seg_end = seg_start[~inside_n], seg_end[~inside_n]
    seg_len = seg_end - seg_start
    w, s = params.window, params.stride
    per_seg = np.where(seg_len >= w, (seg_len - w) // s + 1, 0)
    total = int(per_seg.sum())
    first_idx = np.repeat(np.cumsum(per_seg) - per_seg, per_seg)
    starts = np.repeat(seg_start, per_seg) + (np.arange(total, dtype=np.int64) - first_idx) * s

    dropped = 0
    if drop_pos.size and total:
        hits = np.searchsorted(drop_pos, starts + w) - np.searchsorted(drop_pos, starts)
        keep = hits == 0
        dropped = int((~keep).sum())
        starts = starts[keep]
    records = np.searchsorted(rec_starts, starts, side="right") - 1
    local_starts = starts - rec_starts[records]
    units = local_starts // params.block_size if params.split_by == "block" else np.zeros_like(local_starts)
    return SparseWindows(starts=starts.astype(np.int64), records=records.astype(np.int64),
                         local_starts=local_starts.astype(np.int64), units=units.astype(np.int64),
                         n_dropped_windows=dropped)


def batch_windows(raw: np.ndarray | bytes, record_lengths: np.ndarray, record_offsets_global: np.ndarray,
                  params: WindowParams, salt: int) -> BatchWindows:
    """Clean one batch of concatenated records and enumerate its windows.

    Only a few passes touch every base (class and upper-case lookups, the N mask); everything
    else works on the sparse positions of N runs, IUPAC codes, record and block edges.
    `record_offsets_global` is where each record starts in the whole genome (for the position
    hash of `replace`, so results do not depend on how records were batched).
    """
    raw_bytes = raw if isinstance(raw, bytes) else raw.tobytes()
    n = len(raw_bytes)
    cls_bytes = raw_bytes.translate(CLASS_TABLE)
    clean = np.frombuffer(raw_bytes.translate(UPPER_TABLE), dtype=np.uint8)  # read-only view
    raw = np.frombuffer(raw_bytes, dtype=np.uint8)
    rec_starts = np.concatenate(([0], np.cumsum(record_lengths)[:-1])).astype(np.int64)

    n_pos = iupac_pos = np.zeros(0, dtype=np.int64)
    first_bad = cls_bytes.find(bytes([INVALID]))
    if first_bad >= 0:
        raise BadByte(first_bad, int(raw[first_bad]), "not a nucleotide code")
    cls = np.frombuffer(cls_bytes, dtype=np.uint8)
    if bytes([N_BASE]) in cls_bytes:
        n_pos = np.flatnonzero(cls == N_BASE)
    if bytes([IUPAC]) in cls_bytes:
        iupac_pos = np.flatnonzero(cls == IUPAC)
    n_starts, n_ends = _runs(n_pos, rec_starts[1:])
    n_starts, n_ends, iupac_pos = short_runs_as_iupac(n_starts, n_ends, iupac_pos, params.n_split_min_run)
    n_n = int((n_ends - n_starts).sum())
    n_iupac = int(iupac_pos.size)

    if n_iupac:
        if params.iupac_policy == "error":
            first = int(iupac_pos[0])
            raise BadByte(first, int(raw[first]), "IUPAC ambiguity code (shards.iupac_policy: error)")
        if params.iupac_policy == "replace":
            recs = np.searchsorted(rec_starts, iupac_pos, side="right") - 1
            global_pos = record_offsets_global[recs] + (iupac_pos - rec_starts[recs])
            clean = clean.copy()  # writable only when something is replaced
            clean[iupac_pos] = replacement_bases(clean[iupac_pos], global_pos, salt)
            iupac_pos = np.zeros(0, dtype=np.int64)

    drop_pos = iupac_pos if params.iupac_policy == "drop" else np.zeros(0, dtype=np.int64)
    sw = sparse_windows(n, rec_starts, np.asarray(record_lengths, dtype=np.int64), n_starts, n_ends,
                        drop_pos, params)
    return BatchWindows(clean=clean, starts=sw.starts, records=sw.records, local_starts=sw.local_starts,
                        units=sw.units, n_bases=n, n_n=n_n, n_iupac=n_iupac,
                        n_dropped_windows=sw.n_dropped_windows)


def split_flags(seed: int, accession: str, record_ids: list[str], records: np.ndarray, units: np.ndarray,
                valid_fraction: float) -> np.ndarray:
    """Seeded, order-independent train(0)/valid(1) assignment of split units (record, block)."""
    if not len(records) or valid_fraction <= 0:
        return np.zeros(len(records), dtype=np.uint8)
    record_hash = np.fromiter(map(zlib.crc32, map(str.encode, record_ids)), dtype=np.uint64, count=len(record_ids))
    keys = (record_hash[records] << np.uint64(32)) ^ units.astype(np.uint64)
    u = _position_hash(keys, stable_salt("split", seed, accession)) >> np.uint64(11)
    return (u.astype(np.float64) / float(1 << 53) < valid_fraction).astype(np.uint8)


def unit_is_valid(seed: int, accession: str, record_id: str, unit: int, valid_fraction: float) -> bool:
    """One unit's split (True = valid); the same rule as `split_flags`."""
    return bool(split_flags(seed, accession, [record_id], np.zeros(1, np.int64), np.array([unit]), valid_fraction)[0])
