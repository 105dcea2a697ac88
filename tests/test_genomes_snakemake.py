"""download + shard through Snakemake on the demo config, in a temporary copy of the repo:
a re-run does nothing, and deleting one shard re-makes only that shard (and the manifest
that lists its checksum)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["shards"]  # the rule that lists the genome manifest, every shard and the shard manifest

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None and not (Path(sys.executable).parent / "snakemake").exists(),
                                reason="snakemake not installed")


def snakemake(workdir, *args):
    exe = shutil.which("snakemake") or str(Path(sys.executable).parent / "snakemake")
    # the copy's own package first: the jobs run exactly the code and schemas that were copied
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(workdir / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)  # the demo config's sqlite store inside the copy
    proc = subprocess.run([exe, "-c2", *args, *TARGETS], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    jobs = {}
    m = re.search(r"Job stats:\n(.*?)\n\n", output, re.S)
    if not m:
        return jobs
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp("repo")
    # everything the Snakefile reads at parse time (all rule files are included)
    for name in ("Snakefile", "workflow", "config", "src/vqdna", "data/demo", "profiles"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst


def test_download_and_shard_rerun_and_remake_one_shard(repo_copy):
    snakemake(repo_copy)
    manifest = json.loads((repo_copy / "results/shards/manifest.json").read_text())
    shards = manifest["shards"]
    assert manifest["splits"]["train"]["shards"] >= 2 and manifest["splits"]["valid"]["shards"] >= 1
    assert (repo_copy / "resources/genomes/manifest.tsv").read_text().count("\n") == 6  # header + 5 genomes

    dry = snakemake(repo_copy, "-n")
    assert "Nothing to be done" in dry, dry[-2000:]

    victim = next(s for s in shards if s["split"] == "train" and s["index"] == 1)
    (repo_copy / "results/shards" / victim["path"]).unlink()
    dry = snakemake(repo_copy, "-n")
    # that shard, the manifest listing its checksum, and the target rule itself
    assert planned_jobs(dry) == {"shard_write": 1, "shard_manifest": 1, "shards": 1}, dry[-2000:]
    assert "train/00001.arrow" in dry

    before = (repo_copy / "results/shards/manifest.json").read_bytes()
    snakemake(repo_copy)
    # the same bytes again: same checksum for every shard, so later stages see no change
    assert (repo_copy / "results/shards/manifest.json").read_bytes() == before
    assert json.loads(before)["shards"] == shards
    assert "Nothing to be done" in snakemake(repo_copy, "-n")
