"""`vqdna aggregate` end to end on fixture result directories, Figure 1, and the MLflow curves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from vqdna.cli import main
from vqdna.config import load_config
from vqdna.report.aggregate import load_report_data
from vqdna.report.figures import bubble_chart, curves_figure, fetch_curves
from vqdna.report.names import TABLES, table_files
from vqdna.tracking import start_run

from test_report_tables import write_summary

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def empty_mlflow_db(tmp_path_factory):
    """An initialised MLflow sqlite store, made once: creating the schema takes seconds."""
    from vqdna.tracking import experiment_id, get_client

    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    cfg = {"tracking": {"uri": f"sqlite:///{db}", "experiment": "vqdna-demo"}}
    experiment_id(get_client(cfg), cfg)
    return db


@pytest.fixture
def fixture_run(tmp_path, monkeypatch, empty_mlflow_db):
    """A results/ tree with two tokenizers, some datasets finished, one partial, Table 1 inputs for hrq."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_mlflow_db, tmp_path / "mlflow.db")
    res = tmp_path / "results"
    write_summary(res / "finetune", "hrq", "emp_H3", {"0": 0.8})
    write_summary(res / "finetune", "vq", "emp_H3", {"0": 0.7})
    write_summary(res / "finetune", "hrq", "covid", {"0": 0.6}, metric="f1_macro", stand_in=True)
    (res / "probe" / "hrq").mkdir(parents=True)
    (res / "probe" / "hrq" / "covid.json").write_text(json.dumps({
        "tokenizer": "hrq", "dataset": "covid", "token_usage_pct": 75.0, "linear_probe": {"test_f1_macro": 0.3},
        "model": {"backbone_params": 1e6, "tokenizer_params": 2e5, "backbone_flops": 1e9,
                  "tokenizer_flops": 1e8, "pretrain_tokens": None}}))
    (res / "tokenizers" / "hrq").mkdir(parents=True)
    (res / "tokenizers" / "hrq" / "metrics.json").write_text(json.dumps({"valid_reconstruction_accuracy": 0.9}))
    overrides = ["tokenizers.train=[vq, hrq]", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                 f"report.paper_results={ROOT / 'data/paper/vqdna_paper_results.csv'}"]
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(load_config([ROOT / "config" / "config.yaml"], overrides)))
    return tmp_path, cfg_file


def test_aggregate_cli_writes_every_table(fixture_run):
    tmp_path, cfg_file = fixture_run
    rc = main(["aggregate", "--config", str(cfg_file), "--skip-figures"])
    assert rc == 0
    for path in table_files("results/tables"):
        assert (tmp_path / path).stat().st_size > 0, path
    manifest = json.loads((tmp_path / "results/tables/manifest.json").read_text())
    assert set(manifest["tables"]) == set(TABLES)
    # the demo fine-tunes hrq on every dataset (9 EMP ones missing here); vq only shows where it ran
    assert manifest["tables"]["table5_emp"]["missing"] == 9
    md = (tmp_path / "results/tables/table1_tokenizers.md").read_text()
    assert "75.00" in md and "missing" in md and "covid †" in md


def test_table9_reads_variant_runs_and_their_pretrain_metrics(fixture_run):
    """pretrain.variants in the config: a ratio's own run, and the main ratio read from its base."""
    tmp_path, cfg_file = fixture_run
    res = tmp_path / "results"
    write_summary(res / "finetune", "hrq_mask_15", "emp_H3", {"0": 0.75})
    for run, ratio in (("hrq_mask_15", 0.15), ("hrq", 0.25)):
        (res / "pretrain" / run).mkdir(parents=True)
        (res / "pretrain" / run / "pretrain_metrics.json").write_text(json.dumps({"mask_ratio": ratio}))
    cfg = load_config([cfg_file], ["pretrain.variants={hrq_mask_15: {tokenizer: hrq, mask_ratio: 0.15},"
                                   " hrq_mask_25: {tokenizer: hrq, mask_ratio: 0.25}}"])
    cfg_file.write_text(json.dumps(cfg))
    assert main(["aggregate", "--config", str(cfg_file), "--skip-figures"]) == 0
    rows = pd.read_csv(tmp_path / "results/tables/table9_mask_ratio.csv")
    hrq = rows[(rows["method"] == "VQDNA-HRQ") & (rows["dataset"] == "emp_H3")].set_index("setting")
    assert hrq.loc["mask_15", "run"] == "hrq_mask_15" and hrq.loc["mask_15", "mask_ratio"] == 0.15
    assert hrq.loc["mask_15", "ours_mean"] == pytest.approx(75.0)
    assert hrq.loc["mask_25", "run"] == "hrq" and hrq.loc["mask_25", "ours_mean"] == pytest.approx(80.0)
    assert hrq.loc["mask_25", "mask_ratio"] == 0.25
    assert hrq.loc["mask_20", "status"] == "missing" and pd.isna(hrq.loc["mask_20", "ours_mean"])


def test_aggregate_cli_rejects_unknown_dataset(fixture_run, capsys):
    tmp_path, cfg_file = fixture_run
    write_summary(tmp_path / "results" / "finetune", "hrq", "emp_H9", {"0": 0.5})
    assert main(["aggregate", "--config", str(cfg_file), "--skip-figures"]) == 2
    assert "emp_H9" in capsys.readouterr().err


def test_bubble_chart_labels_paper_models_and_ours(fixture_run):
    tmp_path, cfg_file = fixture_run
    cfg = load_config([cfg_file])
    data = load_report_data(cfg)
    bubble_chart(data, tmp_path / "fig1", max_area=1000, min_area=40)
    svg = (tmp_path / "fig1.svg").read_text()
    for label in ("NT-2500M-1000g [2537M]", "ours: hrq", "[1.2M]", "task family", "EMP", "CVC"):
        assert label in svg, label
    assert (tmp_path / "fig1.png").stat().st_size > 10000


def test_training_curves_from_mlflow(fixture_run):
    tmp_path, cfg_file = fixture_run
    cfg = load_config([cfg_file])
    with start_run(cfg, stage="train-tokenizer", name="train-tokenizer/hrq") as run:
        for step in range(5):
            run.log_metrics({"train/loss": 2.0 / (step + 1), "train/usage_pct_l0": 10.0 * step}, step=step)
    panels = fetch_curves(cfg, cfg["report"]["curves"]["panels"], max_runs=5)
    loss, usage, mlm = panels
    assert list(loss["series"]) == ["train-tokenizer/hrq: train/loss"]
    assert [v for _, v in usage["series"]["train-tokenizer/hrq: train/usage_pct_l0"]] == [0, 10, 20, 30, 40]
    assert mlm["series"] == {}  # no pretrain run: the panel says so instead of failing
    curves_figure(panels, tmp_path / "curves")
    svg = (tmp_path / "curves.svg").read_text()
    assert "code usage (%)" in svg and "no logged history" in svg
