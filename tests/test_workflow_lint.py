"""The workflow passes Snakemake's own linter, and a bare `snakemake` builds what `snakemake all`
builds (the `all` rule is the default target)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _snakemake(repo: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(repo / "src"),
           "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from test_cluster_slurm import copy_repo

    return copy_repo(tmp_path_factory.mktemp("lint") / "repo")


def test_snakemake_lint_is_clean(repo, tmp_path):
    p = _snakemake(repo, tmp_path, "--lint")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    assert "Lints for" not in out, out[-4000:]


def _planned_jobs(out: str) -> dict[str, int]:
    table = out[out.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_bare_snakemake_builds_the_all_target(repo, tmp_path):
    bare = _snakemake(repo, tmp_path, "-n")
    named = _snakemake(repo, tmp_path, "-n", "all")
    assert bare.returncode == 0 and named.returncode == 0, (bare.stderr + named.stderr)[-4000:]
    jobs = _planned_jobs(bare.stdout + bare.stderr)
    assert jobs == _planned_jobs(named.stdout + named.stderr)
    assert jobs.get("all") == 1 and jobs.get("report_html") == 1 and jobs.get("finetune", 0) > 0, jobs
