"""The lock file of the genome table's `taxon:` rows: which NCBI assembly each name resolved to.

Where: `genomes.resolve.lock`, by default next to the table with `.lock.tsv` for its suffix
(`config/genomes.tsv` -> `config/genomes.lock.tsv`). It lives with the table, not under the
git-ignored results/, so that it is committed: a later run, on another machine or a year later,
reads the pin and fetches the same assembly without asking NCBI which one is best today.

A pinned row is used as it stands, whatever NCBI holds now. To resolve a taxon again, delete its
row here (and its `resources/genomes/{id}.*` download).

Who writes it: one process at a time, never the per-genome download jobs that Snakemake runs in
parallel (their read-modify-write cycles would overwrite each other's pins). A download job
records the pin it used in its sidecar (`resources/genomes/{id}.json`, key `pin`); the manifest
step (one job, after every download) and `vqdna download --resolve-only` merge pins into this
file, written to a temporary name and renamed.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..atomic import atomic_path
from ..errors import InputError

PIN_COLUMNS = ("id", "taxon", "accession", "assembly_name", "organism", "tax_id", "source_database",
               "refseq_category", "assembly_level", "contig_n50", "tier", "query", "resolved_at")
_ASSEMBLY = re.compile(r"^GC[AF]_\d{9}\.\d+$")
HEADER = """\
# Pinned NCBI assemblies of the genome table's `taxon:` rows (vqdna.genomes.pins). Commit this file:
# a pinned row is used as it stands and NCBI is not asked again. Delete a row (and its
# resources/genomes/<id>.* files) to resolve that taxon again. Written by `vqdna download`.
"""


@dataclass(frozen=True)
class Pin:
    id: str            # the table row's id (taxon_<slug>), the file stem under resources/genomes/
    taxon: str         # the name that was queried
    accession: str     # the chosen assembly (GCF_/GCA_)
    assembly_name: str = ""
    organism: str = ""  # NCBI's organism name of the assembly
    tax_id: str = ""
    source_database: str = ""
    refseq_category: str = ""
    assembly_level: str = ""
    contig_n50: str = ""
    tier: str = ""      # the genomes.resolve.tiers entry whose query found it
    query: str = ""     # the request (no API key: that travels in a header)
    resolved_at: str = ""  # UTC time of the query
    line: int = field(default=0, compare=False)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("line")
        return out

    @classmethod
    def from_dict(cls, data: dict, *, line: int = 0) -> "Pin":
        names = {f.name for f in fields(cls)} - {"line"}
        return cls(**{k: str(v) for k, v in data.items() if k in names}, line=line)


def lock_path(gcfg: dict) -> Path:
    explicit = gcfg.get("resolve", {}).get("lock")
    if explicit:
        return Path(explicit)
    table = Path(gcfg["table"])
    return table.with_name(f"{table.stem}.lock.tsv")


def read_pins(path: str | Path) -> dict[str, Pin]:
    """Pins by row id; a missing lock file is an empty one."""
    path = Path(path)
    if not path.exists():
        return {}
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return {}
    header_line, header = lines[0]
    columns = header.split("\t")
    missing = [c for c in ("id", "taxon", "accession") if c not in columns]
    if missing:
        raise InputError(path, f"lock file lacks column(s) {missing}; have {columns}", line=header_line)
    pins: dict[str, Pin] = {}
    for lineno, line in lines[1:]:
        values = line.split("\t")
        if len(values) != len(columns):
            raise InputError(path, f"{len(values)} fields, header has {len(columns)}", line=lineno)
        pin = Pin.from_dict(dict(zip(columns, values)), line=lineno)
        if not _ASSEMBLY.match(pin.accession):
            raise InputError(path, f"accession {pin.accession!r} is not an NCBI assembly accession (GCF_/GCA_)",
                             line=lineno, record=pin.id)
        if pin.id in pins:
            raise InputError(path, f"duplicate id (first on line {pins[pin.id].line})", line=lineno, record=pin.id)
        pins[pin.id] = pin
    return pins


def write_pins(path: str | Path, pins: dict[str, Pin]) -> None:
    buf = io.StringIO()
    buf.write(HEADER)
    writer = csv.DictWriter(buf, fieldnames=PIN_COLUMNS, delimiter="\t", lineterminator="\n",
                            quoting=csv.QUOTE_NONE, escapechar="\\")
    writer.writeheader()
    for key in sorted(pins):  # sorted: a re-run or another machine writes the same bytes
        writer.writerow({k: _clean(v) for k, v in pins[key].as_dict().items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _clean(value: str) -> str:
    return " ".join(str(value).split())  # no tab or newline can break the table


def pin_for_row(pins: dict[str, Pin], row, lock: str | Path) -> Pin | None:
    """The pin of a table row, if any; a pin made for another spelling of the name is an error."""
    pin = pins.get(row.accession)
    if pin is not None and pin.taxon.casefold() != row.taxon.casefold():
        raise InputError(lock, f"pinned for taxon {pin.taxon!r}, but the genome table's row "
                         f"(line {row.line}) now says {row.taxon!r}; delete this lock row to resolve it again",
                         line=pin.line or None, record=pin.id)
    return pin


def merge_pins(path: str | Path, new: list[Pin]) -> int:
    """Add `new` pins to the lock file; return how many were added. A pin that contradicts the
    lock (same id, another assembly) is an error: the download and the lock disagree."""
    pins = read_pins(path)
    added = 0
    for pin in new:
        old = pins.get(pin.id)
        if old is None:
            pins[pin.id] = pin
            added += 1
        elif old.accession != pin.accession:
            raise InputError(path, f"pins {old.accession}, but resources/genomes/{pin.id}.json was downloaded as "
                             f"{pin.accession}; delete that download to fetch {old.accession}, or this lock row "
                             f"to keep {pin.accession}", line=old.line or None, record=pin.id)
    if added:
        write_pins(path, pins)
    return added
