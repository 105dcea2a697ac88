"""Table 9 (mask ratio) through the workflow, in copies of the repository (never in its results/):
the paper + ablations DAG lists one pretraining per non-main mask ratio (8 GPUs) and their
fine-tunes (1 GPU); a tiny variant on the demo data runs end to end into results/tables/table9.*."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_cluster_paper_dag import _job_resources

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _env(tmp_path: Path, repo: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
               PYTHONPATH=str(repo / "src"), HOME=str(tmp_path))
    return env


def _jobs(out: str) -> list[tuple[str, dict, str]]:
    """(rule, wildcards, shell command) of every job in a dry-run listing."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule \w+:)", out):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        wc = re.search(r"^\s*wildcards: (.*)$", block, re.M)
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        if rule:
            wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
            jobs.append((rule.group(1), wildcards, shell.group(1) if shell else ""))
    return jobs


def test_paper_ablation_dag_pretrains_and_finetunes_each_mask_ratio(tmp_path):
    from test_cluster_slurm import copy_repo

    repo = copy_repo(tmp_path / "repo")
    p = subprocess.run(
        [sys.executable, "-m", "snakemake", "all", "-n", "--profile", "profiles/slurm",
         "--configfile", "config/paper.yaml", "config/ablations.yaml"],
        cwd=repo, env=_env(tmp_path, repo), capture_output=True, text=True, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-8000:]
    jobs = _jobs(out)

    # one pretraining per ratio that differs from the main 25% (those rows are the vq/hrq backbones)
    variants = {f"{b}_mask_{r}" for b in ("vq", "hrq") for r in (15, 20, 30)}
    pretrains = [(w["variant"], cmd) for r, w, cmd in jobs if r == "pretrain_variant"]
    assert {v for v, _ in pretrains} == variants and len(pretrains) == 6
    for variant, cmd in pretrains:
        base = variant.split("_")[0]
        assert cmd.startswith("torchrun --standalone --nproc-per-node=8 -m vqdna pretrain"), cmd
        assert f"--variant {variant} --tokens results/tokens/{base} --tokenizer results/tokenizers/{base}" in cmd
        assert f"--out results/pretrain/{variant} " in cmd
    for rule, res in _job_resources(out):
        if rule in ("pretrain_variant", "pretrain"):
            assert "gpu=8" in res, (rule, res)
        if rule == "finetune":
            assert "gpu=1" in res, res

    # each variant: emp_H3 and covid, full grid (24 points) x 3 seeds, base tokenizer + own backbone
    ft = [(w, cmd) for r, w, cmd in jobs if r == "finetune" and w["tok"] in variants]
    assert {(w["tok"], w["dataset"]) for w, _ in ft} == {(v, d) for v in variants for d in ("emp_H3", "covid")}
    assert len(ft) == 6 * 2 * 24 * 3
    for w, cmd in ft:
        base = w["tok"].split("_")[0]
        assert f"--tokenizer-dir results/tokenizers/{base} --backbone-dir results/pretrain/{w['tok']} " in cmd
    summaries = {(w["tok"], w["dataset"]) for r, w, _ in jobs if r == "summarize_finetune"}
    assert {(v, d) for v in variants for d in ("emp_H3", "covid")} <= summaries
    assert {("vq", "emp_H3"), ("vq", "covid"), ("hrq", "emp_H3"), ("hrq", "covid")} <= summaries  # the 25% rows
    assert not any("mask_25" in w.get("tok", "") + w.get("variant", "") for _, w, _ in jobs)
    aggregate = out[out.index("rule aggregate:"):].split("\n\n", 1)[0]
    for v in variants:
        assert f"results/finetune/{v}/covid/summary.json" in aggregate


def _demo_overlay(repo: Path) -> list[str]:
    """The demo shrunk to what Table 9 needs: one genome, one hrq tokenizer, one variant, one dataset."""
    table = (repo / "config" / "genomes.demo.tsv").read_text().splitlines()
    keep = [ln for ln in table if ln.startswith("#") or ln.startswith("accession") or ln.startswith("NC_001416.1")]
    (repo / "config" / "genomes.lambda.tsv").write_text("\n".join(keep) + "\n")
    overlay = {
        "genomes": {"table": "config/genomes.lambda.tsv"},
        "shards": {"num_shards": {"train": 1, "valid": 1},
                   "split": {"by": "block", "block_size": 2000, "valid_fraction": 0.2, "seed": 0}},
        "tokenizers": {"train": ["hrq"],
                       "training": {"max_steps": 30, "warmup_steps": 10, "restart_every": 10,
                                    "checkpoint_every": 10, "log_every": 10, "valid_windows": 16}},
        "pretrain": {"steps": 10, "log_every": 5, "checkpoint_every": 5, "eval_batches": 1,
                     "variants": {"hrq_mask_15": {"tokenizer": "hrq", "mask_ratio": 0.15}}},
        "datasets": {"include": ["emp_H3", "covid"]},
        "finetune": {"tokenizers": [], "table1_tokenizers": [], "variant_datasets": ["emp_H3"],
                     "grid": {"lr": [1.0e-3], "lora_dropout": [0.0], "epochs": [1]}},
        "report": {"tokenizers": ["hrq"], "figure5": {"tokenizer": "none"}, "html": {"build": False}},
    }
    (repo / "config" / "table9_e2e.yaml").write_text(json.dumps(overlay))
    return ["--configfile", "config/config.yaml", "config/table9_e2e.yaml"]


def test_tiny_mask_variant_runs_end_to_end_into_table9(tmp_path):
    from test_cluster_slurm import copy_repo
    from test_report_latex import latex_structure_errors

    repo = copy_repo(tmp_path / "repo")
    p = subprocess.run(
        [sys.executable, "-m", "snakemake", "-c2", "results/tables/table9_mask_ratio.csv", *_demo_overlay(repo)],
        cwd=repo, env=_env(tmp_path, repo), capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, (p.stdout + p.stderr)[-8000:]
    results = repo / "results"
    # the variant trained on hrq's token files with its own ratio
    assert json.loads((results / "pretrain/hrq_mask_15/pretrain_metrics.json").read_text())["mask_ratio"] == 0.15
    assert json.loads((results / "pretrain/hrq/pretrain_metrics.json").read_text())["mask_ratio"] == 0.25
    assert not (results / "tokens/hrq_mask_15").exists() and not (results / "tokenizers/hrq_mask_15").exists()
    summary = json.loads((results / "finetune/hrq_mask_15/emp_H3/summary.json").read_text())
    assert summary["tokenizer"] == "hrq_mask_15" and summary["dataset"] == "emp_H3"

    with open(results / "tables/table9_mask_ratio.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16  # 4 ratios x {VQDNA, VQDNA-HRQ} x {emp_H3, covid}
    ran = [r for r in rows if r["status"] != "missing"]
    assert [(r["setting"], r["method"], r["dataset"]) for r in ran] == [("mask_15", "VQDNA-HRQ", "emp_H3")]
    (row,) = ran
    assert row["run"] == "hrq_mask_15" and float(row["mask_ratio"]) == 0.15
    assert float(row["ours_mean"]) == pytest.approx(100 * summary["test"]["mean"])
    assert float(row["paper"]) == pytest.approx(78.3)
    assert all(r["ours_mean"] == "" for r in rows if r is not row)  # missing, never 0
    tex = (results / "tables/table9_mask_ratio.tex").read_text()
    assert latex_structure_errors(tex, 10) == []
    assert "hrq\\_mask\\_15 & 15\\%" in tex
