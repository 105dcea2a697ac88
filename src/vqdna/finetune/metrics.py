"""Downstream metrics exactly as scikit-learn / scipy compute them (raw scale, not x100).

classification: `mcc` = matthews_corrcoef, `f1_macro` = f1_score(average="macro"),
`accuracy` = accuracy_score, on argmax predictions. regression: `spearman` = scipy.stats.spearmanr
correlation (0.0 when either side is constant, where scipy returns nan), plus `mse`.
"""

from __future__ import annotations

import math

import numpy as np

CLASSIFICATION = ("mcc", "f1_macro", "accuracy")
REGRESSION = ("spearman", "mse")


def classification_metrics(labels, logits_or_pred) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    labels = np.asarray(labels)
    pred = np.asarray(logits_or_pred)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    return {
        "mcc": float(matthews_corrcoef(labels, pred)),
        "f1_macro": float(f1_score(labels, pred, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(labels, pred)),
    }


def regression_metrics(targets, predictions) -> dict[str, float]:
    import warnings

    from scipy.stats import spearmanr

    targets = np.asarray(targets, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    with warnings.catch_warnings():  # constant input: handled below
        warnings.simplefilter("ignore")
        rho = spearmanr(targets, predictions).correlation
    return {
        # a constant prediction has no rank order: scipy says nan, we report no correlation
        "spearman": 0.0 if rho is None or math.isnan(rho) else float(rho),
        "mse": float(np.mean((targets - predictions) ** 2)),
    }


def compute_metrics(task: str, labels, outputs) -> dict[str, float]:
    if task == "regression":
        return regression_metrics(labels, outputs)
    return classification_metrics(labels, outputs)
