"""Shard step 3, one job per shard: gather its windows from the prepared genomes into Arrow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..atomic import atomic_path
from .plan import shard_rows
from .prepare import SPLITS, load_prepared
from .shards_io import shard_schema


def shard_path(shards_dir: str | Path, split: str, index: int) -> Path:
    return Path(shards_dir) / split / f"{index:05d}.arrow"


def write_shard(plan: dict, split: str, index: int, out: str | Path, order: np.ndarray | None = None,
                cache: dict | None = None, hasher=None) -> int:
    """Write shard `split/index` of `plan` to `out`; return its row count. `hasher` (a hashlib
    object), if given, sees every byte written: the manifest's sha256 without reading the file
    back. `cache` may be shared by threads writing other shards once `fill_cache` filled it."""
    window = plan["window"]
    rows = shard_rows(plan, split, index, order)
    split_code = SPLITS.index(split)
    counts = np.array([g["windows"][split] for g in plan["genomes"]], dtype=np.int64)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    genome_of = np.searchsorted(bounds, rows, side="right") - 1
    genomes = np.flatnonzero(np.bincount(genome_of, minlength=len(plan["genomes"])))
    # one genome: gather straight into the shard's buffers (no copy through a mask)
    whole = slice(None) if len(genomes) == 1 else None
    seqs = None if whole is not None else np.empty((len(rows), window), dtype=np.uint8)
    start = np.empty(len(rows), dtype=np.int64)
    # string columns as positions into small per-shard tables, turned into Arrow with one take()
    record_pos = np.empty(len(rows), dtype=np.int64)
    record_tables, first_record = [], 0
    cache = {} if cache is None else cache
    for g in genomes:
        prepared, seq, record_ids = _cached(plan, g, cache)
        in_split = _cached_split(g, split_code, prepared, cache)
        mask = whole if whole is not None else genome_of == g
        local = in_split[rows[mask] - bounds[g]]
        views = np.lib.stride_tricks.sliding_window_view(seq, window)
        if whole is not None:
            seqs = views[prepared.offsets[local]]
        else:
            seqs[mask] = views[prepared.offsets[local]]
        start[mask] = prepared.starts[local]
        record_pos[mask] = first_record + prepared.records[local]
        record_tables.append(record_ids)
        first_record += len(record_ids)
    if seqs is None:  # no rows
        seqs = np.empty((0, window), dtype=np.uint8)
    if whole is not None:  # one genome: constant columns, no gather
        info = plan["genomes"][genomes[0]]
        accession_col = _repeat(info["accession"], len(rows))
        species_col = _repeat(info["species"], len(rows))
    else:
        genome_idx = pa.array(genome_of)
        accession_col = pa.array([g["accession"] for g in plan["genomes"]], pa.string()).take(genome_idx)
        species_col = pa.array([g["species"] for g in plan["genomes"]], pa.string()).take(genome_idx)
    table_of_ids = record_tables[0] if len(record_tables) == 1 else (
        pa.concat_arrays(record_tables) if record_tables else pa.array([], pa.string()))
    record_id = table_of_ids.take(pa.array(record_pos))
    schema = shard_schema(window)
    sequence = pa.FixedSizeBinaryArray.from_buffers(pa.binary(window), len(rows), [None, pa.py_buffer(seqs)])
    table = pa.Table.from_arrays(
        [sequence, accession_col, species_col, record_id, pa.array(start, pa.int64())],
        schema=schema)
    with atomic_path(out) as tmp:
        if hasher is None:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                writer.write_table(table)
        else:
            with open(tmp, "wb") as fh, pa.PythonFile(_HashingFile(fh, hasher), mode="w") as sink, \
                    pa.ipc.new_file(sink, schema) as writer:
                writer.write_table(table)
    return len(rows)


def fill_cache(plan: dict, cache: dict) -> None:
    """Load every genome of `plan` into `cache` (both splits), so that threads only read it."""
    for g in range(len(plan["genomes"])):
        prepared = _cached(plan, g, cache)[0]
        for split_code in range(len(SPLITS)):
            _cached_split(g, split_code, prepared, cache)


def _cached(plan: dict, g: int, cache: dict):
    if g not in cache:
        info = plan["genomes"][g]
        prepared = load_prepared(info["index"])
        size = Path(info["seq"]).stat().st_size
        seq = np.memmap(info["seq"], dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        cache[g] = (prepared, seq, pa.array(prepared.record_ids, pa.string()))
    return cache[g]


def _cached_split(g: int, split_code: int, prepared, cache: dict) -> np.ndarray:
    if (g, split_code) not in cache:  # write_all keeps one cache for both splits
        cache[g, split_code] = np.flatnonzero(prepared.split == split_code)
    return cache[g, split_code]


class _HashingFile:
    """A binary file for `pa.PythonFile` that also feeds what is written into `hasher` (hashlib
    and file writes release the GIL on large buffers, so other shards' threads keep running)."""

    def __init__(self, fh, hasher):
        self._fh, self._hasher = fh, hasher

    def write(self, data) -> int:
        self._hasher.update(data)
        return self._fh.write(data)

    def tell(self) -> int:
        return self._fh.tell()

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def writable(self) -> bool:
        return True


def _repeat(text: str, n: int) -> pa.Array:
    """`n` copies of one string as an Arrow string array, built from two buffers."""
    data = text.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))
