"""`vqdna download`: fetch the genomes of `genomes.table` into resources/genomes/.

Per genome (one Snakemake job each): `{accession}.fna.gz` (gzipped FASTA, checked record by
record) and `{accession}.json` (sha256 of the fetched payload and of the final file, source,
records, bases). `--manifest` gathers those into `resources/genomes/manifest.tsv`.

Sources (`genomes.source`):
  ncbi   assembly accessions (GCF_/GCA_) through the NCBI Datasets v2 REST API (a zip),
         anything else (NC_..., NZ_..., CP...) through E-utilities efetch (nuccore FASTA);
         API key from the environment variable `genomes.ncbi.api_key_env` when set.
         A `taxon:` row is first resolved to one assembly (vqdna.genomes.resolve) or read from
         its pin in the lock file (vqdna.genomes.pins); its sidecar records the pin, and the
         manifest step (one job) adds new pins to the lock file.
  local  a file from `genomes.local_dir` (the `file` column, or the one file named after the
         accession): gzipped FASTA is copied or symlinked, anything else converted.
An expected `sha256` in the table is checked against the fetched payload (or the local file);
a mismatch is an error and leaves no finished file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import time
import urllib.parse
from pathlib import Path

from ..atomic import atomic_path, sha256_file, write_json
from ..config import section
from ..errors import InputError
from .http_fetch import RetryPolicy, fetch_to_part
from .normalize import normalize
from .pins import Pin, lock_path, merge_pins, pin_for_row, read_pins
from .resolve import ncbi_api_headers, pin_for, resolve_row
from .table import GenomeRow, genome_by_accession, read_genome_table

log = logging.getLogger(__name__)
# `accession` is the row id (the file stem); `assembly` the NCBI accession actually fetched (the
# same for an accession row, the pinned one for a `taxon:` row, empty for a local taxon row)
MANIFEST_COLUMNS = ("accession", "species", "category", "file", "bytes", "sha256",
                    "source_sha256", "records", "bases", "source", "assembly")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accession", help="fetch only this genome (a row of genomes.table)")
    parser.add_argument("--manifest", action="store_true", help="only gather the per-genome records into manifest.tsv "
                        "(and the pins of taxon: rows into the lock file)")
    parser.add_argument("--resolve-only", action="store_true", help="resolve every included taxon: row that has no "
                        "pin yet and write the lock file; download nothing (review and commit it before a paper run)")
    parser.add_argument("--out-dir", default="resources/genomes", help="default %(default)s")


def run(args, cfg) -> int:
    from ..tracking import start_run

    gcfg = section(cfg, "genomes")
    out_dir = Path(args.out_dir)
    rows = read_genome_table(gcfg["table"])
    if args.resolve_only:
        resolve_all(rows, gcfg, out_dir)
        return 0
    if args.manifest:
        record_pins(rows, gcfg, out_dir)
        write_manifest(rows, out_dir)
        return 0
    todo = [genome_by_accession(rows, args.accession, gcfg["table"])] if args.accession else rows
    try:
        for row in todo:
            with start_run(cfg, stage="download", name=f"download/{row.accession}",
                           params={"accession": row.accession, "source": gcfg["source"]}) as mlrun:
                info = fetch_genome(row, gcfg, out_dir)
                mlrun.log_metrics({k: info[k] for k in ("bytes", "records", "bases", "seconds")})
                mlrun.set_tags({"sha256": info["sha256"], "assembly": info["assembly"]})
    finally:
        if not args.accession:  # one process: safe to write the lock (a per-genome job leaves it to the manifest)
            record_pins(rows, gcfg, out_dir)
    if not args.accession:
        write_manifest(rows, out_dir)
    return 0


def genome_paths(out_dir: Path, accession: str) -> tuple[Path, Path]:
    return out_dir / f"{accession}.fna.gz", out_dir / f"{accession}.json"


def fetch_genome(row: GenomeRow, gcfg: dict, out_dir: Path, *, sleep=time.sleep) -> dict:
    final, sidecar = genome_paths(out_dir, row.accession)
    t0 = time.perf_counter()
    pin: Pin | None = None
    assembly = "" if row.by_taxon else row.accession
    if gcfg["source"] == "local":
        src = find_local(row, Path(gcfg["local_dir"]))
        payload_sha = sha256_file(src)
        check_sha(row, src, payload_sha)
        stats = normalize(src, final, link=gcfg["local_mode"] == "symlink")
        source = str(src)
    else:
        part = out_dir / f".{row.accession}.download.part"
        if row.by_taxon:
            pin = pin_for(row, gcfg, sleep=sleep)
            assembly = pin.accession
            # named after the assembly too: a .part left by another pin must never be resumed
            part = out_dir / f".{row.accession}.{assembly}.download.part"
        url, headers = ncbi_request(assembly, gcfg["ncbi"])
        policy = RetryPolicy.from_config(gcfg["ncbi"])
        from tqdm import tqdm

        with tqdm(desc=f"download {row.accession}", unit="B", unit_scale=True, leave=False) as bar:
            fetch_to_part(url, part, headers=headers, policy=policy, sleep=sleep, progress=bar)
        payload_sha = sha256_file(part)
        try:
            check_sha(row, url, payload_sha)
            stats = normalize(part, final)
        except InputError:
            part.unlink(missing_ok=True)  # a wrong or broken payload must not be resumed later
            raise
        part.unlink(missing_ok=True)
        source = _redact(url)
    info = {
        "accession": row.accession, "species": row.species, "category": row.category,
        "file": final.name, "bytes": final.stat().st_size, "sha256": sha256_file(final),
        "source_sha256": payload_sha, "records": stats["records"], "bases": stats["bases"],
        "source": source, "seconds": round(time.perf_counter() - t0, 3), "assembly": assembly,
    }
    if pin is not None:
        info["pin"] = pin.as_dict()  # gathered into the lock file by record_pins (one writer)
    write_json(sidecar, info)
    return info


def check_sha(row: GenomeRow, where, actual: str) -> None:
    if row.sha256 and row.sha256 != actual:
        raise InputError(where, f"sha256 mismatch: genome table expects {row.sha256}, got {actual}",
                         record=row.accession)


def find_local(row: GenomeRow, local_dir: Path) -> Path:
    if row.file:
        path = local_dir / row.file
        if not path.exists():
            raise InputError(path, "genome file named in the table's `file` column not found", record=row.accession)
        return path
    matches = sorted(p for p in local_dir.glob(f"{row.accession}*") if p.is_file())
    if len(matches) != 1:
        raise InputError(local_dir, f"expected exactly one file named {row.accession}*, found {[m.name for m in matches]}",
                         record=row.accession)
    return matches[0]


def ncbi_request(accession: str, ncfg: dict) -> tuple[str, dict[str, str]]:
    api_key = os.environ.get(ncfg["api_key_env"], "")
    headers: dict[str, str] = {}
    if accession.startswith(("GCF_", "GCA_")):
        url = (f"{ncfg['datasets_url'].rstrip('/')}/genome/accession/{urllib.parse.quote(accession)}/download"
               "?include_annotation_type=GENOME_FASTA")
        return url, ncbi_api_headers(ncfg)
    query = {"db": "nuccore", "id": accession, "rettype": "fasta", "retmode": "text", "tool": "vqdna"}
    if ncfg.get("email"):
        query["email"] = ncfg["email"]
    if api_key:
        query["api_key"] = api_key
    return f"{ncfg['efetch_url']}?{urllib.parse.urlencode(query)}", headers


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, "***" if k == "api_key" else v) for k, v in urllib.parse.parse_qsl(parts.query)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def record_pins(rows: list[GenomeRow], gcfg: dict, out_dir: Path) -> int:
    """Add the pins that downloaded `taxon:` rows used (their sidecars) to the lock file."""
    found = []
    for row in rows:
        sidecar = genome_paths(out_dir, row.accession)[1]
        if row.by_taxon and sidecar.exists():
            pin = json.loads(sidecar.read_text()).get("pin")
            if pin:
                found.append(Pin.from_dict(pin))
    added = merge_pins(lock_path(gcfg), found) if found else 0
    if added:
        log.info("pinned %d taxon row(s) in %s", added, lock_path(gcfg))
    return added


def resolve_all(rows: list[GenomeRow], gcfg: dict, out_dir: Path, *, sleep=time.sleep) -> dict[str, Pin]:
    """Pin every included `taxon:` row: pins of genomes already downloaded first, then one query
    per row still unpinned; the lock is rewritten after each so an error keeps what was found."""
    record_pins(rows, gcfg, out_dir)
    lock = lock_path(gcfg)
    pins = read_pins(lock)
    for row in rows:
        if not row.by_taxon or pin_for_row(pins, row, lock) is not None:
            continue
        pin = resolve_row(row, gcfg, sleep=sleep)
        merge_pins(lock, [pin])
        pins[pin.id] = pin
        print(f"{row.accession}\t{row.taxon}\t{pin.accession}\t{pin.organism}\t{pin.assembly_level}")
    return {r.accession: pins[r.accession] for r in rows if r.by_taxon}


def write_manifest(rows: list[GenomeRow], out_dir: Path) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, delimiter="\t", lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        final, sidecar = genome_paths(out_dir, row.accession)
        if not sidecar.exists() or not final.exists():
            raise InputError(final, "genome not downloaded yet; run `vqdna download`", record=row.accession)
        writer.writerow(json.loads(sidecar.read_text()))
    path = out_dir / "manifest.tsv"
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
    return path


def local_source_inputs(gcfg: dict, rows: list[GenomeRow], accession: str) -> list[str]:
    """Snakemake input of one download job: with source local, the file it copies (so editing
    that file re-runs the job); nothing for NCBI."""
    if gcfg["source"] != "local":
        return []
    row = next(r for r in rows if r.accession == accession)
    return [str(find_local(row, Path(gcfg["local_dir"])))]
