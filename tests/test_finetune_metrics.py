"""Metrics against hand-computed values; grid expansion and the dev-only choice of a point."""

import math

import numpy as np
import pytest

from vqdna.errors import ConfigError
from vqdna.finetune.grid import grid_points, point_id, point_params, select_best
from vqdna.finetune.metrics import classification_metrics, compute_metrics, regression_metrics


def test_classification_metrics_by_hand():
    # TP=1 TN=2 FP=0 FN=1: MCC = (1*2 - 0*1) / sqrt(1*2*2*3) = 2/sqrt(12)
    m = classification_metrics([1, 1, 0, 0], [1, 0, 0, 0])
    assert m["mcc"] == pytest.approx(2 / math.sqrt(12))
    # class 1: P=1, R=1/2 -> F1 2/3; class 0: P=2/3, R=1 -> F1 4/5; macro = (2/3 + 4/5)/2
    assert m["f1_macro"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m["accuracy"] == pytest.approx(0.75)


def test_classification_from_logits_multiclass():
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    m = classification_metrics([0, 1, 2, 2], logits)  # argmax [0, 1, 2, 0]
    assert m["accuracy"] == pytest.approx(0.75)
    # per class F1: c0 P=1/2 R=1 -> 2/3; c1 1; c2 P=1 R=1/2 -> 2/3
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)


def test_spearman_by_hand():
    # prediction ranks [1,2,4,3]: d^2 sum 2 -> rho = 1 - 6*2/(4*15) = 0.8
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 40.0, 30.0])
    assert m["spearman"] == pytest.approx(0.8)
    assert m["mse"] == pytest.approx(np.mean([81, 324, 1369, 676]))
    assert regression_metrics([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])["spearman"] == 0.0  # constant: no order
    assert compute_metrics("regression", [1, 2, 3], [3, 2, 1])["spearman"] == pytest.approx(-1.0)
    assert compute_metrics("classification", [0, 1], [1, 0])["mcc"] == pytest.approx(-1.0)


def test_paper_grid_has_24_points():
    grid = {"lr": [1e-5, 3e-5, 5e-5], "lora_dropout": [0.0, 0.05], "epochs": [4, 6, 8, 10]}
    pts = grid_points(grid)
    assert len(pts) == 24 and len({p["point"] for p in pts}) == 24
    assert pts[0]["point"] == "lr1e-05_do0_ep4"
    assert point_params(grid, "lr3e-05_do0.05_ep8") == {"lr": 3e-5, "lora_dropout": 0.05, "epochs": 8}
    assert point_id({"lr": 5e-5, "epochs": 10}) == "lr5e-05_ep10"
    # key order in the config (or the sorted resolved JSON) does not change ids or grid order
    reordered = {"epochs": [4, 6, 8, 10], "lora_dropout": [0.0, 0.05], "lr": [1e-5, 3e-5, 5e-5]}
    assert grid_points(reordered) == pts
    with pytest.raises(ConfigError):
        point_params(grid, "lr1_do0_ep1")
    with pytest.raises(ConfigError):
        grid_points({"momentum": [0.9]})


def test_select_best_on_mean_dev_ties_to_earlier():
    order = ["a", "b", "c"]
    assert select_best({"a": [0.5, 0.7], "b": [0.9, 0.1], "c": [0.6, 0.6]}, order) == "a"  # 0.6 tie -> a
    assert select_best({"a": [float("nan")], "b": [0.1], "c": [0.0]}, order) == "b"
    with pytest.raises(ConfigError):
        select_best({"a": [float("nan")]}, order)
