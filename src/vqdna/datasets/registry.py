"""The dataset registry: `config/datasets.tsv` (paper sources) or `config/datasets.demo.tsv`
(shipped demo stand-ins), one row per downstream dataset, names exactly the paper's.

Columns (tab-separated, `#` starts a comment line):

    name           the paper's dataset name (joined with vqdna_paper_results.csv by name)
    family         the paper's task family: EMP, TFP-M, TFP-H, PD, CPD, SSP, CVC, EEP, SC
    task           classification | regression
    metric         mcc | f1_macro | spearman | accuracy (computed by vqdna.finetune.metrics)
    num_labels     classes (1 for regression)
    length         nucleotides per sequence in the source (inference runs at this length);
                   `config` for the species row, whose lengths come from datasets.species.lengths
    format         gue_csv | eep_tsv | species
    source         URL prefix, local directory, or `config` (species: genomes from config)
    sha256         `file=digest;...` per fetched file, or a tree digest of a local directory
                   (vqdna.datasets.fetch.tree_digest); empty = not pinned (recorded at fetch)
    paper_table    table of the paper that reports it
    demo_stand_in  true when the rows are demo stand-ins built from other real DNA, not the dataset
    description    free text (what the rows are; for stand-ins, which real label they carry)

The species row expands into one dataset per configured length: `species_1k`, `species_32k`, ...
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError, InputError

COLUMNS = ("name", "family", "task", "metric", "num_labels", "length", "format", "source",
           "sha256", "paper_table", "demo_stand_in", "description")
TASKS = ("classification", "regression")
METRICS = ("mcc", "f1_macro", "spearman", "accuracy")
FORMATS = ("gue_csv", "eep_tsv", "species")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    family: str
    task: str
    metric: str
    num_labels: int
    length: int
    format: str
    source: str
    sha256: str
    paper_table: str
    demo_stand_in: bool
    description: str
    base: str = ""  # registry row this dataset comes from (differs for species_<len>)

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"


def species_name(base: str, length: int) -> str:
    """`species` + 1000 -> `species_1k`, 32000 -> `species_32k` (the paper's Table 6 columns)."""
    if length % 1000 == 0:
        return f"{base}_{length // 1000}k"
    return f"{base}_{length}"


def _bool(text: str, path: Path, line: int) -> bool:
    t = text.strip().lower()
    if t in ("true", "yes", "1"):
        return True
    if t in ("false", "no", "0"):
        return False
    raise InputError(path, f"demo_stand_in must be true/false, got {text!r}", line=line)


def read_table(path: str | Path) -> list[DatasetSpec]:
    """Parse and check one registry file; every problem names the file and line."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "dataset registry not found")
    rows: list[DatasetSpec] = []
    with open(path, newline="") as fh:
        lines = [(i + 1, ln) for i, ln in enumerate(fh) if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise InputError(path, "dataset registry is empty")
    header_line, header = lines[0]
    cols = next(csv.reader([header], delimiter="\t"))
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        raise InputError(path, f"missing columns {missing}", line=header_line)
    seen: set[str] = set()
    for lineno, text in lines[1:]:
        values = next(csv.reader([text.rstrip("\n")], delimiter="\t"))
        if len(values) != len(cols):
            raise InputError(path, f"{len(values)} fields, header has {len(cols)}", line=lineno)
        rec = dict(zip(cols, values))
        name = rec["name"]
        if not _NAME.match(name):
            raise InputError(path, f"bad dataset name {name!r}", line=lineno)
        if name in seen:
            raise InputError(path, f"duplicate dataset name {name!r}", line=lineno)
        seen.add(name)
        for col, allowed in (("task", TASKS), ("metric", METRICS), ("format", FORMATS)):
            if rec[col] not in allowed:
                raise InputError(path, f"{col} must be one of {allowed}, got {rec[col]!r}", line=lineno, record=name)
        try:
            num_labels = int(rec["num_labels"])
            length = 0 if rec["length"] == "config" else int(rec["length"])
        except ValueError:
            raise InputError(path, "num_labels and length must be integers", line=lineno, record=name) from None
        if rec["task"] == "regression" and num_labels != 1:
            raise InputError(path, "a regression dataset has num_labels 1", line=lineno, record=name)
        if rec["task"] == "classification" and num_labels < 2:
            raise InputError(path, "a classification dataset needs num_labels >= 2", line=lineno, record=name)
        rows.append(DatasetSpec(
            name=name, family=rec["family"], task=rec["task"], metric=rec["metric"],
            num_labels=num_labels, length=length, format=rec["format"], source=rec["source"],
            sha256=rec["sha256"], paper_table=rec["paper_table"],
            demo_stand_in=_bool(rec["demo_stand_in"], path, lineno), description=rec["description"],
            base=name,
        ))
    return rows


def load_registry(cfg: dict) -> dict[str, DatasetSpec]:
    """All datasets of this config, species expanded per length, keyed by name (table order)."""
    dcfg = cfg["datasets"]
    out: dict[str, DatasetSpec] = {}
    for spec in read_table(dcfg["table"]):
        if spec.format == "species":
            lengths = dcfg["species"]["lengths"]
            if not lengths:
                raise ConfigError("datasets.species.lengths is empty")
            for length in lengths:
                name = species_name(spec.name, int(length))
                out[name] = replace(spec, name=name, length=int(length))
        else:
            out[spec.name] = spec
    include = dcfg.get("include") or []
    if include:
        unknown = sorted(set(include) - set(out))
        if unknown:
            raise ConfigError(f"datasets.include names unknown datasets {unknown}; known: {sorted(out)}")
        out = {k: v for k, v in out.items() if k in include}
    return out


def dataset_names(cfg: dict) -> list[str]:
    return list(load_registry(cfg))


def get_spec(cfg: dict, name: str) -> DatasetSpec:
    reg = load_registry(cfg)
    try:
        return reg[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; registry {cfg['datasets']['table']} has {sorted(reg)}") from None
