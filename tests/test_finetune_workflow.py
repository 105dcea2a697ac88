"""Snakemake fan-out (dry runs on a temporary copy of the workflow): one job per dataset x grid
point x seed, and a dataset's target re-runs only that dataset's jobs."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not installed")


@pytest.fixture()
def workdir(tmp_path):
    for name in ("Snakefile", "workflow", "config", "data", "profiles", "src/vqdna/schemas"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, symlinks=True)  # workflow/schemas links to src/vqdna/schemas
        elif src.exists():
            shutil.copy2(src, tmp_path / name)
    # upstream stages already done: tokenizer and backbone exist
    for d in ("results/tokenizers/hrq", "results/pretrain/hrq"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "config.json").write_text("{}")
    return tmp_path


def dry_run(workdir: Path, *targets: str) -> list[tuple[str, dict]]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run(["snakemake", "-n", "-c1", *targets], cwd=workdir, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    jobs, rule = [], None
    for line in r.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and rule:
            jobs.append((rule, dict(kv.split("=", 1) for kv in m.group(1).split(", "))))
            rule = None
    return jobs


def grid_override(workdir: Path, lrs: str, seeds: str) -> list[str]:
    extra = workdir / "config" / "test_grid.yaml"
    extra.write_text(f"finetune:\n  grid: {{lr: {lrs}, lora_dropout: [0.0], epochs: [2]}}\n  seeds: {seeds}\n")
    return ["--configfile", "config/config.yaml", str(extra.relative_to(workdir))]


def test_single_dataset_target_fans_out_only_its_jobs(workdir):
    jobs = dry_run(workdir, "results/finetune/hrq/emp_H3/summary.json", *grid_override(workdir, "[1.0e-3, 3.0e-3]", "[0, 1]"))
    assert {w["dataset"] for _, w in jobs} == {"emp_H3"}
    ft = sorted((w["point"], w["seed"]) for r, w in jobs if r == "finetune")
    assert ft == [("lr0.001_do0_ep2", "0"), ("lr0.001_do0_ep2", "1"), ("lr0.003_do0_ep2", "0"), ("lr0.003_do0_ep2", "1")]
    assert sum(r == "summarize_finetune" for r, _ in jobs) == 1
    assert sum(r == "prepare_dataset" for r, _ in jobs) == 1


def test_changed_dataset_reruns_only_its_jobs(workdir):
    targets = [f"results/finetune/hrq/{d}/summary.json" for d in ("emp_H3", "tf_0")]
    # pretend both datasets are done (outputs newer than their inputs)
    time.sleep(0.01)
    for d in ("emp_H3", "tf_0"):
        (workdir / f"results/datasets/{d}").mkdir(parents=True)
        for f in ("meta.json", "train.parquet", "dev.parquet", "test.parquet"):
            (workdir / f"results/datasets/{d}/{f}").write_text("{}")
        run = workdir / f"results/finetune/hrq/{d}/runs/lr0.001_do0_ep2/seed0/metrics.json"
        run.parent.mkdir(parents=True)
        run.write_text("{}")
        (workdir / f"results/finetune/hrq/{d}/summary.json").write_text("{}")
    grid = grid_override(workdir, "[1.0e-3]", "[0]")
    assert dry_run(workdir, *targets, *grid) == []
    time.sleep(0.05)
    (workdir / "data/demo/datasets/tf_0/train.csv").touch()  # the source of tf_0 changed
    jobs = dry_run(workdir, *targets, *grid)
    assert jobs and {w["dataset"] for _, w in jobs} == {"tf_0"}
    assert sorted(r for r, _ in jobs) == ["finetune", "prepare_dataset", "summarize_finetune"]
