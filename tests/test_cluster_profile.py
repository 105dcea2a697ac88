"""Profiles, per-stage resources and the multi-GPU / multi-node launch line (no scheduler needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vqdna.cluster import launch, profile, resources
from vqdna.config import load_config
from vqdna.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["download", "shard", "train-tokenizer", "tokenize", "pretrain", "prepare-dataset",
          "finetune", "summarize", "probe", "aggregate"]


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_every_stage_has_resources(name):
    cfg = load_config([ROOT / "config" / name])
    assert sorted(cfg["cluster"]["resources"]) == sorted(STAGES)
    for stage in STAGES:
        r = resources.snakemake_resources(cfg, stage)
        assert r["mem_mb"] > 0 and r["runtime"] > 0 and r["cpus_per_task"] >= 1


def test_demo_asks_no_gpu_paper_asks_eight_for_stage_1_and_2():
    demo = load_config([ROOT / "config" / "config.yaml"])
    paper = load_config([ROOT / "config" / "paper.yaml"])
    assert all(not resources.snakemake_resources(demo, s).get("gpu") for s in STAGES)
    assert resources.snakemake_resources(paper, "train-tokenizer")["gpu"] == 8
    assert resources.snakemake_resources(paper, "pretrain")["gpu"] == 8
    assert resources.snakemake_resources(paper, "finetune")["gpu"] == 1
    for cpu_stage in ("download", "shard", "prepare-dataset", "summarize", "aggregate"):
        assert "gpu" not in resources.snakemake_resources(paper, cpu_stage)


def test_misspelt_resource_key_is_an_error():
    with pytest.raises(ConfigError, match="cluster.resources.pretrain"):
        load_config([ROOT / "config" / "config.yaml"], ["cluster.resources.pretrain.gpus=2"])
    with pytest.raises(ConfigError, match="cluster.resources"):
        load_config([ROOT / "config" / "config.yaml"], ["cluster.resources.pretrian={gpu: 2}"])


def _cfg(**stage):
    return {"cluster": {"resources": {"pretrain": stage}}}


def test_launch_lines():
    rc = "results/config.resolved.json"
    assert resources.launch_command(_cfg(), "pretrain", rc) == f"vqdna pretrain --config {rc}"
    assert resources.launch_command(_cfg(gpu=1), "pretrain", rc) == f"vqdna pretrain --config {rc}"
    assert resources.launch_command(_cfg(gpu=8), "pretrain", rc) == (
        f"torchrun --standalone --nproc-per-node=8 -m vqdna pretrain --config {rc}")
    multi = resources.launch_command(_cfg(gpu=4, nodes=2), "pretrain", rc)
    assert multi.startswith("srun --nodes=2 --ntasks-per-node=1 ")
    assert "python -m vqdna.cluster.launch --nproc-per-node=4 --port=29500 -- pretrain --config" in multi
    # no braces: the line is part of a Snakemake shell template
    assert "{" not in multi and "}" not in multi


def test_gpu_model_and_multi_node_resources():
    one = resources.snakemake_resources(_cfg(gpu=2, gpu_model="a100", mem_mb=10), "pretrain")
    assert one == {"gpu": 2, "gpu_model": "a100", "mem_mb": 10}
    multi = resources.snakemake_resources(_cfg(gpu=8, gpu_model="h100", nodes=2, slurm_extra="--qos=long"), "pretrain")
    assert "gpu" not in multi  # the plugin's --gpus is a per-job total; ask per node instead
    assert multi["slurm_extra"] == "--gpus-per-node=h100:8 --qos=long"
    assert multi["nodes"] == 2 and multi["tasks"] == 2 and multi["mpi"] == "srun"


def test_multi_node_torchrun_from_slurm_environment():
    env = {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242"}
    argv = launch.torchrun_argv(["pretrain", "--config", "c.json"], 8, 29500, env)
    assert argv[:5] == ["torchrun", "--nnodes=2", "--node-rank=1", "--nproc-per-node=8", "--rdzv-backend=c10d"]
    assert "--rdzv-endpoint=gpu07:29500" in argv and "--rdzv-id=4242" in argv
    assert argv[-5:] == ["-m", "vqdna", "pretrain", "--config", "c.json"]
    assert launch._parse_first("node1,node2") == "node1"
    assert launch._parse_first("a[3,5-6],b1") == "a3"
    with pytest.raises(SystemExit, match="SLURM_NNODES"):
        launch.torchrun_argv(["pretrain"], 8, 29500, {})


def test_slurm_profile_keys():
    prof = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert prof["executor"] == "slurm"
    assert prof["slurm-status-command"] == "squeue"  # works without slurmdbd/sacct
    assert prof["jobs"] > 0 and prof["retries"] >= 1 and prof["latency-wait"] > 0
    assert "gpu" not in prof["default-resources"]  # CPU stages ask for no GPU
    local = yaml.safe_load((ROOT / "profiles" / "local" / "config.yaml").read_text())
    assert "executor" not in local


def test_install_profile_links_by_name(tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    p = subprocess.run([sys.executable, "-m", "vqdna", "install-profile"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    link = tmp_path / "xdg" / "snakemake" / "slurm"
    assert link.is_symlink() and link.resolve() == (ROOT / "profiles" / "slurm").resolve()
    # idempotent; a foreign profile of that name is kept unless --force
    assert subprocess.run([sys.executable, "-m", "vqdna", "install-profile"], cwd=ROOT, env=env,
                          capture_output=True).returncode == 0
    other = tmp_path / "other"
    (other / "slurm").mkdir(parents=True)
    (other / "slurm" / "config.yaml").write_text("executor: slurm\n")
    p = subprocess.run([sys.executable, "-m", "vqdna", "install-profile", "slurm", "--source", str(other)],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "--force" in p.stderr
    p = subprocess.run([sys.executable, "-m", "vqdna", "install-profile", "slurm", "--copy", "--force",
                        "--dest", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 0 and (tmp_path / "site" / "slurm" / "config.yaml").is_file()
    assert not (tmp_path / "site" / "slurm").is_symlink()


def test_snakemake_finds_installed_profile_by_name(tmp_path):
    """The literal `snakemake --profile slurm` resolves to the installed profile from the repo root."""
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    profile.install("slurm", ROOT / "profiles", tmp_path / "xdg" / "snakemake")
    code = ("import os, sys; os.chdir(sys.argv[1]); from snakemake.cli import get_profile_dir; "
            "print(get_profile_dir('slurm')[1])")
    p = subprocess.run([sys.executable, "-c", code, str(ROOT)], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert Path(p.stdout.strip()).resolve() == (ROOT / "profiles" / "slurm" / "config.yaml").resolve()


def test_conda_env_mirrors_pyproject():
    import re
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "vqdna.yaml").read_text())["dependencies"]
    names = {re.split(r"[<>=!]", d)[0] for d in env if isinstance(d, str)}
    alias = {"torch": "pytorch", "snakemake": "snakemake-minimal", "matplotlib": "matplotlib-base",
             "isal": "python-isal"}
    missing = [d for d in deps if alias.get(n := re.split(r"[<>=!\[ ]", d)[0], n) not in names]
    assert not missing, f"pyproject dependencies missing from workflow/envs/vqdna.yaml: {missing}"
