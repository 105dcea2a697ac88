"""The paper's reported numbers (`data/paper/vqdna_paper_results.csv`) and the join with our runs.

Values stay on the paper's ×100 scale. Two printed forms are not plain numbers and are kept
verbatim: `N/A` (the paper's out-of-memory mark, Table 6) and `86+16` (Table 2: backbone +
tokenizer), which is compared against its sum.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError, InputError

COLUMNS = ("table", "method", "tokenizer", "family", "dataset", "metric", "value")
# Tables whose `dataset` column holds real downstream dataset names (3-5 GUE/EEP, 6 species).
DATASET_TABLES = (3, 4, 5, 6)


@dataclass(frozen=True)
class PaperValue:
    raw: str  # as printed: "74.32", "N/A", "86+16"

    @property
    def number(self) -> float | None:
        """The value as a number (a sum for `a+b`), None for N/A."""
        text = self.raw.strip()
        if text.upper() == "N/A" or not text:
            return None
        try:
            return sum(float(part) for part in text.split("+"))
        except ValueError:
            return None


@dataclass(frozen=True)
class PaperRow:
    table: int
    method: str
    tokenizer: str
    family: str
    dataset: str
    metric: str
    value: PaperValue


class PaperResults:
    """Indexed view of the paper's CSV: look up one value, list a table's datasets."""

    def __init__(self, rows: Iterable[PaperRow], source: str = "paper results"):
        self.rows = list(rows)
        self.source = source
        self._index: dict[tuple[int, str, str, str], PaperValue] = {}
        for r in self.rows:
            self._index[(r.table, r.method, r.dataset, r.metric)] = r.value

    @property
    def methods(self) -> set[str]:
        return {r.method for r in self.rows}

    def value(self, table: int, method: str | None, dataset: str, metric: str) -> PaperValue | None:
        if method is None:
            return None
        return self._index.get((table, method, dataset, metric))

    def datasets(self, table: int) -> list[str]:
        """Dataset names of one table in the paper's order."""
        seen: dict[str, None] = {}
        for r in self.rows:
            if r.table == table:
                seen.setdefault(r.dataset, None)
        return list(seen)

    def rows_of(self, table: int) -> list[PaperRow]:
        return [r for r in self.rows if r.table == table]

    def dataset_info(self) -> dict[str, tuple[int, str, str]]:
        """dataset -> (table, family, metric) for the downstream datasets of Tables 3-6."""
        info: dict[str, tuple[int, str, str]] = {}
        for r in self.rows:
            if r.table in DATASET_TABLES:
                info.setdefault(r.dataset, (r.table, r.family, r.metric))
        return info

    def check_methods(self, methods: Iterable[str], *, key: str) -> None:
        unknown = sorted(set(m for m in methods if m is not None) - self.methods)
        if unknown:
            raise ConfigError(f"{key}: method(s) {unknown} not in {self.source}; known: {sorted(self.methods)}")


def load_paper_results(path: str | Path) -> PaperResults:
    path = Path(path)
    try:
        fh = open(path, newline="")
    except FileNotFoundError:
        raise InputError(path, "paper results file not found (report.paper_results)") from None
    rows = []
    with fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise InputError(path, f"expected columns {','.join(COLUMNS)}, got {reader.fieldnames}", line=1)
        for lineno, rec in enumerate(reader, start=2):
            try:
                table = int(rec["table"])
            except (TypeError, ValueError):
                raise InputError(path, f"table {rec['table']!r} is not an integer", line=lineno) from None
            value = PaperValue(rec["value"] or "")
            if value.number is None and value.raw.strip().upper() != "N/A":
                raise InputError(path, f"value {rec['value']!r} is neither a number, 'a+b' nor N/A", line=lineno)
            rows.append(PaperRow(table, rec["method"], rec["tokenizer"], rec["family"], rec["dataset"],
                                 rec["metric"], value))
    if not rows:
        raise InputError(path, "no rows")
    return PaperResults(rows, source=str(path))


def check_known_datasets(names: Iterable[str], paper: PaperResults, extra: Iterable[str] = (),
                         *, where: dict[str, str] | None = None) -> None:
    """Fail on a dataset of ours that the paper does not report and the config does not list
    in `report.extra_datasets`: a misspelt or renamed dataset must never drop out of a table silently."""
    known = set(paper.dataset_info()) | set(extra)
    unknown = sorted(set(names) - known)
    if unknown:
        first = unknown[0]
        path = (where or {}).get(first, "results/finetune")
        raise InputError(path, f"dataset(s) {unknown} are not in the paper's Tables 3-6 ({paper.source}); "
                               "fix the name or list it under report.extra_datasets")


def scaled(value: float | None, scale: float) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value * scale
