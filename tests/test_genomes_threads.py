"""`shards.threads`: the read-ahead thread of the FASTA scan and the parallel shard writer give
exactly the files one thread gives, pass read errors on, and leave no thread behind."""

import copy
import gzip
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from vqdna.atomic import sha256_file
from vqdna.config import load_config, validate_config
from vqdna.errors import ConfigError, InputError
from vqdna.genomes import fasta_scan
from vqdna.genomes.plan import build_plan
from vqdna.genomes.prepare import prep_paths, prepare_genome
from vqdna.genomes.shard import build_manifest, write_all
from vqdna.genomes.table import GenomeRow
from vqdna.genomes.windows import WindowParams
from test_genomes_fasta_scan import REAL_FASTA, synthetic_fasta

ROOT = Path(__file__).resolve().parents[1]


def shards_cfg(threads: int) -> dict:
    cfg = copy.deepcopy(load_config([ROOT / "config" / "config.yaml"])["shards"])
    cfg.update({"window": 64, "stride": 48, "num_shards": {"train": 5, "valid": 2}, "threads": threads})
    cfg["split"] = {**cfg["split"], "seed": 3, "valid_fraction": 0.2}
    return cfg


def shard_all(work: Path, files: list[Path], cfg: dict, threads: int):
    """prepare + plan + write + manifest as `vqdna shard --step all` runs them."""
    rows = [GenomeRow(accession=f"g{i}", species=p.name, category="x") for i, p in enumerate(files)]
    params = WindowParams.from_config(cfg)
    for row, path in zip(rows, files):
        seq, idx = prep_paths(work / "prep", row.accession)
        prepare_genome(path, row.accession, params, seq_out=seq, index_out=idx, threads=threads)
    plan = build_plan(rows, work / "prep", cfg)
    checksums = write_all(plan, work, threads=threads)
    return plan, checksums, build_manifest(plan, work, cfg, checksums, threads=threads)


def file_bytes(work: Path) -> dict:
    """Every output file's bytes; the .npz by its arrays (zip entries carry a time stamp)."""
    out = {}
    for p in sorted(work.rglob("*")):
        if p.suffix == ".npz":
            with np.load(p) as z:
                out[str(p.relative_to(work))] = {k: z[k].tobytes() + str(z[k].dtype).encode() for k in z.files}
        elif p.is_file():
            out[str(p.relative_to(work))] = p.read_bytes()
    return out


def vqdna_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vqdna-")]


@pytest.mark.parametrize("chunk", [4096, 1 << 19])
def test_any_thread_count_writes_the_same_files(chunk, tmp_path, monkeypatch):
    monkeypatch.setattr(fasta_scan, "SCAN_CHUNK", chunk)  # small: the read-ahead queue fills and waits
    syn = tmp_path / "syn.fa.gz"
    syn.write_bytes(gzip.compress(b"".join(synthetic_fasta(s) for s in range(6))))
    files = [*REAL_FASTA, syn]
    results = {}
    for threads in (1, 2, 3):
        work = tmp_path / f"t{threads}"
        plan, checksums, manifest = shard_all(work, files, shards_cfg(threads), threads)
        results[threads] = (file_bytes(work), json.dumps(manifest, sort_keys=True))
        # hashed while writing = hashed from the files; the manifest lists them
        assert checksums == {s["path"]: sha256_file(work / s["path"]) for s in manifest["shards"]}
        assert len(checksums) == 7
        # and the manifest step alone (no checksums: files hashed `threads` at a time) agrees
        assert build_manifest(plan, work, shards_cfg(threads), threads=threads) == manifest
        assert "threads" not in manifest["config"]
    assert results[1][0].keys() == results[2][0].keys() == results[3][0].keys()
    assert any(k.endswith(".arrow") for k in results[1][0])
    assert results[1] == results[2] == results[3]
    assert not vqdna_threads()


def test_read_ahead_passes_a_truncated_gzip_on(tmp_path, monkeypatch):
    monkeypatch.setattr(fasta_scan, "SCAN_CHUNK", 1000)
    data = gzip.compress(b"".join(synthetic_fasta(s) for s in range(20)))
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(data[: len(data) // 2])
    with open(tmp_path / "sink", "wb") as sink, pytest.raises(fasta_scan.NotPlain, match="gzip"):
        fasta_scan.scan_fasta(path, sink, threads=2)
    seq, idx = prep_paths(tmp_path / "prep", "x")
    with pytest.raises(InputError, match=r"cut.fa.gz.*corrupt or truncated gzip"):
        prepare_genome(path, "x", WindowParams(window=4, stride=4), seq_out=seq, index_out=idx, threads=2)
    assert not vqdna_threads()


def test_read_ahead_stops_when_the_scan_gives_up_early(tmp_path, monkeypatch):
    """A bad byte in the first block: the scan stops while the reader is blocks ahead."""
    monkeypatch.setattr(fasta_scan, "SCAN_CHUNK", 512)
    text = b">bad\nACGT\x01ACGT\n" + b"".join(synthetic_fasta(s) for s in range(10))
    path = tmp_path / "bad.fa.gz"
    path.write_bytes(gzip.compress(text))
    with open(tmp_path / "sink", "wb") as sink, pytest.raises(fasta_scan.NotPlain, match="nucleotide"):
        fasta_scan.scan_fasta(path, sink, threads=2)
    assert not vqdna_threads()
    seq, idx = prep_paths(tmp_path / "prep", "x")
    with pytest.raises(InputError, match=r"bad.fa.gz.*record 'bad'.*base 5"):
        prepare_genome(path, "x", WindowParams(window=4, stride=4), seq_out=seq, index_out=idx, threads=2)


def test_read_ahead_yields_the_blocks_of_a_plain_read(tmp_path, monkeypatch):
    monkeypatch.setattr(fasta_scan, "SCAN_CHUNK", 777)
    text = b"".join(synthetic_fasta(s) for s in range(3))
    path = tmp_path / "x.fa.gz"
    path.write_bytes(gzip.compress(text))
    with gzip.open(path) as fh:
        plain = list(fasta_scan._read_blocks(fh))
    with gzip.open(path) as fh, fasta_scan._blocks(fh, 2) as blocks:
        ahead = list(blocks)
    assert ahead == plain and plain[-1] == b"" and b"".join(plain) == text
    assert len(plain) > fasta_scan.READ_AHEAD + 2  # the queue was full at times


def test_threads_key_default_and_bounds():
    cfg = load_config([ROOT / "config" / "config.yaml"])
    assert cfg["shards"]["threads"] == 2
    bad = copy.deepcopy(cfg)
    bad["shards"]["threads"] = 0
    with pytest.raises(ConfigError, match="threads"):
        validate_config(bad)

