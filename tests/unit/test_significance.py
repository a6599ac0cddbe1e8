"""McNemar, paired approximate randomization, and `advtune compare` on hand-made run folders."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from advtune.cli import main as cli_main
from advtune.errors import UsageError
from advtune.evaluation.metrics import compute_metrics
from advtune.evaluation.significance import (
    _block_metric,
    compare_runs,
    discordant_pairs,
    mcnemar,
    paired_randomization,
)


def _pairs(b: int, c: int, same: int = 5):
    """Correctness vectors with b (A right, B wrong), c (A wrong, B right) and `same` concordant pairs."""
    a = [True] * b + [False] * c + [True] * same + [False] * same
    bb = [False] * b + [True] * c + [True] * same + [False] * same
    return a, bb


def test_mcnemar_exact_matches_the_binomial_by_hand():
    a, b = _pairs(6, 16)  # 22 discordant pairs < 25 -> exact
    assert discordant_pairs(a, b) == (6, 16)
    stat, p = mcnemar(a, b)
    expected = 2 * sum(math.comb(22, k) for k in range(7)) / 2**22
    assert stat == 6 and p == pytest.approx(expected, rel=1e-9)
    assert p == pytest.approx(0.0525, abs=5e-4)
    assert mcnemar(b, a)[1] == pytest.approx(p)  # symmetric


def test_mcnemar_chi2_with_continuity_correction():
    a, b = _pairs(10, 30)
    stat, p = mcnemar(a, b)
    assert stat == pytest.approx((20 - 1) ** 2 / 40)
    assert p == pytest.approx(math.erfc(math.sqrt(stat / 2)), rel=1e-9)  # chi2(1) survival function
    assert p == pytest.approx(0.002663, abs=1e-5)


def test_mcnemar_identical_and_balanced_give_one():
    a, _ = _pairs(3, 4)
    assert mcnemar(a, a) == (0.0, 1.0)
    assert mcnemar(*_pairs(30, 30))[1] == pytest.approx(1.0)
    assert mcnemar(*_pairs(5, 5))[1] == pytest.approx(1.0)
    with pytest.raises(UsageError):
        mcnemar([True, False], [True])


def test_randomization_identical_predictions_give_one():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)
    p = rng.integers(0, 2, 50)
    for metric in ("accuracy", "f1", "mcc"):
        assert paired_randomization(p, p, y, metric, n=500) == 1.0
    scores = rng.normal(size=50)
    assert paired_randomization(scores, scores, y.astype(float), "pearson", n=500) == 1.0


def test_randomization_close_to_exact_enumeration():
    """10 examples: all 2^10 swap patterns give the exact permutation p-value."""
    y = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1])
    a = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 1])  # 9/10
    b = np.array([0, 0, 1, 0, 0, 1, 1, 1, 1, 0])  # 5/10
    observed = abs((a == y).mean() - (b == y).mean())
    count = 0
    for swap in itertools.product([False, True], repeat=10):
        s = np.array(swap)
        pa, pb = np.where(s, b, a), np.where(s, a, b)
        count += abs((pa == y).mean() - (pb == y).mean()) >= observed - 1e-12
    exact = count / 2**10
    mc = paired_randomization(a, b, y, "accuracy", n=20000, seed=3)
    assert mc == pytest.approx(exact, abs=0.01)
    assert paired_randomization(a, b, y, "accuracy", n=2000, seed=3) == paired_randomization(
        a, b, y, "accuracy", n=2000, seed=3
    )  # seeded


def test_randomization_detects_a_real_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = y.copy()
    bad = np.where(rng.random(300) < 0.5, 1 - y, y)
    assert paired_randomization(good, bad, y, "f1", n=2000) == pytest.approx(1 / 2001)


def test_named_metrics_agree_with_compute_metrics():
    rng = np.random.default_rng(0)
    y2, y5 = rng.integers(0, 2, 80), rng.integers(0, 5, 80)
    preds2 = rng.integers(0, 2, (6, 80))
    preds5 = rng.integers(0, 5, (6, 80))
    preds2[0] = 1  # constant prediction: MCC 0
    for row in range(6):
        ref2 = compute_metrics("mcc", preds2[row], y2)
        assert _block_metric("mcc", preds2[row : row + 1], y2)[0] == pytest.approx(ref2["mcc"], abs=1e-12)
        ref5 = compute_metrics("mcc", preds5[row], y5)
        assert _block_metric("mcc", preds5[row : row + 1], y5)[0] == pytest.approx(ref5["mcc"], abs=1e-12)
        f1 = compute_metrics("f1_accuracy", preds2[row], y2)
        assert _block_metric("f1", preds2[row : row + 1], y2)[0] == pytest.approx(f1["f1"], abs=1e-12)
        assert _block_metric("accuracy", preds5[row : row + 1], y5)[0] == pytest.approx(ref5["accuracy"])
    gold = np.round(rng.uniform(0, 5, 80), 1)  # ties, as STS-B
    scores = np.round(rng.normal(size=(4, 80)), 1)
    for row in range(4):
        ref = compute_metrics("pearson_spearman", scores[row], gold)
        got = {m: _block_metric(m, scores[row : row + 1], gold)[0] for m in ("pearson", "spearman")}
        assert got["pearson"] == pytest.approx(ref["pearson"], abs=1e-10)
        assert got["spearman"] == pytest.approx(ref["spearman"], abs=1e-10)


def test_callable_and_named_metric_give_the_same_p():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    a, b = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    named = paired_randomization(a, b, y, "mcc", n=300, seed=5)
    generic = paired_randomization(a, b, y, lambda p, g: compute_metrics("mcc", p, g)["mcc"], n=300, seed=5)
    assert named == pytest.approx(generic)


# ------------------------------------------------------------------ run folders
def _run(tmp_path, name, split, preds, gold, kind_keys=("accuracy",), idx=None):
    folder = tmp_path / name / "eval" / split
    folder.mkdir(parents=True)
    idx = list(range(len(gold))) if idx is None else idx
    lines = [json.dumps({"idx": i, "gold": g, "pred": p, "probs": None}) for i, g, p in zip(idx, gold, preds)]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "metrics.json").write_text(json.dumps({k: 0.0 for k in kind_keys}))
    return tmp_path / name


def test_compare_runs_accuracy_and_f1(tmp_path):
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 200).tolist()
    a = gold[:]
    b = [1 - g if i % 4 == 0 else g for i, g in enumerate(gold)]  # B wrong on a quarter
    run_a = _run(tmp_path, "A", "mrpc.validation", a, gold, ("f1", "accuracy"))
    run_b = _run(tmp_path, "B", "mrpc.validation", b, gold, ("f1", "accuracy"))
    rows = {r["metric"]: r for r in compare_runs(run_a, run_b, shuffles=500)}
    assert set(rows) == {"f1", "accuracy"}
    assert rows["accuracy"]["a"] == 1.0 and rows["accuracy"]["b"] == 0.75
    assert rows["accuracy"]["diff"] == pytest.approx(-0.25)
    assert rows["accuracy"]["test"].startswith("McNemar chi2 (50 discordant)")
    assert rows["accuracy"]["p_value"] == pytest.approx(mcnemar([True] * 200, np.array(a) == np.array(b))[1])
    assert rows["f1"]["test"] == "randomization (500 shuffles)" and rows["f1"]["p_value"] < 0.01
    same = compare_runs(run_a, run_a, "validation", shuffles=200)
    assert all(r["p_value"] == 1.0 for r in same)


def test_compare_runs_aligns_by_idx(tmp_path):
    gold, preds = [0, 1, 2, 1], [0, 1, 1, 1]
    run_a = _run(tmp_path, "A", "banking77.test", preds, gold)
    run_b = _run(tmp_path, "B", "banking77.test", preds[::-1], gold[::-1], idx=[3, 2, 1, 0])
    (row,) = compare_runs(run_a, run_b)
    assert row["p_value"] == 1.0 and row["a"] == row["b"] == 0.75 and row["n"] == 4


def test_compare_runs_refuses_different_examples(tmp_path):
    run_a = _run(tmp_path, "A", "banking77.test", [0, 1, 2], [0, 1, 2])
    run_b = _run(tmp_path, "B", "banking77.test", [0, 1, 2], [0, 1, 2], idx=[0, 1, 5])
    with pytest.raises(UsageError, match="different examples"):
        compare_runs(run_a, run_b)
    run_c = _run(tmp_path, "C", "banking77.test", [0, 1, 2], [0, 1, 1])
    with pytest.raises(UsageError, match="gold"):
        compare_runs(run_a, run_c)
    run_d = _run(tmp_path, "D", "banking77.test-difficult", [0], [0])
    with pytest.raises(UsageError, match="share no evaluated split"):
        compare_runs(run_a, run_d)
    with pytest.raises(UsageError, match="no evaluation of 'test-difficult'"):
        compare_runs(run_a, run_d, "test-difficult")
    with pytest.raises(UsageError, match="does not exist"):
        compare_runs(tmp_path / "nope", run_a)


def test_cli_compare(tmp_path, capsys):
    gold = [0, 1, 2, 3] * 10
    run_a = _run(tmp_path, "A", "banking77.test", gold, gold)
    run_b = _run(tmp_path, "B", "banking77.test", [0] * 40, gold)
    assert cli_main(["compare", str(run_a), str(run_b), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "McNemar" in out and "-0.7500" in out
    assert cli_main(["compare", str(run_a), str(run_b), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["test"] == "McNemar chi2 (30 discordant)" and rows[0]["p_value"] < 1e-6
    assert cli_main(["compare", str(run_a), str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
