"""Checks shared by every loader: non-empty ACGT sequences, labels in range.

A bad record raises `InputError(file, msg, line=...)` naming the file and the line (1-based,
header = line 1). Symbols other than A/C/G/T follow `datasets.non_acgt`:
`error` (refuse the file), `drop` (skip the record, counted in meta.json) or `replace_random`
(seeded random base per symbol, keeps the benchmark's sample count).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..dna import INVALID, to_codes
from ..errors import ConfigError, InputError
from .registry import DatasetSpec
from .splits import Split

NON_ACGT_POLICIES = ("error", "drop", "replace_random")
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


class RecordChecker:
    """Validate records of one file one by one, then hand back a `Split`."""

    def __init__(self, path: str | Path, spec: DatasetSpec, *, non_acgt: str, seed: int,
                 exact_length: bool = False):
        if non_acgt not in NON_ACGT_POLICIES:
            raise ConfigError(f"datasets.non_acgt must be one of {NON_ACGT_POLICIES}, got {non_acgt!r}")
        self.path = Path(path)
        self.spec = spec
        self.non_acgt = non_acgt
        self.exact_length = exact_length
        self.rng = np.random.default_rng(seed)
        self.sequences: list[str] = []
        self.labels: list = []
        self.dropped = 0
        self.replaced = 0

    def add(self, sequence: str, label_text: str, line: int) -> None:
        seq = sequence.strip().upper().replace("U", "T")  # EEP gRNAs may be written as RNA
        if not seq:
            raise InputError(self.path, "empty sequence", line=line)
        if self.exact_length and len(seq) != self.spec.length:
            raise InputError(self.path, f"sequence has {len(seq)} nt, the dataset's sequences have {self.spec.length}", line=line)
        label = self._label(label_text, line)
        raw = seq.encode("ascii", errors="replace")
        bad = to_codes(raw) == INVALID
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            if self.non_acgt == "error":
                raise InputError(self.path, f"non-ACGT symbol {seq[first]!r} at position {first + 1} "
                                 f"(datasets.non_acgt: error; use drop or replace_random)", line=line)
            if self.non_acgt == "drop":
                self.dropped += 1
                return
            arr = np.frombuffer(raw, dtype=np.uint8).copy()
            arr[bad] = self.rng.choice(_BASES, size=int(bad.sum()))
            seq = arr.tobytes().decode("ascii")
            self.replaced += 1
        self.sequences.append(seq)
        self.labels.append(label)

    def _label(self, text: str, line: int):
        text = (text or "").strip()
        if not text:
            raise InputError(self.path, "missing label", line=line)
        if self.spec.is_regression:
            try:
                value = float(text)
            except ValueError:
                raise InputError(self.path, f"label {text!r} is not a number", line=line) from None
            if not math.isfinite(value):
                raise InputError(self.path, f"label {text!r} is not finite", line=line)
            return value
        try:
            value = int(text)
        except ValueError:
            raise InputError(self.path, f"label {text!r} is not an integer class id", line=line) from None
        if not 0 <= value < self.spec.num_labels:
            raise InputError(self.path, f"label {value} out of range 0..{self.spec.num_labels - 1} "
                             f"({self.spec.name} has {self.spec.num_labels} classes)", line=line)
        return value

    def finish(self) -> Split:
        if not self.sequences:
            raise InputError(self.path, "no usable records (file empty after the header?)")
        dtype = np.float64 if self.spec.is_regression else np.int64
        return Split(self.sequences, np.asarray(self.labels, dtype=dtype))
