"""The grid point is chosen on dev; test values are read only for the chosen point."""

import pytest

from vqdna.finetune.grid import grid_points
from vqdna.finetune.summarize import build_summary

META = {"metric": "mcc", "family": "EMP", "task": "classification", "demo_stand_in": True}


class Sealed(dict):
    """A test-metric dict that records every read."""
    reads: list = []

    def __init__(self, point, values):
        super().__init__(values)
        self.point = point

    def __getitem__(self, key):
        Sealed.reads.append(self.point)
        return super().__getitem__(key)


def runs_for(points, seeds, dev, test):
    return {p["point"]: {s: {"dev": {"mcc": dev[p["point"]][k]}, "test": Sealed(p["point"], {"mcc": test[p["point"]][k]})}
                         for k, s in enumerate(seeds)} for p in points}


def test_selection_uses_dev_and_reads_test_only_for_the_winner():
    points = grid_points({"lr": [1e-5, 3e-5, 5e-5], "epochs": [4]})
    ids = [p["point"] for p in points]
    seeds = [0, 1]
    dev = {ids[0]: [0.50, 0.52], ids[1]: [0.70, 0.72], ids[2]: [0.60, 0.61]}
    test = {ids[0]: [0.99, 0.99], ids[1]: [0.40, 0.44], ids[2]: [0.95, 0.97]}  # test would favour ids[0]
    Sealed.reads = []
    s = build_summary(dataset="emp_H3", tokenizer="hrq", meta=META, points=points, seeds=seeds,
                      runs=runs_for(points, seeds, dev, test))
    assert s["best_point"] == ids[1] and s["best_params"] == {"lr": 3e-5, "epochs": 4}
    assert set(Sealed.reads) == {ids[1]}  # no other point's test metric was ever read
    assert s["test"]["per_seed"] == {"0": 0.40, "1": 0.44}
    assert s["test"]["mean"] == pytest.approx(0.42) and s["test"]["std"] == pytest.approx(0.02)
    assert s["test"]["n_seeds"] == 2
    assert [g["dev"] for g in s["grid"]] == pytest.approx([0.51, 0.71, 0.605])
    assert s["demo_stand_in"] is True and s["metric"] == "mcc" and s["family"] == "EMP"


def test_changing_test_values_never_changes_the_choice():
    points = grid_points({"lr": [1e-5, 3e-5], "lora_dropout": [0.0, 0.05]})
    ids = [p["point"] for p in points]
    dev = {i: [0.1 * k] for k, i in enumerate(ids)}
    picks = set()
    for shift in range(4):
        test = {i: [((k + shift) % 4) / 4] for k, i in enumerate(ids)}
        picks.add(build_summary(dataset="tf_0", tokenizer="vq", meta=META, points=points, seeds=[0],
                                runs=runs_for(points, [0], dev, test))["best_point"])
    assert picks == {ids[-1]}
