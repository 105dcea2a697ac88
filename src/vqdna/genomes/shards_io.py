"""The Arrow shard format: the contract between sharding and every later stage.

One shard = one Arrow IPC *file* `results/shards/{split}/{index:05d}.arrow` with columns

    sequence   fixed_size_binary(window)  upper-case ASCII, only A/C/G/T
    accession  string                     genome accession (config/genomes.tsv)
    species    string
    record_id  string                     FASTA/GenBank record id inside the genome file
    start      int64                      0-based offset of the window in that record

`sequence` is fixed-size binary so a whole column maps to a `[rows, window]` uint8 array
without copying (see `read_codes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from ..dna import to_codes
from ..errors import InputError


def shard_schema(window: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("sequence", pa.binary(window)),
            pa.field("accession", pa.string()),
            pa.field("species", pa.string()),
            pa.field("record_id", pa.string()),
            pa.field("start", pa.int64()),
        ],
        metadata={b"vqdna.format": b"shard-v1", b"vqdna.window": str(window).encode()},
    )


def open_shard(path: str | Path) -> pa.Table:
    try:
        with pa.memory_map(str(path), "r") as source:
            return pa.ipc.open_file(source).read_all()
    except FileNotFoundError:
        raise InputError(path, "shard not found") from None
    except pa.ArrowInvalid as exc:
        raise InputError(path, f"not a readable Arrow IPC shard: {exc}") from None


def ascii_matrix(table: pa.Table) -> np.ndarray:
    """The `sequence` column as a `[rows, window]` uint8 array of ASCII bytes."""
    col = table.column("sequence").combine_chunks()
    width = col.type.byte_width
    buf = col.buffers()[1]
    arr = np.frombuffer(buf, dtype=np.uint8, count=len(col) * width, offset=col.offset * width)
    return arr.reshape(len(col), width)


def read_codes(path: str | Path) -> np.ndarray:
    """A whole shard as `[rows, window]` uint8 codes 0..3 (A,C,G,T)."""
    return to_codes(ascii_matrix(open_shard(path)).reshape(-1)).reshape(-1, shard_window(path))


def shard_window(path: str | Path) -> int:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).schema.field("sequence").type.byte_width


def iter_code_batches(paths: Iterable[str | Path], batch_rows: int) -> Iterator[np.ndarray]:
    """Stream `[<=batch_rows, window]` uint8 code batches over shards in the given order."""
    for path in paths:
        codes = read_codes(path)
        for i in range(0, len(codes), batch_rows):
            yield codes[i:i + batch_rows]


def list_shards(shards_dir: str | Path, split: str) -> list[Path]:
    paths = sorted(Path(shards_dir, split).glob("*.arrow"))
    if not paths:
        raise InputError(Path(shards_dir, split), f"no shards for split {split!r}; run the shard stage first")
    return paths
