"""Resolve a `taxon:` genome-table row to one NCBI assembly (NCBI Datasets v2 REST API).

    GET {datasets_url}/genome/taxon/{taxon}/dataset_report?<tier filter>&filters.assembly_version=current
        [&filters.exclude_atypical=true]&page_size=N[&page_token=...]

The tiers of `genomes.resolve.tiers` are asked in order; the first that yields an assembly of the
named species wins:
    reference  filters.reference_only=true     NCBI's reference genome of the species
    refseq     filters.assembly_source=refseq  any RefSeq (GCF_) assembly
    genbank    filters.assembly_source=genbank any GenBank (GCA_) assembly
    any        filters.assembly_source=all     RefSeq or GenBank
Within a tier the candidates are ranked by `genomes.resolve.rank_by` (then by accession, so a tie
never depends on NCBI's answer order).

The organism must be the named species (`genomes.resolve.organism_match`):
    species  NCBI's organism name equals the taxon, or is the taxon followed by a subspecies or
             strain designation ("Peromyscus californicus insignis" for "Peromyscus californicus":
             NCBI files many reference genomes under such a name); the taxon must then have a
             species' words (genus + epithet; "Candidatus" + genus + epithet)
    exact    the organism name equals the taxon
Names compare case-insensitively, blanks collapsed. A query whose answer spans more than one
species (a genus or higher taxon) is an error unless `genomes.resolve.allow_multiple_species`.

Reads the JSON fields `reports[].accession`, `.source_database`, `.organism.organism_name`,
`.organism.tax_id`, `.assembly_info.{assembly_name,assembly_level,refseq_category,release_date}`,
`.assembly_stats.{contig_n50,scaffold_n50}` and `next_page_token`. Retries, back-off and the API
key (header `api-key`) are those of the genome download.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.parse
from datetime import datetime, timezone
from typing import Callable

from ..errors import InputError
from .http_fetch import RetryPolicy, fetch_bytes
from .pins import Pin, lock_path, pin_for_row, read_pins
from .table import GenomeRow

log = logging.getLogger(__name__)
TIERS = {
    "reference": {"filters.reference_only": "true"},
    "refseq": {"filters.assembly_source": "refseq"},
    "genbank": {"filters.assembly_source": "genbank"},
    "any": {"filters.assembly_source": "all"},
}
_CATEGORY = {"reference genome": 0, "representative genome": 1}
_LEVEL = {"complete genome": 0, "chromosome": 1, "scaffold": 2, "contig": 3}


def ncbi_api_headers(ncfg: dict) -> dict[str, str]:
    """The Datasets API key travels in a header (never in a URL that may be logged)."""
    api_key = os.environ.get(ncfg["api_key_env"], "")
    return {"api-key": api_key} if api_key else {}


def pin_for(row: GenomeRow, gcfg: dict, *, sleep: Callable[[float], None] = time.sleep) -> Pin:
    """The assembly of a `taxon:` row: its pin in the lock file when there is one (no query),
    otherwise resolved now. The caller records a new pin (vqdna.genomes.pins)."""
    lock = lock_path(gcfg)
    pin = pin_for_row(read_pins(lock), row, lock)
    if pin is not None:
        log.info("%s: %r pinned to %s in %s (no query)", row.accession, row.taxon, pin.accession, lock)
        return pin
    if gcfg["resolve"]["frozen"]:
        raise InputError(gcfg["table"], f"taxon {row.taxon!r} has no pin in {lock} and genomes.resolve.frozen "
                         "is true (no new NCBI query allowed); run `vqdna download --resolve-only` where "
                         "NCBI is reachable and commit the lock file", line=row.line, record=row.accession)
    return resolve_row(row, gcfg, sleep=sleep)


def resolve_row(row: GenomeRow, gcfg: dict, *, sleep: Callable[[float], None] = time.sleep,
                now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> Pin:
    """Ask NCBI tier by tier and return the chosen assembly as a pin; errors name the table row."""
    rcfg, ncfg, table = gcfg["resolve"], gcfg["ncbi"], gcfg["table"]

    def fail(message: str) -> InputError:
        return InputError(table, f"taxon {row.taxon!r}: {message}", line=row.line, record=row.accession)

    seen_names: dict[str, None] = {}
    for tier in rcfg["tiers"]:
        query = report_url(ncfg["datasets_url"], row.taxon, tier, rcfg)
        when = now()
        try:
            reports = fetch_reports(query, ncfg, rcfg, sleep=sleep)
        except InputError as exc:
            if "HTTP 400" in str(exc) or "HTTP 404" in str(exc):  # how the API answers a name it does not know
                raise fail(f"NCBI Datasets does not recognise the name ({exc}); check the spelling against "
                           "NCBI Taxonomy, put an accession in the table, or set include: no") from None
            raise fail(f"NCBI Datasets query failed ({exc})") from None
        log.info("%s: tier %s: %d assemblies", row.accession, tier, len(reports))
        if not reports:
            continue
        species = sorted({species_key(_organism(r)) for r in reports})
        if len(species) > 1 and not rcfg["allow_multiple_species"]:
            shown = ", ".join(species[:8]) + (", ..." if len(species) > 8 else "")
            raise fail(f"NCBI returned assemblies of {len(species)} species ({shown}) for tier {tier!r}: the name "
                       "is a genus or higher taxon; name one species, put an accession in the table, or set "
                       "genomes.resolve.allow_multiple_species")
        if rcfg["allow_multiple_species"]:
            candidates = reports
        else:
            candidates = [r for r in reports if organism_matches(_organism(r), row.taxon, rcfg["organism_match"])]
        for r in reports:
            seen_names.setdefault(_organism(r), None)
        if not candidates:
            continue
        best = min(candidates, key=lambda r: rank_key(r, rcfg["rank_by"]))
        pin = _pin(row, best, tier, query, when)
        log.info("%s: %r -> %s (%s, %s, %s; %d candidates in tier %s)", row.accession, row.taxon, pin.accession,
                 pin.organism, pin.refseq_category or "no RefSeq category", pin.assembly_level, len(candidates), tier)
        return pin
    tiers = ", ".join(rcfg["tiers"])
    if not seen_names:
        raise fail(f"NCBI Datasets has no current assembly for this name (tiers {tiers}); check the spelling "
                   "against NCBI Taxonomy, put an accession in the table, or set include: no")
    names = ", ".join(list(seen_names)[:8])
    raise fail(f"no assembly whose organism matches the name (genomes.resolve.organism_match: "
               f"{rcfg['organism_match']}; tiers {tiers}); NCBI's organism names: {names}. If NCBI uses another "
               "name for this species, write that name after 'taxon:' in the table")


def report_url(base: str, taxon: str, tier: str, rcfg: dict, page_token: str | None = None) -> str:
    params = dict(TIERS[tier])
    params["filters.assembly_version"] = "current"  # replaced/suppressed assemblies are not what a new run should fetch
    if rcfg["exclude_atypical"]:
        params["filters.exclude_atypical"] = "true"
    params["page_size"] = str(rcfg["page_size"])
    if page_token:
        params["page_token"] = page_token
    return (f"{base.rstrip('/')}/genome/taxon/{urllib.parse.quote(taxon, safe='')}/dataset_report?"
            f"{urllib.parse.urlencode(params)}")


def fetch_reports(url: str, ncfg: dict, rcfg: dict, *, sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """Every report of a query, page by page, up to genomes.resolve.max_reports."""
    policy = RetryPolicy.from_config(ncfg)
    headers = ncbi_api_headers(ncfg)
    reports: list[dict] = []
    page_url = url
    while True:
        body = fetch_bytes(page_url, headers=headers, policy=policy, sleep=sleep)
        try:
            page = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            raise InputError(url, f"answer is not JSON ({exc.msg} at byte {exc.pos})") from None
        if not isinstance(page, dict) or not isinstance(page.get("reports", []), list):
            raise InputError(url, "answer has no list of `reports`")
        for report in page.get("reports", []):
            if not isinstance(report, dict) or not report.get("accession"):
                raise InputError(url, "a report has no `accession`")
            reports.append(report)
        token = page.get("next_page_token")
        if not token:
            return reports
        if len(reports) >= rcfg["max_reports"]:
            raise InputError(url, f"more than genomes.resolve.max_reports={rcfg['max_reports']} assemblies; "
                             "raise it, or list a tier that asks for fewer (e.g. reference) first")
        page_url = report_url_with_token(url, token)


def report_url_with_token(url: str, token: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "page_token"] + [("page_token", token)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _norm(name: str) -> str:
    return " ".join(name.split()).casefold()


def _species_words(name: str) -> int:
    return 3 if name.split()[:1] and name.split()[0].casefold() == "candidatus" else 2


def species_key(organism: str) -> str:
    """The species part of an organism name: genus + epithet ('Candidatus' counts as a word of its own)."""
    words = _norm(organism).replace("[", "").replace("]", "").split()
    return " ".join(words[:_species_words(organism)])


def organism_matches(organism: str, taxon: str, mode: str) -> bool:
    org, want = _norm(organism), _norm(taxon)
    if org == want:
        return True
    return mode == "species" and len(want.split()) >= _species_words(taxon) and org.startswith(want + " ")


def rank_key(report: dict, rank_by: list[str]) -> tuple:
    info = report.get("assembly_info") or {}
    stats = report.get("assembly_stats") or {}
    keys = {
        "refseq_category": lambda: _CATEGORY.get(str(info.get("refseq_category", "")).casefold(), 9),
        "source": lambda: 0 if _is_refseq(report) else 1,
        "assembly_level": lambda: _LEVEL.get(str(info.get("assembly_level", "")).casefold(), 9),
        "contig_n50": lambda: -_int(stats.get("contig_n50")),
        "scaffold_n50": lambda: -_int(stats.get("scaffold_n50")),
        "release_date": lambda: -_int(str(info.get("release_date", "")).replace("-", "")[:8]),
    }
    return tuple(keys[k]() for k in rank_by) + (str(report["accession"]),)


def _is_refseq(report: dict) -> bool:
    return "REFSEQ" in str(report.get("source_database", "")).upper() or str(report["accession"]).startswith("GCF_")


def _int(value) -> int:
    try:
        return int(value)  # int64 fields come as JSON strings, int32 ones as numbers
    except (TypeError, ValueError):
        return 0


def _organism(report: dict) -> str:
    return str((report.get("organism") or {}).get("organism_name", ""))


def _pin(row: GenomeRow, report: dict, tier: str, query: str, when: datetime) -> Pin:
    info = report.get("assembly_info") or {}
    stats = report.get("assembly_stats") or {}
    organism = report.get("organism") or {}
    return Pin(
        id=row.accession, taxon=row.taxon, accession=str(report["accession"]),
        assembly_name=str(info.get("assembly_name", "")), organism=str(organism.get("organism_name", "")),
        tax_id=str(organism.get("tax_id", "")), source_database=str(report.get("source_database", "")),
        refseq_category=str(info.get("refseq_category", "")), assembly_level=str(info.get("assembly_level", "")),
        contig_n50=str(stats.get("contig_n50", "")), tier=tier, query=query,
        resolved_at=when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
