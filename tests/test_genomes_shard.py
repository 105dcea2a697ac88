"""prepare -> plan -> write -> manifest on the real demo genomes, without Snakemake."""

import copy
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from vqdna.atomic import sha256_file
from vqdna.config import load_config, validate_config
from vqdna.errors import ConfigError, InputError
from vqdna.genomes.plan import build_plan, shard_names, split_order
from vqdna.genomes.prepare import prepare_genome, prep_paths
from vqdna.genomes.readers import iter_records
from vqdna.genomes.shard import build_manifest, write_all
from vqdna.genomes.shards_io import ascii_matrix, list_shards, open_shard, read_codes
from vqdna.genomes.table import read_genome_table
from vqdna.genomes.windows import WindowParams

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo" / "genomes"
BAD = ROOT.parent / "shared" / "data" / "bad_inputs"


def shards_cfg(**over):
    cfg = load_config([ROOT / "config" / "config.yaml"])["shards"]
    cfg = copy.deepcopy(cfg)
    cfg.update({"window": 256, "stride": 256, "num_shards": {"train": 7, "valid": 2}})
    cfg["split"] = {**cfg["split"], **over.pop("split", {})}
    cfg.update(over)
    return cfg


def genome_files(tmp_path):
    """The demo genomes, dm3 cut to its first 300 records (the rest is the same kind of data)."""
    files = {}
    for row in read_genome_table(ROOT / "config" / "genomes.demo.tsv"):
        src = DEMO / row.file
        if row.accession.startswith("dm3"):
            dst = tmp_path / "dm3_head.fa"
            with gzip.open(src, "rt") as fh:
                lines, n = [], 0
                for line in fh:
                    n += line.startswith(">")
                    if n > 300:
                        break
                    lines.append(line)
            dst.write_text("".join(lines))
            src = dst
        files[row.accession] = src
    return files


def shard_everything(tmp_path, scfg, out_name="shards"):
    rows = read_genome_table(ROOT / "config" / "genomes.demo.tsv")
    files = genome_files(tmp_path)
    out = tmp_path / out_name
    params = WindowParams.from_config(scfg)
    for row in rows:
        seq, idx = prep_paths(out / "prep", row.accession)
        prepare_genome(files[row.accession], row.accession, params, seq_out=seq, index_out=idx)
    plan = build_plan(rows, out / "prep", scfg)
    write_all(plan, out)
    return plan, build_manifest(plan, out, scfg), files, out


def test_shards_hold_exactly_the_source_windows(tmp_path):
    scfg = shards_cfg()
    plan, manifest, files, out = shard_everything(tmp_path, scfg)
    source = {acc: {rid: seq.upper() for rid, seq in iter_records(p)} for acc, p in files.items()}
    seen = set()
    total = 0
    for split in ("train", "valid"):
        for path in list_shards(out, split):
            table = open_shard(path)
            assert table.schema.field("sequence").type.byte_width == 256
            seqs = ascii_matrix(table)
            assert set(np.unique(seqs).tobytes()) <= set(b"ACGT")  # no N, no IUPAC, no lower case
            for i, (acc, rid, start) in enumerate(zip(table["accession"].to_pylist(), table["record_id"].to_pylist(),
                                                      table["start"].to_pylist())):
                assert seqs[i].tobytes() == source[acc][rid][start:start + 256]
                key = (acc, rid, start)
                assert key not in seen  # no window twice, and never in both splits
                seen.add(key)
            total += table.num_rows
            codes = read_codes(path)
            assert codes.shape == seqs.shape and codes.max() <= 3
    assert total == manifest["splits"]["train"]["windows"] + manifest["splits"]["valid"]["windows"]
    # every shard but a split's last is full; checksums match the files
    for entry in manifest["shards"]:
        assert entry["sha256"] == sha256_file(out / entry["path"])
        assert entry["bases"] == entry["rows"] * 256
    species = {g["species"] for g in manifest["genomes"]}
    assert "Homo sapiens" in species and len(species) == 5
    # shuffle: the first train shard mixes genomes
    assert len(set(open_shard(list_shards(out, "train")[0])["accession"].to_pylist())) > 1


def test_human_n_runs_never_inside_a_window(tmp_path):
    scfg = shards_cfg()
    _plan, _m, files, out = shard_everything(tmp_path, scfg)
    (_rid, human), = iter_records(files["GRCh37_chr1_240kb"])
    is_n = np.frombuffer(human.upper(), np.uint8) == ord("N")
    starts = []
    for split in ("train", "valid"):
        for path in list_shards(out, split):
            t = open_shard(path)
            starts += [s for a, s in zip(t["accession"].to_pylist(), t["start"].to_pylist()) if a == "GRCh37_chr1_240kb"]
    assert starts and min(starts) >= 10000  # the first 10 kb are N
    assert not any(is_n[s:s + 256].any() for s in starts)


def test_same_config_same_shards_other_seed_other_split(tmp_path):
    scfg = shards_cfg()
    _p1, m1, _f, _o = shard_everything(tmp_path, scfg, "a")
    _p2, m2, _f, _o = shard_everything(tmp_path, scfg, "b")
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    _p3, m3, _f, _o = shard_everything(tmp_path, shards_cfg(split={"seed": 7}), "c")
    assert [g["windows"] for g in m1["genomes"]] != [g["windows"] for g in m3["genomes"]]


def test_split_by_record_keeps_records_whole(tmp_path):
    scfg = shards_cfg(split={"by": "record", "valid_fraction": 0.2}, shuffle=False)
    _plan, _m, _files, out = shard_everything(tmp_path, scfg)
    by_split = {}
    for split in ("train", "valid"):
        recs = set()
        for path in list_shards(out, split):
            t = open_shard(path)
            recs |= set(zip(t["accession"].to_pylist(), t["record_id"].to_pylist()))
        by_split[split] = recs
    assert by_split["valid"] and not (by_split["train"] & by_split["valid"])


def test_unshuffled_order_follows_the_table(tmp_path):
    scfg = shards_cfg(shuffle=False)
    plan, _m, _files, out = shard_everything(tmp_path, scfg)
    assert split_order(plan, "train") is None
    accs = []
    for path in list_shards(out, "train"):
        accs += open_shard(path)["accession"].to_pylist()
    order = [g["accession"] for g in plan["genomes"]]
    firsts = [accs.index(a) for a in order if a in accs]
    assert firsts == sorted(firsts)


def test_a_bad_record_stops_prepare_and_names_it(tmp_path):
    params = WindowParams.from_config(shards_cfg())
    bad = tmp_path / "bad.fa"
    bad.write_bytes(b">good\nACGTACGTAC\n>broken\nACGT\x00\x01ACGT\n")
    seq, idx = prep_paths(tmp_path / "prep", "x")
    with pytest.raises(InputError, match=r"bad.fa \(record 'broken'\).*base 5.*non-FASTA"):
        prepare_genome(bad, "x", params, seq_out=seq, index_out=idx)
    assert not seq.exists() and not idx.exists()  # nothing that looks finished
    with pytest.raises(InputError, match="NP_001832.1.*protein"):
        prepare_genome(BAD / "blank_seq.gb", "x", params, seq_out=seq, index_out=idx)


def test_iupac_error_policy_names_record_and_base(tmp_path):
    params = WindowParams.from_config(shards_cfg(iupac_policy="error"))
    f = tmp_path / "iupac.fa"
    f.write_text(">r1\nACGTACGT\n>r2\nACGTACGTACGTRACGT\n")
    seq, idx = prep_paths(tmp_path / "prep", "x")
    with pytest.raises(InputError, match=r"record 'r2'.*'R' at base 13"):
        prepare_genome(f, "x", params, seq_out=seq, index_out=idx)


def test_empty_valid_split_is_a_config_error(tmp_path):
    scfg = shards_cfg(split={"valid_fraction": 0.0})
    with pytest.raises(ConfigError, match="valid.*0 windows.*num_shards"):
        shard_everything(tmp_path, scfg)


def test_shards_split_the_windows_evenly(tmp_path):
    plan, manifest, _f, _o = shard_everything(tmp_path, shards_cfg())
    for split, k in (("train", 7), ("valid", 2)):
        rows = [s["rows"] for s in manifest["shards"] if s["split"] == split]
        assert len(rows) == k and sum(rows) == plan["splits"][split]["windows"]
        assert max(rows) - min(rows) <= 1


@pytest.mark.parametrize("key,value,message", [
    ("iupac_policy", "ignore", "iupac_policy"),
    ("window", 0, "window"),
    ("windw", 5, "windw"),
])
def test_schema_rejects_bad_shard_keys(key, value, message):
    cfg = load_config([ROOT / "config" / "config.yaml"])
    cfg["shards"][key] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_schema_rejects_bad_genome_source():
    cfg = load_config([ROOT / "config" / "config.yaml"])
    cfg["genomes"]["source"] = "ftp"
    with pytest.raises(ConfigError, match="genomes.source"):
        validate_config(cfg)


def test_plan_is_small_json(tmp_path):
    plan, _m, _f, out = shard_everything(tmp_path, shards_cfg())
    assert json.loads(json.dumps(plan)) == plan
    assert len(shard_names(plan)) == plan["splits"]["train"]["shards"] + plan["splits"]["valid"]["shards"]
