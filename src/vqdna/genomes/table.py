"""The genome table (`config/genomes.tsv`, `config/genomes.demo.tsv`): which genomes to fetch.

Tab-separated, one genome per row, `#` starts a comment line. Columns:

    accession  required  NCBI accession (GCF_/GCA_ assembly or nuccore, e.g. NC_001416.1); also the
                          file stem under resources/genomes/, so only [A-Za-z0-9_.-].
                          Or `taxon:<scientific name>` (e.g. `taxon:Macaca nigra`): the genome is
                          named by its species, resolved to one NCBI assembly at download time and
                          pinned in the lock file (vqdna.genomes.resolve, vqdna.genomes.pins). Such
                          a row's id and file stem is `taxon_<name, lower case, runs of other
                          characters as '_'>` (taxon_macaca_nigra): known before any query, so
                          the workflow's targets do not depend on NCBI's answer.
    species    required  display name (stored in every shard row)
    category   required  the paper's appendix C category (Fungi, Mammalian, Bacteria, ...)
    file       optional  file name inside `genomes.local_dir` (source: local); default: the single
                          file whose name starts with the accession
    sha256     optional  expected sha256 of the file as fetched (NCBI payload or local file)
    include    optional  yes/no (default yes); `no` keeps a documented row out of the run
    role       optional  what the genome is used for, one or more of ROLES joined by `,`
                         (default `pretrain`): `pretrain` rows are cut into the pre-training
                         shards, `species_task` rows only feed the species classification task
                         (datasets.species.genomes refers to them by accession). Every included
                         row is downloaded whatever its role.
    source     optional  where the accession was verified (URL or file); free text
    note       optional  free text
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

REQUIRED = ("accession", "species", "category")
OPTIONAL = ("file", "sha256", "include", "role", "source", "note")
PRETRAIN = "pretrain"
SPECIES_TASK = "species_task"
ROLES = (PRETRAIN, SPECIES_TASK)
DEFAULT_ROLES = frozenset({PRETRAIN})  # tables written before the role column meant "shard everything"
_ACCESSION = re.compile(r"^[A-Za-z0-9_.-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
TAXON_PREFIX = "taxon:"
TAXON_ID_PREFIX = "taxon_"
# what NCBI scientific names use: letters, digits, blanks, '.', '-', quote, brackets ("[Clostridium]")
_TAXON = re.compile(r"^[A-Za-z\[][A-Za-z0-9 .'()\[\]-]*$")


@dataclass(frozen=True)
class GenomeRow:
    # the row's id: its NCBI accession, or `taxon_<slug>` for a `taxon:` row; the file stem of
    # resources/genomes/{accession}.fna.gz and the name every later stage uses for the genome
    accession: str
    species: str
    category: str
    file: str = ""
    sha256: str = ""
    include: bool = True
    note: str = ""
    roles: frozenset[str] = DEFAULT_ROLES
    source: str = ""
    line: int = field(default=0, compare=False)  # 1-based line in the table, for error messages
    taxon: str = ""  # scientific name of a `taxon:` row (resolved at download time); "" otherwise

    @property
    def by_taxon(self) -> bool:
        return bool(self.taxon)

    def has_role(self, role: str) -> bool:
        return role in self.roles


def read_genome_table(path: str | Path, *, included_only: bool = True) -> list[GenomeRow]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(path, "genome table not found") from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(path, "genome table is empty (needs a header and at least one row)")
    header_line, header = lines[0]
    columns = [c.strip() for c in header.split("\t")]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; have {columns}", line=header_line)
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise InputError(path, f"unknown column(s) {unknown}; allowed: {list(REQUIRED + OPTIONAL)}", line=header_line)
    rows: list[GenomeRow] = []
    seen: dict[str, int] = {}
    for lineno, line in lines[1:]:
        values = next(csv.reader([line], delimiter="\t"))
        if len(values) > len(columns):
            raise InputError(path, f"{len(values)} fields, header has {len(columns)}", line=lineno)
        record = dict(zip(columns, [v.strip() for v in values] + [""] * (len(columns) - len(values))))
        acc = record["accession"]
        for col in REQUIRED:
            if not record[col]:
                raise InputError(path, f"empty {col!r}", line=lineno, record=acc or None)
        taxon = ""
        if acc.lower().startswith(TAXON_PREFIX):
            taxon = _parse_taxon(path, acc, lineno)
            acc = taxon_id(taxon)
        elif not _ACCESSION.match(acc):
            raise InputError(path, "accession may only hold letters, digits, '_', '.', '-' (or be "
                             f"'{TAXON_PREFIX}<species name>')", line=lineno, record=acc)
        if acc in seen:
            what = f"duplicate genome id (taxon {taxon!r} gives {acc!r}," if taxon else "duplicate accession ("
            raise InputError(path, f"{what} first on line {seen[acc]})", line=lineno, record=acc)
        seen[acc] = lineno
        sha = record.get("sha256", "").lower()
        if sha and not _SHA256.match(sha):
            raise InputError(path, "sha256 must be 64 hex digits", line=lineno, record=acc)
        include_raw = record.get("include", "").lower() or "yes"
        if include_raw not in ("yes", "no", "true", "false", "1", "0"):
            raise InputError(path, f"include must be yes/no, got {include_raw!r}", line=lineno, record=acc)
        rows.append(GenomeRow(
            accession=acc, species=record["species"], category=record["category"],
            file=record.get("file", ""), sha256=sha,
            include=include_raw in ("yes", "true", "1"), note=record.get("note", ""),
            roles=_parse_roles(path, record.get("role", ""), lineno, acc),
            source=record.get("source", ""), line=lineno, taxon=taxon,
        ))
    return [r for r in rows if r.include] if included_only else rows


def taxon_id(name: str) -> str:
    """The stable id (and file stem) of a `taxon:` row: depends on the name only, never on NCBI."""
    return TAXON_ID_PREFIX + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _parse_taxon(path: Path, text: str, lineno: int) -> str:
    name = " ".join(text[len(TAXON_PREFIX):].split())  # blanks collapsed: the id must not hinge on them
    if not name:
        raise InputError(path, f"'{TAXON_PREFIX}' needs a scientific name, e.g. '{TAXON_PREFIX}Macaca nigra'",
                         line=lineno, record=text)
    if not _TAXON.match(name) or not re.search(r"[A-Za-z]", name):
        raise InputError(path, "a taxon name may only hold letters, digits, blanks and . - ' ( ) [ ]",
                         line=lineno, record=text)
    return name


def _parse_roles(path: Path, text: str, lineno: int, acc: str) -> frozenset[str]:
    if not text:
        return DEFAULT_ROLES
    roles = [r.strip() for r in text.split(",")]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not all(roles):
        raise InputError(path, f"role must be one or more of {list(ROLES)} joined by ',', got {text!r}",
                         line=lineno, record=acc)
    return frozenset(roles)


def rows_with_role(rows: list[GenomeRow], role: str) -> list[GenomeRow]:
    """The rows used for `role`, in table order."""
    if role not in ROLES:
        raise ValueError(f"unknown genome role {role!r}")
    return [r for r in rows if r.has_role(role)]


def genome_with_role(rows: list[GenomeRow], accession: str, role: str, table: str | Path) -> GenomeRow:
    """The included row of `accession`, which must carry `role`; the error names the table line."""
    row = genome_by_accession(rows, accession, table)
    if not row.has_role(role):
        raise InputError(table, f"genome is used as {sorted(row.roles)}, not {role!r}; add {role!r} to its "
                         f"role column to use it here", line=row.line, record=accession)
    return row


def genome_by_accession(rows: list[GenomeRow], accession: str, table: str | Path) -> GenomeRow:
    if accession.lower().startswith(TAXON_PREFIX):  # `--accession "taxon:Macaca nigra"` as written in the table
        accession = taxon_id(" ".join(accession[len(TAXON_PREFIX):].split()))
    for row in rows:
        if row.accession == accession:
            return row
    raise InputError(table, f"accession {accession!r} is not an included row of the genome table")
