"""Demo data are rebuilt bit-identically; prepare-dataset writes validated parquet splits;
fetch checks checksums (local trees and file:// downloads)."""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from vqdna.config import load_config
from vqdna.datasets.fetch import fetch_dataset, tree_digest
from vqdna.datasets.registry import load_registry, read_table
from vqdna.datasets.store import read_meta, read_split
from vqdna.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"


def test_demo_builder_is_deterministic_and_matches_registry(tmp_path):
    pytest.importorskip("Bio")
    out, reg = tmp_path / "datasets", tmp_path / "datasets.demo.tsv"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_demo_datasets.py"), "--genomes",
                    str(SHARED / "data" / "genomes"), "--out", str(out), "--registry", str(reg)],
                   check=True, capture_output=True)
    shipped = {r.name: r for r in read_table(ROOT / "config" / "datasets.demo.tsv")}
    rebuilt = {r.name: r for r in read_table(reg)}
    assert set(shipped) == set(rebuilt)
    for name, row in shipped.items():
        if row.format == "species":
            continue
        assert tree_digest(out / name) == row.sha256 == tree_digest(ROOT / row.source), name
    size = sum(p.stat().st_size for p in (ROOT / "data" / "demo" / "datasets").rglob("*") if p.is_file())
    assert size < 5_000_000


def test_prepare_dataset_cli(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    out = tmp_path / "emp_H3"
    r = subprocess.run([sys.executable, "-m", "vqdna", "prepare-dataset", "--config", str(ROOT / "config" / "config.yaml"),
                        "--dataset", "emp_H3", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = read_meta(out)
    assert meta["demo_stand_in"] is True and meta["metric"] == "mcc"
    assert {s: meta["splits"][s]["n"] for s in ("train", "dev", "test")} == {"train": 160, "dev": 40, "test": 40}
    assert meta["splits"]["train"]["label_counts"] == [80, 80]
    dev = read_split(out, "dev")
    with open(ROOT / "data/demo/datasets/emp_H3/dev.csv") as fh:
        first = fh.read().splitlines()[1].split(",")
    assert dev.sequences[0] == first[0] and int(dev.labels[0]) == int(first[1])


def test_prepare_dataset_bad_file_exits_2_and_names_line(tmp_path):
    src = tmp_path / "gue"
    src.mkdir()
    good = (ROOT / "data/demo/datasets/tf_0/dev.csv").read_text()
    for s in ("train", "dev"):
        (src / f"{s}.csv").write_text(good)
    lines = good.splitlines()
    lines[5] = lines[5].split(",")[0] + ",7"
    (src / "test.csv").write_text("\n".join(lines) + "\n")
    table = tmp_path / "datasets.tsv"
    header = (ROOT / "config/datasets.demo.tsv").read_text().splitlines()[2]
    table.write_text(header + f"\ntf_0\tTFP-H\tclassification\tmcc\t2\t100\tgue_csv\t{src}\t\t3\ttrue\tx\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "vqdna", "prepare-dataset", "--config", str(ROOT / "config/config.yaml"),
                        "--set", f"datasets.table={table}", "--dataset", "tf_0", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{src / 'test.csv'}:6: label 7 out of range 0..1" in r.stderr
    assert not out.exists()  # nothing half-written


def _spec(name, **kw):
    cfg = load_config([ROOT / "config" / "config.yaml"])
    return replace(load_registry(cfg)[name], **kw), cfg["datasets"]


def test_tree_digest_mismatch_is_refused(tmp_path):
    spec, dcfg = _spec("tf_1")
    directory, digests = fetch_dataset(spec, dcfg)
    assert digests == {"<tree>": spec.sha256}
    bad = replace(spec, sha256="0" * 64)
    with pytest.raises(InputError, match="does not match the registry"):
        fetch_dataset(bad, dcfg)


def test_url_fetch_checks_and_records_sha256(tmp_path):
    src = ROOT / "data/demo/datasets/prom_core_all"
    digest = hashlib.sha256((src / "train.csv").read_bytes()).hexdigest()
    spec, dcfg = _spec("prom_core_all", source=src.as_uri(), sha256=f"train.csv={digest}")
    dcfg = {**dcfg, "download_dir": str(tmp_path / "dl")}
    directory, digests = fetch_dataset(spec, dcfg)
    assert digests["train.csv"] == digest and (directory / "test.csv").read_bytes() == (src / "test.csv").read_bytes()
    assert "dev.csv" in (directory / "SHA256SUMS").read_text()  # unpinned files are recorded
    # a corrupted local copy no longer matches the recorded digest
    (directory / "dev.csv").write_text("sequence,label\n")
    with pytest.raises(InputError, match="does not match expected"):
        fetch_dataset(spec, dcfg)
    assert (directory / "dev.csv.bad").exists()
    # a wrong pin is refused
    wrong, _ = _spec("prom_core_all", source=src.as_uri(), sha256="train.csv=" + "1" * 64)
    with pytest.raises(InputError, match="does not match expected"):
        fetch_dataset(wrong, {**dcfg, "download_dir": str(tmp_path / "dl2")})
