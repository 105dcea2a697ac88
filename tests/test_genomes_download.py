"""`vqdna download` against a real HTTP server on 127.0.0.1 that answers like NCBI
(efetch FASTA, Datasets v2 zip), with 429 / 500 / a cut-off body / wrong checksums; and the
local source."""

import gzip
import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from vqdna.errors import InputError
from vqdna.genomes.download import fetch_genome, write_manifest
from vqdna.genomes.readers import iter_records
from vqdna.genomes.table import GenomeRow

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "genomes"
LAMBDA_FASTA = gzip.decompress((SHARED / "NC_001416_lambda_phage.fa.gz").read_bytes())
YERSINIA_FASTA = gzip.decompress((SHARED / "NC_005816_yersinia_pestis_plasmid.fna.gz").read_bytes())


class FakeNCBI(BaseHTTPRequestHandler):
    """Answers each request with the next scripted step for its accession."""

    scripts: dict = {}
    requests: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path.endswith("/efetch.fcgi"):
            accession = query["id"][0]
        else:  # /datasets/v2/genome/accession/<acc>/download
            accession = parts.path.split("/")[-2]
        type(self).requests.append({"accession": accession, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        body, script = self.scripts[accession]
        step = script.pop(0) if len(script) > 1 else script[0]
        have = 0
        rng = self.headers.get("Range")
        if rng and step in ("ok", "ignore_range"):
            have = int(rng.split("=")[1].rstrip("-")) if step == "ok" else 0
        if step == "429":
            self.send_response(429)
            self.send_header("Retry-After", "3")
            self.end_headers()
        elif isinstance(step, int):
            self.send_response(step)
            self.end_headers()
        elif step == "truncate":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            rest = body[have:]
            self.send_response(206 if have else 200)
            if have:
                self.send_header("Content-Range", f"bytes {have}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            self.wfile.write(rest)


@pytest.fixture
def ncbi():
    FakeNCBI.scripts = {}
    FakeNCBI.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeNCBI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeNCBI
    server.shutdown()
    server.server_close()


def gcfg(base, **over):
    ncbi = {"datasets_url": f"{base}/datasets/v2", "efetch_url": f"{base}/entrez/eutils/efetch.fcgi",
            "api_key_env": "VQDNA_TEST_NCBI_KEY", "email": None, "timeout_s": 5, "max_attempts": 6,
            "backoff_s": 0.5, "backoff_max_s": 10, "chunk_bytes": 4096}
    ncbi.update(over.pop("ncbi", {}))
    return {"table": "unused", "source": "ncbi", "local_dir": "unused", "local_mode": "copy", "ncbi": ncbi, **over}


def row(accession, sha256="", **kw):
    return GenomeRow(accession=accession, species="test species", category="Virus", sha256=sha256, **kw)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_retries_429_500_and_resumes_a_cut_off_body(ncbi, tmp_path, monkeypatch):
    base, server = ncbi
    monkeypatch.setenv("VQDNA_TEST_NCBI_KEY", "secret-key")
    server.scripts["NC_001416.1"] = (LAMBDA_FASTA, ["429", 500, "truncate", "ok"])
    waits = []
    info = fetch_genome(row("NC_001416.1", sha(LAMBDA_FASTA)), gcfg(base), tmp_path, sleep=waits.append)
    assert waits[0] == 3.0            # Retry-After honoured
    assert waits[1] == 1.0            # then exponential back-off (0.5 * 2**1)
    assert len(server.requests) == 4
    assert server.requests[3]["headers"]["range"] == f"bytes={len(LAMBDA_FASTA) // 2}-"
    query = parse_qs(urlsplit(server.requests[0]["path"]).query)
    assert query["db"] == ["nuccore"] and query["rettype"] == ["fasta"] and query["api_key"] == ["secret-key"]
    assert "secret-key" not in info["source"]
    out = tmp_path / "NC_001416.1.fna.gz"
    (rid, seq), = iter_records(out)
    assert len(seq) == 48502 and info["bases"] == 48502 and info["source_sha256"] == sha(LAMBDA_FASTA)
    assert not list(tmp_path.glob(".*part"))
    manifest = write_manifest([row("NC_001416.1")], tmp_path).read_text().splitlines()
    assert manifest[0].split("\t")[:6] == ["accession", "species", "category", "file", "bytes", "sha256"]
    assert manifest[1].split("\t")[5] == sha(out.read_bytes())


def test_wrong_checksum_is_an_error_and_leaves_nothing(ncbi, tmp_path):
    base, server = ncbi
    server.scripts["NC_001416.1"] = (LAMBDA_FASTA, ["ok"])
    with pytest.raises(InputError, match="sha256 mismatch.*expects 0{64}"):
        fetch_genome(row("NC_001416.1", "0" * 64), gcfg(base), tmp_path, sleep=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_server_ignoring_range_restarts_cleanly(ncbi, tmp_path):
    base, server = ncbi
    server.scripts["NC_005816.1"] = (YERSINIA_FASTA, ["truncate", "ignore_range"])
    fetch_genome(row("NC_005816.1", sha(YERSINIA_FASTA)), gcfg(base), tmp_path, sleep=lambda s: None)
    (_rid, seq), = iter_records(tmp_path / "NC_005816.1.fna.gz")
    assert len(seq) == 9609


def test_datasets_zip_for_assembly_accessions(ncbi, tmp_path, monkeypatch):
    base, server = ncbi
    monkeypatch.setenv("VQDNA_TEST_NCBI_KEY", "k2")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("README.md", "NCBI Datasets")
        zf.writestr("ncbi_dataset/data/assembly_data_report.jsonl", "{}")
        zf.writestr("ncbi_dataset/data/GCF_000000001.1/GCF_000000001.1_test_genomic.fna", YERSINIA_FASTA + LAMBDA_FASTA)
    server.scripts["GCF_000000001.1"] = (buf.getvalue(), [503, "ok"])
    info = fetch_genome(row("GCF_000000001.1"), gcfg(base), tmp_path, sleep=lambda s: None)
    assert info["records"] == 2 and info["bases"] == 9609 + 48502
    req = server.requests[-1]
    assert "/genome/accession/GCF_000000001.1/download" in req["path"] and "GENOME_FASTA" in req["path"]
    assert req["headers"]["api-key"] == "k2"


def test_not_found_fails_at_once(ncbi, tmp_path):
    base, server = ncbi
    server.scripts["NC_999999.1"] = (b"", [404])
    with pytest.raises(InputError, match="HTTP 404.*not found"):
        fetch_genome(row("NC_999999.1"), gcfg(base), tmp_path, sleep=lambda s: None)
    assert len(server.requests) == 1


def test_gives_up_after_max_attempts(ncbi, tmp_path):
    base, server = ncbi
    server.scripts["NC_001416.1"] = (LAMBDA_FASTA, [503])
    waits = []
    with pytest.raises(InputError, match="after 3 attempts.*503"):
        fetch_genome(row("NC_001416.1"), gcfg(base, ncbi={"max_attempts": 3}), tmp_path, sleep=waits.append)
    assert waits == [0.5, 1.0] and len(server.requests) == 3


def test_payload_that_is_not_fasta_is_rejected(ncbi, tmp_path):
    base, server = ncbi
    server.scripts["NC_001416.1"] = (b"<html>Service unavailable</html>", ["ok"])
    with pytest.raises(InputError, match="neither FASTA"):
        fetch_genome(row("NC_001416.1"), gcfg(base), tmp_path, sleep=lambda s: None)
    assert not (tmp_path / "NC_001416.1.fna.gz").exists()


# ---- source: local -----------------------------------------------------------------------

def local_cfg(local_dir, mode="copy"):
    return {"table": "unused", "source": "local", "local_dir": str(local_dir), "local_mode": mode, "ncbi": {}}


@pytest.mark.parametrize("mode", ["copy", "symlink"])
def test_local_gzip_fasta_is_copied_or_linked(tmp_path, mode):
    src = SHARED / "NC_001416_lambda_phage.fa.gz"
    out = tmp_path / "out"
    info = fetch_genome(row("NC_001416.1", sha(src.read_bytes()), file=src.name), local_cfg(SHARED, mode), out)
    final = out / "NC_001416.1.fna.gz"
    assert final.is_symlink() == (mode == "symlink")
    assert final.read_bytes() == src.read_bytes() and info["sha256"] == info["source_sha256"]


def test_local_genbank_is_converted_to_gzip_fasta(tmp_path):
    info = fetch_genome(row("NC_000932.1", file="NC_000932_arabidopsis_chloroplast.gb.gz"), local_cfg(SHARED), tmp_path)
    (rid, seq), = iter_records(tmp_path / "NC_000932.1.fna.gz")
    assert rid == "NC_000932.1" and len(seq) == 154478 and info["records"] == 1
    again = tmp_path / "again"
    fetch_genome(row("NC_000932.1", file="NC_000932_arabidopsis_chloroplast.gb.gz"), local_cfg(SHARED), again)
    assert (again / "NC_000932.1.fna.gz").read_bytes() == (tmp_path / "NC_000932.1.fna.gz").read_bytes()


def test_local_checksum_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="sha256 mismatch"):
        fetch_genome(row("NC_001416.1", "f" * 64, file="NC_001416_lambda_phage.fa.gz"), local_cfg(SHARED), tmp_path)
    with pytest.raises(InputError, match="not found"):
        fetch_genome(row("NC_001416.1", file="nope.fa.gz"), local_cfg(SHARED), tmp_path)
    assert not (tmp_path / "NC_001416.1.fna.gz").exists()


def test_local_truncated_gzip_is_rejected(tmp_path):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    data = (SHARED / "dm3_upstream2000.fa.gz").read_bytes()
    (src_dir / "dm3.fa.gz").write_bytes(data[: len(data) // 40])
    with pytest.raises(InputError, match="truncated gzip"):
        fetch_genome(row("dm3", file="dm3.fa.gz"), local_cfg(src_dir), tmp_path / "out")
    assert not (tmp_path / "out" / "dm3.fna.gz").exists()
