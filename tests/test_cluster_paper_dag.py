"""Done-when of the cluster issue: the Slurm profile dry-runs the full paper DAG, with the GPUs of
each stage visible in the job list (8 for stage 1 and 2, 1 per fine-tune job)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_paper_dag_dry_run_through_slurm_profile(tmp_path):
    from test_cluster_slurm import copy_repo

    repo = copy_repo(tmp_path / "repo")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(repo / "src"),
           "HOME": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-m", "snakemake", "all", "--profile", "profiles/slurm", "-n",
         "--configfile", "config/paper.yaml"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-8000:]
    jobs = _job_resources(out)
    rules = {rule for rule, _ in jobs}
    for rule in ("train_tokenizer", "finetune"):
        assert rule in rules, f"no {rule} job in the paper DAG: {sorted(rules)}"
    for rule, res in jobs:
        gpu = re.search(r"\bgpu=(\d+)", res)
        if rule in ("train_tokenizer", "pretrain"):
            assert gpu and gpu.group(1) == "8", (rule, res)
        elif rule == "finetune":
            assert gpu and gpu.group(1) == "1", (rule, res)
        elif rule in ("download_genome", "shard_prepare", "shard_write", "summarize_finetune", "aggregate"):
            assert not gpu or gpu.group(1) == "0", (rule, res)


def _job_resources(out: str) -> list[tuple[str, str]]:
    """(rule, resources line) of every job in a dry-run listing."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block)
        r = re.search(r"resources: ([^\n]*)", block)
        if m and r:
            jobs.append((m.group(1), r.group(1)))
    return jobs
