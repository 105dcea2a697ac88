"""GUE CSV loader (DNABERT-2 benchmark): header `sequence,label`, one file per split.

A dataset directory holds `train.csv`, `dev.csv`, `test.csv`. That is the file naming of both
DNABERT-2's own download (`GUE/EMP/H3/`, `GUE/tf/0/`, ...) and the leannmlindsey/GUE Hugging Face
mirror, which only flattens the folder names (`GUE/emp_H3/`, `GUE/human_tf_0/`; the mapping is in
config/datasets.tsv and docs/datasets-sources.md). Files named per split with a prefix
(`emp_H3_train.csv`, `x-dev.csv`, `x.test.csv`), as hand-made copies sometimes are, are accepted too.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import InputError
from .registry import DatasetSpec
from .splits import SPLITS, Split
from .validate import RecordChecker

REQUIRED_COLUMNS = ("sequence", "label")


def find_split_file(directory: str | Path, split: str, suffix: str = ".csv") -> Path | None:
    directory = Path(directory)
    plain = directory / f"{split}{suffix}"
    if plain.exists():
        return plain
    flat = sorted(p for sep in ("_", "-", ".") for p in directory.glob(f"*{sep}{split}{suffix}"))
    if len(flat) > 1:
        raise InputError(directory, f"several files could be the {split} split: {[p.name for p in flat]}")
    return flat[0] if flat else None


def read_csv_split(path: str | Path, spec: DatasetSpec, *, non_acgt: str, seed: int) -> tuple[Split, dict]:
    path = Path(path)
    checker = RecordChecker(path, spec, non_acgt=non_acgt, seed=seed)
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(path, "file is empty (expected header `sequence,label`)", line=1) from None
        header = [h.strip().lstrip("\ufeff") for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InputError(path, f"missing column(s) {missing}; header is {header}, expected `sequence,label`", line=1)
        i_seq, i_lab = header.index("sequence"), header.index("label")
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # trailing blank line
            if len(row) != len(header):
                raise InputError(path, f"{len(row)} fields, header has {len(header)}", line=line)
            checker.add(row[i_seq], row[i_lab], line)
    return checker.finish(), {"dropped_non_acgt": checker.dropped, "replaced_non_acgt": checker.replaced}


def load_gue(directory: str | Path, spec: DatasetSpec, *, non_acgt: str, seed: int) -> tuple[dict[str, Split], dict]:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "GUE dataset directory not found")
    splits: dict[str, Split] = {}
    stats: dict = {}
    for k, split in enumerate(SPLITS):
        path = find_split_file(directory, split)
        if path is None:
            raise InputError(directory, f"no {split} split: expected {split}.csv (or *_{split}.csv)")
        splits[split], stats[split] = read_csv_split(path, spec, non_acgt=non_acgt, seed=seed + k)
    return splits, stats
