"""`vqdna finetune` x 2 grid points then `vqdna summarize`: metrics.json per job, summary.json per
the contract, and one MLflow parent run per dataset with the job runs as its children."""

import json
from argparse import Namespace
from pathlib import Path

import pytest

from vqdna.config import load_config
from vqdna.datasets.gue import load_gue
from vqdna.datasets.registry import load_registry
from vqdna.datasets.store import write_prepared
from vqdna.finetune import run as ft_run
from vqdna.finetune import summarize as ft_summarize
from vqdna.finetune.grid import grid_points
from vqdna.finetune.tiny import save_tiny_backbone
from vqdna.tokenizers.onehot import OneHotTokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_finetune_jobs_then_summary_with_mlflow_parent(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config([ROOT / "config" / "config.yaml"], [
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "finetune.grid.lr=[1.0e-3, 3.0e-3]",
        "finetune.grid.epochs=[1]", "finetune.seeds=[0]", "finetune.train_max_tokens=32"])
    tok = OneHotTokenizer()
    tok.save_pretrained(tmp_path / "tok")
    save_tiny_backbone(tmp_path / "bb", tok, seed=0)
    spec = load_registry(cfg)["eep_jurkat"]  # regression path: Spearman
    from vqdna.datasets.eep import load_eep

    splits, _ = load_eep(ROOT / spec.source, spec, cfg["datasets"]["eep"], non_acgt="error", seed=0)
    splits = {k: v.subset(range(min(len(v), 40))) for k, v in splits.items()}
    meta = {"task": "regression", "num_labels": 1, "metric": "spearman", "family": "EEP", "demo_stand_in": True}
    write_prepared(tmp_path / "data", splits, meta)
    runs = tmp_path / "ft" / "runs"
    points = grid_points(cfg["finetune"]["grid"])
    for p in points:
        args = Namespace(tokenizer="onehot", dataset="eep_jurkat", point=p["point"], seed=0, data=str(tmp_path / "data"),
                         tokenizer_dir=str(tmp_path / "tok"), backbone_dir=str(tmp_path / "bb"),
                         out=str(runs / p["point"] / "seed0" / "metrics.json"))
        assert ft_run.run(args, cfg) == 0
        rec = json.loads(Path(args.out).read_text())
        assert rec["params"] == p["params"] and set(rec["dev"]) == {"spearman", "mse"} and rec["mlflow_run_id"]
    out = tmp_path / "ft" / "summary.json"
    assert ft_summarize.run(Namespace(tokenizer="onehot", dataset="eep_jurkat", runs=str(runs), data=str(tmp_path / "data"),
                                      out=str(out)), cfg) == 0
    s = json.loads(out.read_text())
    for key in ("dataset", "tokenizer", "family", "task", "metric", "demo_stand_in", "grid", "best_point",
                "best_params", "test", "mlflow"):
        assert key in s
    assert s["metric"] == "spearman" and s["demo_stand_in"] is True and len(s["grid"]) == 2
    assert s["best_point"] in {p["point"] for p in points} and s["test"]["n_seeds"] == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.get_run(s["mlflow"]["parent_run_id"])
    assert parent.data.tags["mlflow.runName"] == "dataset/onehot/eep_jurkat"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 and {c.data.tags["grid_point"] for c in children} == {p["point"] for p in points}


def test_missing_run_is_a_clear_error(tmp_path):
    from vqdna.errors import InputError

    with pytest.raises(InputError, match="fine-tune run missing"):
        ft_summarize.read_runs(tmp_path, [{"point": "lr0.001_do0_ep2", "params": {}}], [0])
