"""Task metrics with the GLUE conventions, computed with scikit-learn and SciPy (no hub downloads).

Kinds (a task's ``metric`` field):

- ``accuracy``: accuracy (SST-2, MNLI matched / mismatched, QNLI, RTE, WNLI, intent and transfer sets);
- ``f1_accuracy``: F1 of the positive class (label id 1) and accuracy (MRPC, QQP);
- ``mcc``: Matthews correlation and accuracy (CoLA);
- ``pearson_spearman``: Pearson and Spearman correlation (STS-B, regression).

Correlations are undefined when predictions or gold scores are constant (an untrained regressor, a
one-example set); they are reported as 0.0 then rather than NaN, so tables and averages stay numeric.
All values are plain Python floats (JSON-ready).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError

#: The value a run is judged by, per metric kind (used for model selection and summary tables).
PRIMARY_METRIC: dict[str, str] = {
    "accuracy": "accuracy",
    "f1_accuracy": "f1",
    "mcc": "mcc",
    "pearson_spearman": "pearson",
}


def primary_metric(kind: str) -> str:
    """Key of the primary value in :func:`compute_metrics`'s result for ``kind``."""
    if kind not in PRIMARY_METRIC:
        raise UsageError(f"unknown metric '{kind}'; choose one of: {', '.join(PRIMARY_METRIC)}")
    return PRIMARY_METRIC[kind]


def _safe_corr(fn, predictions: np.ndarray, labels: np.ndarray) -> float:
    if len(predictions) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(predictions, labels)[0])
    return 0.0 if math.isnan(value) else value


def _classes(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 2:  # logits or probabilities: take the arg-max class
        array = array.argmax(-1)
    if array.ndim != 1:
        raise UsageError(f"{name} must be a 1-d array of class ids (or 2-d scores), got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise UsageError(f"{name} must be integer class ids for a classification metric")
        array = array.astype(np.int64)
    return array


def compute_metrics(kind: str, predictions: Sequence | np.ndarray, labels: Sequence | np.ndarray) -> dict[str, float]:
    """Metric values for one evaluation split.

    Args:
        kind (`str`): ``accuracy``, ``f1_accuracy``, ``mcc`` or ``pearson_spearman``.
        predictions (`array-like`): predicted class ids (or 2-d logits / probabilities), or scores for regression.
        labels (`array-like`): gold class ids, or gold scores for regression.

    Returns:
        `dict[str, float]`: e.g. ``{"accuracy": 0.9}``, ``{"f1": 0.8, "accuracy": 0.75}``,
        ``{"mcc": 0.4, "accuracy": 0.8}``, ``{"pearson": 0.85, "spearman": 0.84}``.
    """
    primary_metric(kind)  # validates kind
    if len(predictions) != len(labels):
        raise UsageError(f"{len(predictions)} predictions for {len(labels)} labels: the lengths must match")
    if len(labels) == 0:
        raise UsageError("cannot compute metrics on an empty set")
    if kind == "pearson_spearman":
        from scipy.stats import pearsonr, spearmanr

        preds = np.asarray(predictions, dtype=np.float64).reshape(len(labels), -1)[:, 0]
        gold = np.asarray(labels, dtype=np.float64)
        if not np.all(np.isfinite(preds)):
            raise UsageError("regression predictions contain NaN or infinite values")
        return {"pearson": _safe_corr(pearsonr, preds, gold), "spearman": _safe_corr(spearmanr, preds, gold)}
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    preds = _classes(predictions, "predictions")
    gold = _classes(labels, "labels")
    if np.any(gold < 0):
        raise UsageError("some gold labels are unknown (-1): this split has no published labels to score against")
    out = {}
    if kind == "f1_accuracy":
        out["f1"] = float(f1_score(gold, preds, pos_label=1, average="binary", zero_division=0.0))
    elif kind == "mcc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcc = float(matthews_corrcoef(gold, preds))
        out["mcc"] = 0.0 if math.isnan(mcc) else mcc
    out["accuracy"] = float(accuracy_score(gold, preds))
    return out
