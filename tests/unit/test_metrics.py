"""Metrics against hand-computed values (and SciPy for the correlations)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from advtune.errors import UsageError
from advtune.evaluation.metrics import PRIMARY_METRIC, compute_metrics, primary_metric

PREDS = [1, 1, 0, 1, 0]
GOLD = [1, 0, 0, 1, 1]  # TP=2 FP=1 FN=1 TN=1


def test_accuracy_by_hand():
    out = compute_metrics("accuracy", [0, 1, 1, 0], [0, 1, 0, 0])
    assert out == {"accuracy": 0.75}
    assert type(out["accuracy"]) is float


def test_f1_accuracy_by_hand():
    out = compute_metrics("f1_accuracy", PREDS, GOLD)
    # precision = recall = 2/3 -> F1 = 2/3; accuracy 3/5
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["accuracy"] == pytest.approx(0.6)
    assert set(out) == {"f1", "accuracy"}


def test_f1_is_positive_class_not_macro():
    # all-negative predictions: positive-class F1 is 0 although accuracy is 2/3
    out = compute_metrics("f1_accuracy", [0, 0, 0], [0, 0, 1])
    assert out["f1"] == 0.0 and out["accuracy"] == pytest.approx(2 / 3)


def test_mcc_by_hand():
    out = compute_metrics("mcc", PREDS, GOLD)
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2) = 1/6
    assert out["mcc"] == pytest.approx(1 / 6)
    assert out["accuracy"] == pytest.approx(0.6)


def test_mcc_constant_predictions_is_zero_not_nan():
    out = compute_metrics("mcc", [1, 1, 1, 1], [0, 1, 0, 1])
    assert out["mcc"] == 0.0


def test_pearson_spearman_match_scipy_and_hand():
    preds = np.array([1.0, 2.0, 3.0, 4.0])
    gold = np.array([2.0, 4.0, 6.0, 9.0])
    out = compute_metrics("pearson_spearman", preds, gold)
    dp, dg = preds - preds.mean(), gold - gold.mean()
    by_hand = float((dp * dg).sum() / math.sqrt((dp**2).sum() * (dg**2).sum()))
    assert out["pearson"] == pytest.approx(by_hand)
    assert out["pearson"] == pytest.approx(pearsonr(preds, gold)[0])
    assert out["spearman"] == pytest.approx(1.0)  # monotone
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    out = compute_metrics("pearson_spearman", a, b)
    assert out["spearman"] == pytest.approx(spearmanr(a, b)[0])
    assert out["pearson"] == pytest.approx(pearsonr(a, b)[0])


def test_regression_accepts_column_vector_predictions():
    out = compute_metrics("pearson_spearman", np.array([[1.0], [2.0], [3.0]]), [1.0, 2.0, 4.0])
    assert out["spearman"] == pytest.approx(1.0)


def test_constant_regression_predictions_give_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compute_metrics("pearson_spearman", [2.5, 2.5, 2.5], [0.0, 3.0, 5.0])
    assert out == {"pearson": 0.0, "spearman": 0.0}


def test_logits_are_argmaxed():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [0.0, 5.0]])
    assert compute_metrics("accuracy", logits, [0, 1, 0])["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("preds", "gold", "match"),
    [([0, 1], [0], "lengths must match"), ([], [], "empty"), ([0, 1], [0, -1], "unknown")],
)
def test_bad_inputs_raise_usage_error(preds, gold, match):
    with pytest.raises(UsageError, match=match):
        compute_metrics("accuracy", preds, gold)


def test_unknown_kind():
    with pytest.raises(UsageError, match="f1_accuracy"):
        compute_metrics("bleu", [0], [0])
    with pytest.raises(UsageError):
        primary_metric("bleu")


def test_primary_metric_keys_exist_in_results():
    sample = {"pearson_spearman": ([0.1, 0.5, 0.9], [0.0, 1.0, 2.0])}
    for kind, key in PRIMARY_METRIC.items():
        preds, gold = sample.get(kind, ([0, 1, 1], [0, 1, 0]))
        assert key in compute_metrics(kind, preds, gold)
    assert primary_metric("mcc") == "mcc" and primary_metric("f1_accuracy") == "f1"
