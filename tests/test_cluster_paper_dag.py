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


def _dry_run(tmp_path, targets):
    from test_cluster_slurm import copy_repo

    repo = copy_repo(tmp_path / "repo")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(repo / "src"),
           "HOME": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-m", "snakemake", *targets, "--profile", "profiles/slurm", "-n",
         "--configfile", "config/paper.yaml"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-8000:]
    return out


def _check_gpus(jobs):
    for rule, res in jobs:
        gpu = re.search(r"\bgpu=(\d+)", res)
        if rule in ("train_tokenizer", "pretrain"):
            assert gpu and gpu.group(1) == "8", (rule, res)
        elif rule in ("finetune", "tokenize"):
            assert gpu and gpu.group(1) == "1", (rule, res)
        elif rule in ("download_genome", "shard_prepare", "shard_write", "summarize_finetune", "aggregate"):
            assert not gpu or gpu.group(1) == "0", (rule, res)


@pytest.fixture(scope="module")
def paper_all(tmp_path_factory):
    """One dry run of the whole paper DAG (about a minute) shared by the tests below."""
    return _dry_run(tmp_path_factory.mktemp("paper_dag"), ["all"])


def test_paper_stage_1_and_2_on_eight_gpus(paper_all):
    """Stage 1 and 2 of the paper config: 8 GPUs each, started by torchrun with 8 processes."""
    out = paper_all
    jobs = _job_resources(out)
    rules = {rule for rule, _ in jobs}
    assert {"download_genome", "train_tokenizer", "tokenize", "pretrain"} <= rules, sorted(rules)
    _check_gpus(jobs)
    assert "torchrun --standalone --nproc-per-node=8 -m vqdna train-tokenizer" in out
    assert "torchrun --standalone --nproc-per-node=8 -m vqdna pretrain" in out


def test_paper_dag_dry_run_through_slurm_profile(paper_all):
    """The issue's done-when: `snakemake --profile profiles/slurm -n all --configfile
    config/paper.yaml` lists the whole paper DAG with its GPUs."""
    out = paper_all
    jobs = _job_resources(out)
    rules = {rule for rule, _ in jobs}
    for rule in ("train_tokenizer", "pretrain", "prepare_dataset", "finetune"):
        assert rule in rules, f"no {rule} job in the paper DAG: {sorted(rules)}"
    _check_gpus(jobs)


def _job_resources(out: str) -> list[tuple[str, str]]:
    """(rule, resources line) of every job in a dry-run listing."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block)
        r = re.search(r"resources: ([^\n]*)", block)
        if m and r:
            jobs.append((m.group(1), r.group(1)))
    return jobs
