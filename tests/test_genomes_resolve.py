"""Genome-table rows named by species (`taxon:<name>`): resolved through a real HTTP server on
127.0.0.1 that answers NCBI Datasets v2 `genome/taxon/{taxon}/dataset_report` queries (and the
genome zip download) like NCBI; pinned in the lock file; a pinned row makes no query."""

import argparse
import gzip
import io
import json
import threading
import zipfile
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from test_genomes_download import LAMBDA_FASTA, YERSINIA_FASTA, FakeNCBI

from vqdna.config import load_config
from vqdna.errors import InputError
from vqdna.genomes import download
from vqdna.genomes.download import fetch_genome, record_pins, write_manifest
from vqdna.genomes.pins import read_pins
from vqdna.genomes.readers import iter_records
from vqdna.genomes.resolve import resolve_row
from vqdna.genomes.table import read_genome_table, taxon_id

ROOT = Path(__file__).resolve().parents[1]
HEADER = "accession\tspecies\tcategory\tinclude\trole\tsource\tnote\n"


class FakeDatasets(FakeNCBI):
    """dataset_report answers by (taxon, tier) from `reports`, optionally after scripted HTTP
    errors (`report_script`); everything else (the genome zip) is FakeNCBI's."""

    reports: dict = {}
    report_script: dict = {}

    def do_GET(self):
        parts = urlsplit(self.path)
        if not parts.path.endswith("/dataset_report"):
            return super().do_GET()
        taxon = unquote(parts.path.split("/")[-2])
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        tier = "reference" if query.get("filters.reference_only") == "true" else query["filters.assembly_source"]
        type(self).requests.append({"taxon": taxon, "tier": tier, "query": query, "path": self.path,
                                    "headers": {k.lower(): v for k, v in self.headers.items()}})
        script = self.report_script.get(taxon)
        if script:
            status = script.pop(0)
            self.send_response(status)
            self.send_header("Retry-After", "3")
            self.end_headers()
            return
        found = self.reports.get((taxon, tier), [])
        size = int(query.get("page_size", 20))
        start = int(query.get("page_token", "0"))
        page = {"reports": found[start:start + size], "total_count": len(found)} if found else {"total_count": 0}
        if start + size < len(found):
            page["next_page_token"] = str(start + size)
        body = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def ncbi():
    FakeDatasets.scripts, FakeDatasets.requests = {}, []
    FakeDatasets.reports, FakeDatasets.report_script = {}, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeDatasets)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeDatasets
    server.shutdown()
    server.server_close()


def report(acc, organism, *, category="", level="Scaffold", n50=1000, taxid=1, released="2020-01-01"):
    return {"accession": acc,
            "source_database": "SOURCE_DATABASE_REFSEQ" if acc.startswith("GCF_") else "SOURCE_DATABASE_GENBANK",
            "organism": {"organism_name": organism, "tax_id": taxid},
            "assembly_info": {"assembly_name": f"ASM{acc[4:13]}v1", "assembly_level": level,
                              "refseq_category": category, "release_date": released},
            "assembly_stats": {"contig_n50": n50, "total_sequence_length": "48502"}}


def genome_zip(acc, fasta):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ncbi_dataset/data/assembly_data_report.jsonl", "{}")
        zf.writestr(f"ncbi_dataset/data/{acc}/{acc}_test_genomic.fna", fasta)
    return buf.getvalue()


def setup(tmp_path, base, body, **resolve):
    table = tmp_path / "config" / "genomes.tsv"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(HEADER + body)
    cfg = load_config([ROOT / "config" / "config.yaml"], [
        f"genomes.table={table}", "genomes.source=ncbi", f"genomes.ncbi.datasets_url={base}/datasets/v2",
        "genomes.ncbi.api_key_env=VQDNA_TEST_NCBI_KEY", "genomes.ncbi.backoff_s=0.5",
        *[f"genomes.resolve.{k}={json.dumps(v)}" for k, v in resolve.items()]])
    return cfg["genomes"], read_genome_table(table)


def report_requests(server):
    return [r for r in server.requests if "tier" in r]


NIGRA = "taxon:Macaca nigra\tMacaca nigra\tMammalian\tyes\tpretrain\tNCBI taxon lookup\t\n"


def test_reference_genome_is_pinned_and_downloads_like_an_accession_row(ncbi, tmp_path, monkeypatch):
    base, server = ncbi
    monkeypatch.setenv("VQDNA_TEST_NCBI_KEY", "k3")
    gcfg, rows = setup(tmp_path, base, NIGRA)
    (row,) = rows
    assert row.accession == "taxon_macaca_nigra" and row.taxon == "Macaca nigra" and row.line == 2
    server.reports[("Macaca nigra", "reference")] = [
        report("GCF_000000001.1", "Macaca nigra", category="reference genome", level="Chromosome", taxid=54600)]
    server.scripts["GCF_000000001.1"] = (genome_zip("GCF_000000001.1", LAMBDA_FASTA), ["ok"])
    out = tmp_path / "resources" / "genomes"
    info = fetch_genome(row, gcfg, out, sleep=lambda s: None)

    (req,) = report_requests(server)  # the reference tier answered: no further tier asked
    assert req["path"].startswith("/datasets/v2/genome/taxon/Macaca%20nigra/dataset_report?")
    assert req["query"]["filters.reference_only"] == "true" and req["query"]["filters.assembly_version"] == "current"
    assert req["headers"]["api-key"] == "k3"
    assert "/genome/accession/GCF_000000001.1/download" in server.requests[-1]["path"]
    # the FASTA lands where an accession row's would, under the row's stable id
    (rid, seq), = iter_records(out / "taxon_macaca_nigra.fna.gz")
    assert len(seq) == 48502 and info["assembly"] == "GCF_000000001.1" and info["accession"] == "taxon_macaca_nigra"
    assert not list(out.glob(".*part"))
    # the per-genome job leaves the lock alone; the manifest step pins it
    lock = tmp_path / "config" / "genomes.lock.tsv"
    assert not lock.exists()
    assert record_pins(rows, gcfg, out) == 1
    pin = read_pins(lock)["taxon_macaca_nigra"]
    assert (pin.accession, pin.organism, pin.tax_id, pin.tier) == ("GCF_000000001.1", "Macaca nigra", "54600", "reference")
    assert pin.refseq_category == "reference genome" and pin.assembly_level == "Chromosome"
    assert "Macaca%20nigra/dataset_report?" in pin.query and "k3" not in lock.read_text()
    assert pin.resolved_at.endswith("Z") and len(pin.resolved_at) == 20
    manifest = write_manifest(rows, out).read_text().splitlines()
    cols = dict(zip(manifest[0].split("\t"), manifest[1].split("\t")))
    assert cols["accession"] == "taxon_macaca_nigra" and cols["assembly"] == "GCF_000000001.1"
    assert record_pins(rows, gcfg, out) == 0  # idempotent


def test_second_run_reads_the_lock_and_makes_no_query(ncbi, tmp_path):
    base, server = ncbi
    gcfg, rows = setup(tmp_path, base, NIGRA)
    server.reports[("Macaca nigra", "reference")] = [report("GCF_000000001.1", "Macaca nigra", category="reference genome")]
    server.scripts["GCF_000000001.1"] = (genome_zip("GCF_000000001.1", LAMBDA_FASTA), ["ok"])
    out = tmp_path / "resources" / "genomes"
    fetch_genome(rows[0], gcfg, out, sleep=lambda s: None)
    record_pins(rows, gcfg, out)
    lock_text = (tmp_path / "config" / "genomes.lock.tsv").read_text()
    # NCBI now prefers another assembly; the fresh run (downloads deleted) must still fetch the pinned one
    server.reports[("Macaca nigra", "reference")] = [report("GCF_000000009.1", "Macaca nigra", category="reference genome")]
    first = out.with_name("first")
    out.rename(first)
    server.requests.clear()
    info = fetch_genome(rows[0], gcfg, out, sleep=lambda s: None)
    assert report_requests(server) == [] and len(server.requests) == 1
    assert info["assembly"] == "GCF_000000001.1"
    assert (out / "taxon_macaca_nigra.fna.gz").read_bytes() == (first / "taxon_macaca_nigra.fna.gz").read_bytes()
    record_pins(rows, gcfg, out)
    assert (tmp_path / "config" / "genomes.lock.tsv").read_text() == lock_text  # unchanged, byte for byte
    # a lock edited by hand wins; a download that disagrees with the lock is an error naming the lock row
    lock = tmp_path / "config" / "genomes.lock.tsv"
    lock.write_text(lock_text.replace("GCF_000000001.1", "GCF_000000002.1"))
    with pytest.raises(InputError, match=r"genomes.lock.tsv:5 \(record 'taxon_macaca_nigra'\): pins GCF_000000002.1, "
                                         r"but .* downloaded as GCF_000000001.1"):
        record_pins(rows, gcfg, out)


def test_frozen_lock_refuses_a_new_query(ncbi, tmp_path):
    base, server = ncbi
    gcfg, rows = setup(tmp_path, base, NIGRA, frozen=True)
    with pytest.raises(InputError, match=r"genomes.tsv:2 \(record 'taxon_macaca_nigra'\): taxon 'Macaca nigra' has no pin"):
        fetch_genome(rows[0], gcfg, tmp_path / "out", sleep=lambda s: None)
    assert server.requests == []


def test_policy_picks_among_several_candidates(ncbi, tmp_path):
    base, server = ncbi
    body = "taxon:Fusarium annulatum\tFusarium annulatum\tFungi\tyes\tpretrain\tx\t\n"
    candidates = [
        report("GCF_000000030.1", "Fusarium annulatum", level="Contig", n50=9_000_000),
        report("GCF_000000020.1", "Fusarium annulatum", level="Complete Genome", n50=10),
        report("GCF_000000010.1", "Fusarium annulatum", category="representative genome", level="Scaffold", n50=50),
        report("GCF_000000011.1", "Fusarium annulatum", category="representative genome", level="Scaffold", n50=500),
        report("GCF_000000040.1", "Fusarium annulatum strain X-1", category="", level="Complete Genome", n50=99_000_000),
    ]
    server.reports[("Fusarium annulatum", "refseq")] = candidates  # no reference genome: the refseq tier decides
    gcfg, rows = setup(tmp_path, base, body, page_size=2)
    pin = resolve_row(rows[0], gcfg, sleep=lambda s: None)
    # representative RefSeq category first, then level (both Scaffold), then the larger contig N50
    assert pin.accession == "GCF_000000011.1" and pin.tier == "refseq"
    tiers = [r["tier"] for r in report_requests(server)]
    assert tiers == ["reference", "refseq", "refseq", "refseq"]  # 5 reports in pages of 2, following page tokens
    assert [r["query"].get("page_token") for r in report_requests(server)[1:]] == [None, "2", "4"]
    # another order of preference: level, then N50; the strain name counts as the species
    gcfg, rows = setup(tmp_path, base, body, rank_by=["assembly_level", "contig_n50"])
    assert resolve_row(rows[0], gcfg, sleep=lambda s: None).accession == "GCF_000000040.1"
    # exact organism match: the strain-named assembly no longer qualifies
    gcfg, rows = setup(tmp_path, base, body, rank_by=["assembly_level", "contig_n50"], organism_match="exact")
    assert resolve_row(rows[0], gcfg, sleep=lambda s: None).accession == "GCF_000000020.1"


def test_genbank_only_species_falls_through_to_any(ncbi, tmp_path):
    base, server = ncbi
    server.reports[("Rhipidura dahli", "all")] = [report("GCA_000000005.2", "Rhipidura dahli", level="Scaffold")]
    gcfg, rows = setup(tmp_path, base, "taxon:Rhipidura dahli\tRhipidura dahli\tOther Vertebrate\tyes\tpretrain\tx\t\n")
    pin = resolve_row(rows[0], gcfg, sleep=lambda s: None)
    assert (pin.accession, pin.tier) == ("GCA_000000005.2", "any")
    assert [r["tier"] for r in report_requests(server)] == ["reference", "refseq", "all"]


def test_name_without_match_is_an_error_naming_the_row(ncbi, tmp_path):
    base, server = ncbi
    body = NIGRA + "taxon:Nosuch species\tNosuch species\tFungi\tyes\tpretrain\tx\t\n" \
        + "taxon:Clostridium nexile\tClostridium nexile\tBacteria\tyes\tpretrain\tx\t\n"
    gcfg, rows = setup(tmp_path, base, body)
    with pytest.raises(InputError, match=r"genomes.tsv:3 \(record 'taxon_nosuch_species'\): taxon 'Nosuch species': "
                                         r"NCBI Datasets has no current assembly"):
        resolve_row(rows[1], gcfg, sleep=lambda s: None)
    assert len(report_requests(server)) == 3  # every tier asked once
    # a name NCBI rejects outright (HTTP 400/404, whichever the API uses) also names the row
    server.report_script["Nosuch species"] = [404]
    with pytest.raises(InputError, match=r"genomes.tsv:3 .*NCBI Datasets does not recognise the name.*HTTP 404"):
        resolve_row(rows[1], gcfg, sleep=lambda s: None)
    # NCBI answers under another name (its bracketed genus): no silent acceptance
    server.reports[("Clostridium nexile", "reference")] = [report("GCF_000000007.1", "[Clostridium] nexile")]
    with pytest.raises(InputError, match=r"genomes.tsv:4 .*no assembly whose organism matches.*\[Clostridium\] nexile"):
        resolve_row(rows[2], gcfg, sleep=lambda s: None)


def test_genus_answer_with_several_species_is_an_error(ncbi, tmp_path):
    base, server = ncbi
    server.reports[("Aeromonas", "reference")] = [
        report("GCF_000000101.1", "Aeromonas hydrophila", category="reference genome", n50=10),
        report("GCF_000000102.1", "Aeromonas caviae", category="reference genome", n50=20),
        report("GCF_000000103.1", "Aeromonas salmonicida subsp. salmonicida", category="reference genome", n50=5)]
    body = "taxon:Aeromonas\tAeromonas\tBacteria\tyes\tpretrain\tx\t\n"
    gcfg, rows = setup(tmp_path, base, body)
    with pytest.raises(InputError, match=r"genomes.tsv:2 \(record 'taxon_aeromonas'\): .*assemblies of 3 species "
                                         r"\(aeromonas caviae, aeromonas hydrophila, aeromonas salmonicida\).*genus"):
        resolve_row(rows[0], gcfg, sleep=lambda s: None)
    gcfg, rows = setup(tmp_path, base, body, allow_multiple_species=True, rank_by=["contig_n50"])
    assert resolve_row(rows[0], gcfg, sleep=lambda s: None).accession == "GCF_000000102.1"


def test_429_then_success(ncbi, tmp_path):
    base, server = ncbi
    server.report_script["Macaca nigra"] = [429]
    server.reports[("Macaca nigra", "reference")] = [report("GCF_000000001.1", "Macaca nigra", category="reference genome")]
    gcfg, rows = setup(tmp_path, base, NIGRA)
    waits = []
    pin = resolve_row(rows[0], gcfg, sleep=waits.append)
    assert pin.accession == "GCF_000000001.1" and waits == [3.0]  # Retry-After honoured
    assert len(report_requests(server)) == 2
    # a server that keeps failing: the error names the table row and the HTTP status
    server.report_script["Macaca nigra"] = [503] * 10
    gcfg, rows = setup(tmp_path, base, NIGRA, tiers=["reference"])
    gcfg["ncbi"]["max_attempts"] = 2
    with pytest.raises(InputError, match=r"genomes.tsv:2 \(record 'taxon_macaca_nigra'\): .*query failed.*after 2 attempts.*503"):
        resolve_row(rows[0], gcfg, sleep=lambda s: None)


def test_resolve_only_pins_every_taxon_row_and_keeps_pins_on_error(ncbi, tmp_path, capsys):
    base, server = ncbi
    body = ("GCF_000000050.1\tLambda\tVirus\tyes\tpretrain\tx\t\n" + NIGRA
            + "taxon:Macaca assamensis\tMacaca assamensis\tMammalian\tyes\tpretrain\tx\t\n"
            + "taxon:Penicillium chermesinum\tPenicillium chermesinum\tFungi\tno\tpretrain\t\tnot fetched\n")
    server.reports[("Macaca nigra", "reference")] = [report("GCF_000000001.1", "Macaca nigra", category="reference genome")]
    gcfg, rows = setup(tmp_path, base, body)
    cfg = {"genomes": gcfg}
    args = argparse.Namespace(resolve_only=True, manifest=False, accession=None, out_dir=str(tmp_path / "res"))
    with pytest.raises(InputError, match=r"genomes.tsv:4 \(record 'taxon_macaca_assamensis'\)"):
        download.run(args, cfg)
    lock = tmp_path / "config" / "genomes.lock.tsv"
    assert set(read_pins(lock)) == {"taxon_macaca_nigra"}  # found before the failing row: kept
    server.reports[("Macaca assamensis", "all")] = [report("GCA_000000003.1", "Macaca assamensis")]
    server.requests.clear()
    assert download.run(args, cfg) == 0
    assert {k: p.accession for k, p in read_pins(lock).items()} == {
        "taxon_macaca_nigra": "GCF_000000001.1", "taxon_macaca_assamensis": "GCA_000000003.1"}
    assert {r["taxon"] for r in report_requests(server)} == {"Macaca assamensis"}  # the pinned one not asked again
    assert "GCA_000000003.1" in capsys.readouterr().out


# ---- the table form ------------------------------------------------------------------------

def test_taxon_rows_in_the_table(tmp_path):
    path = tmp_path / "genomes.tsv"
    path.write_text(HEADER + "taxon: Candidatus  Dwaynia gallinarum \tC. d.\tBacteria\tyes\tpretrain\tx\t\n"
                    "NC_001416.1\tlambda\tVirus\tyes\tpretrain\tx\t\n")
    taxon_row, plain = read_genome_table(path)
    assert taxon_row.taxon == "Candidatus Dwaynia gallinarum" and taxon_row.by_taxon and not plain.by_taxon
    assert taxon_row.accession == "taxon_candidatus_dwaynia_gallinarum" == taxon_id("Candidatus Dwaynia gallinarum")
    assert taxon_id("[Clostridium] nexile") == "taxon_clostridium_nexile"
    from vqdna.genomes.table import genome_by_accession
    assert genome_by_accession([taxon_row, plain], "taxon:Candidatus Dwaynia gallinarum", path) is taxon_row


@pytest.mark.parametrize("accession,message", [
    ("taxon:", r"genomes.tsv:3 \(record 'taxon:'\): 'taxon:' needs a scientific name"),
    ("taxon:Macaca/nigra", r"genomes.tsv:3 .*a taxon name may only hold"),
    ("taxon:macaca  NIGRA", r"genomes.tsv:3 \(record 'taxon_macaca_nigra'\): duplicate genome id \(taxon 'macaca NIGRA'"
                            r" gives 'taxon_macaca_nigra', first on line 2\)"),
])
def test_bad_taxon_rows_name_the_line(tmp_path, accession, message):
    path = tmp_path / "genomes.tsv"
    path.write_text(HEADER + NIGRA + f"{accession}\tx\tc\tyes\tpretrain\tx\t\n")
    with pytest.raises(InputError, match=message):
        read_genome_table(path)


def test_bad_lock_file_names_the_line(tmp_path):
    lock = tmp_path / "genomes.lock.tsv"
    lock.write_text("# c\nid\ttaxon\taccession\ntaxon_a_b\tA b\tGCF_000000001.1\ntaxon_c_d\tC d\tNC_000001.1\n")
    with pytest.raises(InputError, match=r"genomes.lock.tsv:4 \(record 'taxon_c_d'\): accession 'NC_000001.1' is not"):
        read_pins(lock)


def test_paper_lock_file_if_present_covers_only_table_rows():
    """A committed config/genomes.lock.tsv must parse and pin only taxon rows of the table."""
    lock = ROOT / "config" / "genomes.lock.tsv"
    if not lock.exists():
        pytest.skip("no pins committed yet (they are made where NCBI is reachable)")
    rows = {r.accession: r for r in read_genome_table(ROOT / "config" / "genomes.tsv", included_only=False)}
    for key, pin in read_pins(lock).items():
        assert key in rows and rows[key].by_taxon and rows[key].taxon.casefold() == pin.taxon.casefold()



# ---- through Snakemake ---------------------------------------------------------------------

@pytest.mark.slow
def test_snakemake_downloads_a_taxon_row_and_pins_it(ncbi, tmp_path):
    """`snakemake resources/genomes/manifest.tsv` on a copy of the repo: the taxon row is resolved
    by its download job, the manifest job writes the lock next to the table, and a run from
    scratch with that lock asks NCBI nothing."""
    import os
    import subprocess
    import sys

    from test_cluster_slurm import copy_repo

    base, server = ncbi
    repo = copy_repo(tmp_path / "repo")
    (repo / "config" / "genomes.test.tsv").write_text(
        HEADER + "GCF_000000050.1\tYersinia pestis pPCP1\tBacteria\tyes\tpretrain\tx\t\n" + NIGRA)
    (repo / "config" / "test.yaml").write_text(
        "genomes:\n  table: config/genomes.test.tsv\n  source: ncbi\n"
        f"  ncbi: {{datasets_url: {base}/datasets/v2, api_key_env: VQDNA_TEST_NCBI_KEY}}\n")
    server.reports[("Macaca nigra", "reference")] = [report("GCF_000000001.1", "Macaca nigra", category="reference genome")]
    server.scripts["GCF_000000001.1"] = (genome_zip("GCF_000000001.1", LAMBDA_FASTA), ["ok"])
    server.scripts["GCF_000000050.1"] = (genome_zip("GCF_000000050.1", YERSINIA_FASTA), ["ok"])
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(repo / "src"),
           "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}

    def snakemake():
        p = subprocess.run([sys.executable, "-m", "snakemake", "-c1", "resources/genomes/manifest.tsv",
                            "--configfile", "config/test.yaml"], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]

    snakemake()
    genomes = repo / "resources" / "genomes"
    (_rid, seq), = iter_records(genomes / "taxon_macaca_nigra.fna.gz")
    assert len(seq) == 48502
    pins = read_pins(repo / "config" / "genomes.test.lock.tsv")
    assert {k: p.accession for k, p in pins.items()} == {"taxon_macaca_nigra": "GCF_000000001.1"}
    assert len(report_requests(server)) == 1
    server.requests.clear()
    for f in genomes.iterdir():
        os.unlink(f)
    snakemake()
    assert report_requests(server) == [] and len(server.requests) == 2  # the two genome zips only
    assert gzip.decompress((genomes / "taxon_macaca_nigra.fna.gz").read_bytes()).count(b">") == 1
