"""Downstream metrics exactly as scikit-learn / scipy compute them (raw scale, not x100).

classification: `mcc` = matthews_corrcoef, `f1_macro` = f1_score(average="macro", zero_division=0),
`accuracy` = accuracy_score, on argmax predictions. regression: `spearman` = scipy.stats.spearmanr
correlation (0.0 when either side is constant, where scipy returns nan), plus `mse`.

The classification metrics are computed here with numpy, following scikit-learn's own arithmetic
step by step (tests/test_finetune_metrics.py checks bitwise equality with scikit-learn): importing
`sklearn.metrics` costs every fine-tune job about a second of CPU (it pulls sklearn.base,
scipy.sparse and rich), more than the metrics themselves.
"""

from __future__ import annotations

import math

import numpy as np

CLASSIFICATION = ("mcc", "f1_macro", "accuracy")
REGRESSION = ("spearman", "mse")


def _confusion(labels: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Counts C[i, j] = #(true class i, predicted class j) over the classes present in either
    (sklearn's LabelEncoder over both + confusion_matrix), sorted like np.unique."""
    classes, encoded = np.unique(np.concatenate([labels, pred]), return_inverse=True)
    k = len(classes)
    t, p = encoded[:len(labels)], encoded[len(labels):]
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def classification_metrics(labels, logits_or_pred) -> dict[str, float]:
    labels = np.asarray(labels).reshape(-1)
    pred = np.asarray(logits_or_pred)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    pred = pred.reshape(-1)
    if len(labels) != len(pred) or len(labels) == 0:
        raise ValueError(f"need equally many labels and predictions, got {len(labels)} and {len(pred)}")
    C = _confusion(labels, pred)

    # matthews_corrcoef (sklearn.metrics._classification)
    t_sum = C.sum(axis=1, dtype=np.float64)
    p_sum = C.sum(axis=0, dtype=np.float64)
    n_correct = np.trace(C, dtype=np.float64)
    n_samples = p_sum.sum()
    cov_ytyp = n_correct * n_samples - np.dot(t_sum, p_sum)
    cov_ypyp = n_samples**2 - np.dot(p_sum, p_sum)
    cov_ytyt = n_samples**2 - np.dot(t_sum, t_sum)
    cov_ypyp_ytyt = cov_ypyp * cov_ytyt
    mcc = 0.0 if cov_ypyp_ytyt == 0 else float(cov_ytyp / np.sqrt(cov_ypyp_ytyt))

    # f1_score(average="macro", zero_division=0): per class 2*tp / (true + pred), 0 where the
    # class is neither true nor predicted (cannot happen here: classes come from the data), mean
    tp = np.diag(C)
    denom = 1.0 * t_sum + p_sum
    zero = denom == 0
    denom[zero] = 1
    f = (2.0 * tp.astype(np.float64)) / denom
    f[zero] = 0.0
    f1 = float(np.nanmean(f))

    # accuracy_score: the mean of a boolean array
    accuracy = float(np.average(labels == pred))
    return {"mcc": mcc, "f1_macro": f1, "accuracy": accuracy}


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
