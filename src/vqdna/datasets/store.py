"""Prepared dataset on disk: `{dir}/{train,dev,test}.parquet` (columns sequence, label) and
`{dir}/meta.json`. Written by `vqdna prepare-dataset`, read by `vqdna finetune`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_dir, write_json
from ..errors import InputError
from .splits import SPLITS, Split


def write_prepared(out_dir: str | Path, splits: dict[str, Split], meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_dir(out_dir) as tmp:
        for name in SPLITS:
            s = splits[name]
            table = pa.table({"sequence": pa.array(s.sequences, pa.string()), "label": pa.array(s.labels)})
            pq.write_table(table, tmp / f"{name}.parquet")
        write_json(tmp / "meta.json", meta)


def read_meta(prepared_dir: str | Path) -> dict:
    path = Path(prepared_dir) / "meta.json"
    if not path.exists():
        raise InputError(path, "prepared dataset not found; run `vqdna prepare-dataset` first")
    return json.loads(path.read_text())


def read_split(prepared_dir: str | Path, split: str) -> Split:
    import pyarrow.parquet as pq

    path = Path(prepared_dir) / f"{split}.parquet"
    if not path.exists():
        raise InputError(path, "prepared split not found; run `vqdna prepare-dataset` first")
    table = pq.read_table(path)
    return Split(table.column("sequence").to_pylist(), np.asarray(table.column("label").to_numpy()))
