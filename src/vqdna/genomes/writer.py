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
                cache: dict | None = None) -> int:
    """Write shard `split/index` of `plan` to `out`; return its row count."""
    window = plan["window"]
    rows = shard_rows(plan, split, index, order)
    split_code = SPLITS.index(split)
    counts = np.array([g["windows"][split] for g in plan["genomes"]], dtype=np.int64)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    genome_of = np.searchsorted(bounds, rows, side="right") - 1
    seqs = np.empty((len(rows), window), dtype=np.uint8)
    accession = np.empty(len(rows), dtype=object)
    species = np.empty(len(rows), dtype=object)
    record_id = np.empty(len(rows), dtype=object)
    start = np.empty(len(rows), dtype=np.int64)
    cache = {} if cache is None else cache
    for g in np.unique(genome_of):
        info = plan["genomes"][g]
        if g not in cache:
            prepared = load_prepared(info["index"])
            in_split = np.flatnonzero(prepared.split == split_code)
            seq = np.memmap(info["seq"], dtype=np.uint8, mode="r") if Path(info["seq"]).stat().st_size else np.zeros(0, np.uint8)
            cache[g] = (prepared, in_split, seq)
        prepared, in_split, seq = cache[g]
        mask = genome_of == g
        local = in_split[rows[mask] - bounds[g]]
        views = np.lib.stride_tricks.sliding_window_view(seq, window)
        seqs[mask] = views[prepared.offsets[local]]
        accession[mask] = info["accession"]
        species[mask] = info["species"]
        ids = np.asarray(prepared.record_ids, dtype=object)
        record_id[mask] = ids[prepared.records[local]]
        start[mask] = prepared.starts[local]
    schema = shard_schema(window)
    sequence = pa.FixedSizeBinaryArray.from_buffers(pa.binary(window), len(rows), [None, pa.py_buffer(seqs)])
    table = pa.Table.from_arrays(
        [sequence, pa.array(accession, pa.string()), pa.array(species, pa.string()),
         pa.array(record_id, pa.string()), pa.array(start, pa.int64())], schema=schema)
    with atomic_path(out) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(table)
    return len(rows)
