"""EEP loader: gRNA editing-efficiency regression (Zhang et al. 2023), tab-separated files.

`{dir}/train.tsv`, `{dir}/test.tsv` and optionally `{dir}/dev.tsv` (or flattened `*_train.tsv`),
header with a sequence column and an efficiency column (names from `datasets.eep`). Sequences are
standardised 63-nt gRNA contexts: upper-cased, U read as T, length checked. The source has no
dev split: a seeded fraction of train becomes dev (`datasets.eep.dev_fraction`, `split_seed`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import InputError
from .gue import find_split_file
from .registry import DatasetSpec
from .splits import Split
from .validate import RecordChecker


def read_tsv_split(path: str | Path, spec: DatasetSpec, eep_cfg: dict, *, non_acgt: str, seed: int) -> tuple[Split, dict]:
    path = Path(path)
    seq_col, lab_col = eep_cfg["sequence_column"], eep_cfg["label_column"]
    checker = RecordChecker(path, spec, non_acgt=non_acgt, seed=seed, exact_length=eep_cfg["exact_length"])
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        try:
            header = [h.strip().lstrip("\ufeff") for h in next(reader)]
        except StopIteration:
            raise InputError(path, f"file is empty (expected a header with {seq_col!r} and {lab_col!r})", line=1) from None
        missing = [c for c in (seq_col, lab_col) if c not in header]
        if missing:
            raise InputError(path, f"missing column(s) {missing}; header is {header} "
                             f"(tab-separated; names from datasets.eep.sequence_column/label_column)", line=1)
        i_seq, i_lab = header.index(seq_col), header.index(lab_col)
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise InputError(path, f"{len(row)} tab-separated fields, header has {len(header)}", line=line)
            checker.add(row[i_seq], row[i_lab], line)
    return checker.finish(), {"dropped_non_acgt": checker.dropped, "replaced_non_acgt": checker.replaced}


def seeded_dev_split(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Move a seeded random `fraction` of train into dev (same seed -> same rows)."""
    n = len(train)
    n_dev = max(1, int(round(n * fraction)))
    if n_dev >= n:
        raise InputError("<train>", f"train has {n} rows, too few to hold out a dev fraction of {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    dev_idx, train_idx = np.sort(order[:n_dev]), np.sort(order[n_dev:])
    return train.subset(train_idx), train.subset(dev_idx)


def load_eep(directory: str | Path, spec: DatasetSpec, eep_cfg: dict, *, non_acgt: str, seed: int) -> tuple[dict[str, Split], dict]:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "EEP dataset directory not found")
    stats: dict = {}
    out: dict[str, Split] = {}
    for k, split in enumerate(("train", "test")):
        path = find_split_file(directory, split, ".tsv")
        if path is None:
            raise InputError(directory, f"no {split} split: expected {split}.tsv (or *_{split}.tsv)")
        out[split], stats[split] = read_tsv_split(path, spec, eep_cfg, non_acgt=non_acgt, seed=seed + k)
    dev_path = find_split_file(directory, "dev", ".tsv")
    if dev_path is not None:
        out["dev"], stats["dev"] = read_tsv_split(dev_path, spec, eep_cfg, non_acgt=non_acgt, seed=seed + 2)
        stats["dev_source"] = "file"
    else:
        out["train"], out["dev"] = seeded_dev_split(out["train"], eep_cfg["dev_fraction"], eep_cfg["split_seed"])
        stats["dev_source"] = f"seeded split of train (fraction {eep_cfg['dev_fraction']}, seed {eep_cfg['split_seed']})"
    return {s: out[s] for s in ("train", "dev", "test")}, stats
