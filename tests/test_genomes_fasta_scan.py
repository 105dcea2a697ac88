"""The whole-chunk FASTA scan (vqdna.genomes.fasta_scan) gives exactly what the record-by-record
Biopython path gives: same .seq, same window index, same shards and manifest, same errors."""

import gzip
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from vqdna.errors import InputError
from vqdna.genomes import fasta_scan, prepare
from vqdna.genomes.plan import build_plan
from vqdna.genomes.prepare import prep_paths, prepare_genome
from vqdna.genomes.shard import build_manifest, write_all
from vqdna.genomes.table import GenomeRow
from vqdna.genomes.windows import WindowParams

ROOT = Path(__file__).resolve().parents[1]
GENOME_DIRS = [ROOT / "data" / "demo" / "genomes", ROOT.parent / "shared" / "data" / "genomes"]
REAL_FASTA = sorted({p.name: p for d in GENOME_DIRS for p in d.glob("*") if ".gb" not in p.name
                     and p.stat().st_size < 2_000_000}.values())
SHARDS = {"window": 64, "stride": 48, "num_shards": {"train": 3, "valid": 1}, "shuffle": True,
          "split": {"seed": 3, "valid_fraction": 0.2}}
POLICIES = [dict(iupac_policy="drop"), dict(iupac_policy="replace", n_split_min_run=4),
            dict(iupac_policy="drop", n_split_min_run=3, split_by="block", block_size=500)]


@pytest.fixture
def scan_calls(monkeypatch):
    """Count the scans that finished (a NotPlain fallback does not count)."""
    calls = []

    def counted(*a, **kw):
        out = original(*a, **kw)
        calls.append(out)
        return out

    original = fasta_scan.scan_fasta
    monkeypatch.setattr(prepare, "scan_fasta", counted)
    return calls


def prepared_files(path, tmp, reader, params):
    seq, idx = prep_paths(tmp / reader, "acc")
    seq.parent.mkdir(parents=True, exist_ok=True)
    prepare_genome(path, "acc", params, seq_out=seq, index_out=idx, fasta_reader=reader, batch_bases=5000)
    with np.load(idx) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    return seq.read_bytes(), arrays, meta


def assert_same_prepared(path, tmp, params):
    fast = prepared_files(path, tmp, "fast", params)
    bio = prepared_files(path, tmp, "biopython", params)
    assert fast[0] == bio[0], f"{path.name}: .seq differs"
    assert fast[1].keys() == bio[1].keys()
    for k in fast[1]:
        assert np.array_equal(fast[1][k], bio[1][k]), f"{path.name}: {k} differs"
    assert fast[2] == bio[2]
    return fast


def synthetic_fasta(seed: int) -> bytes:
    """Records with soft-masking, N runs of every length (also at record starts and ends),
    IUPAC codes in both cases, ragged line widths, blank lines and '>' inside descriptions."""
    rng = random.Random(seed)
    out = []
    for r in range(rng.randint(5, 25)):
        n = rng.choice([1, 7, 60, 333, 2000, 5000])
        seq = bytearray(rng.choice(b"ACGTacgt") for _ in range(n))
        for _ in range(rng.randint(0, 6)):
            a = rng.randrange(n)
            seq[a:a + rng.choice([1, 2, 3, 5, 40])] = rng.choice([b"N", b"n"]) * rng.choice([1, 2, 3, 5, 40])
        for _ in range(rng.randint(0, 3)):
            seq[rng.randrange(len(seq))] = rng.choice(b"RYSWKMBDHVrysw")
        if rng.random() < 0.2:
            seq[:3] = b"NNN"
        if rng.random() < 0.2:
            seq[-2:] = b"nN"
        width = rng.choice([10, 60, 61, 80, 10_000])
        lines = [bytes(seq[i:i + width]) for i in range(0, len(seq), width)]
        if rng.random() < 0.3 and len(lines) > 2:
            lines.insert(1, b"")  # a blank line inside the sequence
        out.append(b">rec%d some description > with 'quotes' %d\n" % (r, rng.randint(0, 9)) + b"\n".join(lines) + b"\n")
    return b"".join(out)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: "-".join(f"{v}" for v in p.values()))
@pytest.mark.parametrize("path", REAL_FASTA, ids=lambda p: p.name)
def test_real_genomes_prepare_identically(path, policy, tmp_path, scan_calls):
    assert_same_prepared(path, tmp_path, WindowParams(window=64, stride=48, **policy))
    assert len(scan_calls) == 1  # the scan itself ran, no fallback


@pytest.mark.parametrize("chunk", [7, 64, 1000, 1 << 20])
@pytest.mark.parametrize("seed", range(4))
def test_synthetic_soft_masked_n_and_iupac_at_any_chunk_size(seed, chunk, tmp_path, monkeypatch, scan_calls):
    monkeypatch.setattr(fasta_scan, "SCAN_CHUNK", chunk)
    path = tmp_path / "syn.fa.gz"
    path.write_bytes(gzip.compress(synthetic_fasta(seed)))
    for policy in POLICIES:
        _, _, meta = assert_same_prepared(path, tmp_path, WindowParams(window=16, stride=12, **policy))
    assert len(scan_calls) == len(POLICIES)
    assert meta["n_bases"] > 0 and meta["iupac_bases"] > 0  # the hard cases were there


def test_shards_and_manifest_identical_to_biopython_path(tmp_path, scan_calls):
    from vqdna.config import load_config

    cfg = load_config([ROOT / "config" / "config.yaml"])["shards"]
    cfg.update({k: v for k, v in SHARDS.items() if k != "split"})
    cfg["split"] = {**cfg["split"], **SHARDS["split"]}
    params = WindowParams.from_config(cfg)
    rows = [GenomeRow(accession=p.name.split(".")[0], species=p.name, category="x") for p in REAL_FASTA]
    manifests = {}
    for reader in ("fast", "biopython"):
        work = tmp_path / reader
        for row, path in zip(rows, REAL_FASTA):
            seq, idx = prep_paths(work / "prep", row.accession)
            prepare_genome(path, row.accession, params, seq_out=seq, index_out=idx, fasta_reader=reader)
        plan = build_plan(rows, work / "prep", cfg)
        write_all(plan, work)
        manifests[reader] = build_manifest(plan, work, cfg)
        shutil.rmtree(work / "prep")
    assert manifests["fast"]["shards"] == manifests["biopython"]["shards"]  # same sha256 per shard
    assert manifests["fast"]["splits"] == manifests["biopython"]["splits"]
    assert len(scan_calls) == len(REAL_FASTA)


@pytest.mark.parametrize("text,message", [
    (b">good\nACGTACGTAC\n>broken\nACGT\x00\x01ACGT\n", r"record 'broken'.*base 5.*non-FASTA"),
    (b">a\nACGT\n>empty\n>c\nACGT\n", r"record 'empty'.*empty sequence"),
    (b">a\nACGT\n>\nACGT\n", r"without a name after record 'a'"),
    (b">a\nACGTUACGT\n", r"record 'a'.*'U' at base 5"),
    (b">a\nACGT>ACGT\n", r"record 'a'.*'>' at base 5"),
    (b">a\nACGT\n>last\n", r"record 'last'.*empty sequence"),
])
def test_bad_input_errors_name_file_and_record(text, message, tmp_path, scan_calls):
    path = tmp_path / "bad.fa"
    path.write_bytes(text)
    seq, idx = prep_paths(tmp_path / "prep", "x")
    with pytest.raises(InputError, match=r"bad.fa.*" + message):
        prepare_genome(path, "x", WindowParams(window=4, stride=4), seq_out=seq, index_out=idx)
    assert not seq.exists() and not idx.exists() and not scan_calls


def test_truncated_gzip_is_reported_by_the_general_reader(tmp_path, scan_calls):
    data = gzip.compress(b"".join(synthetic_fasta(s) for s in range(20)))
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(data[: len(data) // 2])
    seq, idx = prep_paths(tmp_path / "prep", "x")
    with pytest.raises(InputError, match=r"cut.fa.gz.*corrupt or truncated gzip"):
        prepare_genome(path, "x", WindowParams(window=4, stride=4), seq_out=seq, index_out=idx)
    with pytest.raises(InputError) as bio:
        prepare_genome(path, "x", WindowParams(window=4, stride=4), seq_out=seq, index_out=idx,
                       fasta_reader="biopython")
    assert not scan_calls and not seq.exists()
    assert "truncated gzip" in str(bio.value)


def test_crlf_and_iupac_error_policy_fall_back_to_the_general_path(tmp_path, scan_calls):
    crlf = tmp_path / "crlf.fa"
    crlf.write_bytes(synthetic_fasta(2).replace(b"\n", b"\r\n"))
    plain = tmp_path / "plain.fa"
    plain.write_bytes(synthetic_fasta(2))
    params = WindowParams(window=16, stride=12)
    assert prepared_files(crlf, tmp_path / "a", "fast", params)[:1] == prepared_files(plain, tmp_path / "b", "fast", params)[:1]
    assert len(scan_calls) == 1  # only the plain file was scanned
    with pytest.raises(InputError, match=r"record 'rec\d+'.*IUPAC"):
        prepared_files(plain, tmp_path / "c", "fast", WindowParams(window=16, stride=12, iupac_policy="error"))


def test_record_ids_match_the_record_readers_naming():
    """Header first words as readers._record_id cuts them, for any mix of ASCII/str-only whitespace."""
    rng = random.Random(5)
    for _ in range(500):
        heads = [b">" + bytes(rng.choice(b"ab \t\x0b\x0c\r\x1c\x1f\x85\xff>x") for _ in range(rng.randint(1, 8))) + b"\n"
                 for _ in range(rng.randint(1, 6))]
        data = b"".join(heads)
        ends = np.cumsum([len(h) for h in heads]) - 1
        starts = ends - np.array([len(h) - 1 for h in heads])
        try:
            expected = [h[1:-1].split(None, 1)[0].decode("ascii", errors="replace") for h in heads]
        except IndexError:
            with pytest.raises(fasta_scan.NotPlain):
                fasta_scan._record_ids(memoryview(data), starts, ends)
            continue
        assert fasta_scan._record_ids(memoryview(data), starts, ends) == expected
