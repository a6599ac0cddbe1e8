"""Zero-shot transfer label mapping: identity, reordering, the documented 3-way -> 2-way NLI collapse, refusals.

The end-to-end test trains a tiny model on the hand-written MNLI-format files in ``tests/fixtures/nli`` and
evaluates it on HANS / SciTail / SNLI files holding the same six pairs, so the mapped probabilities can be
checked example by example against the run's own 3-way probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from advtune.errors import UsageError
from advtune.evaluation.transfer import canonical_label, label_mapping
from advtune.tasks import get_task

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nli"
NLI3 = ["entailment", "neutral", "contradiction"]


def _probs(n: int = 5, k: int = 3, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, k))
    return np.exp(x) / np.exp(x).sum(1, keepdims=True)


def test_identity_for_equal_label_names():
    probs = _probs(k=2)
    for domain in ("books", "dvd", "electronics", "kitchen"):
        mapped = label_mapping(list(get_task("sst2").label_names), get_task(domain))(probs)
        np.testing.assert_allclose(mapped, probs)
    np.testing.assert_allclose(label_mapping(NLI3, get_task("snli"))(_probs()), _probs())


def test_reordered_and_respelled_labels_are_permuted():
    probs = _probs(k=2)
    wnli = get_task("wnli")  # (not_entailment, entailment)
    mapped = label_mapping(["entailment", "not_entailment"], wnli)(probs)
    np.testing.assert_allclose(mapped, probs[:, ::-1])
    hans = get_task("hans")  # (entailment, non-entailment): RTE's not_entailment is the same label
    np.testing.assert_allclose(label_mapping(list(get_task("rte").label_names), hans)(probs), probs)
    assert canonical_label("Non-Entailment") == canonical_label("not_entailment") == "non_entailment"
    assert canonical_label("entails") == "entailment"


@pytest.mark.parametrize("task", ["hans", "scitail", "rte", "qnli"])
def test_three_way_nli_collapses_to_two_way(task):
    probs = _probs(n=7)
    mapped = label_mapping(NLI3, get_task(task))(probs)
    assert mapped.shape == (7, 2)
    np.testing.assert_allclose(mapped[:, 0], probs[:, 0])  # P(entailment)
    np.testing.assert_allclose(mapped[:, 1], probs[:, 1] + probs[:, 2])  # P(not entailed) = P(neutral) + P(contra.)
    np.testing.assert_allclose(mapped.sum(1), 1.0)
    # the run's label order does not matter
    reordered = label_mapping(["contradiction", "entailment", "neutral"], get_task(task))(probs[:, [2, 0, 1]])
    np.testing.assert_allclose(reordered, mapped)


@pytest.mark.parametrize(
    "run,task",
    [
        (["negative", "positive"], "rte"),  # unrelated label spaces
        (["entailment", "not_entailment"], "snli"),  # 2-way cannot be expanded to 3-way
        (None, "sst2"),  # regression run on a classification task
        (NLI3, "stsb"),  # and the reverse
        (["not_equivalent", "equivalent"], "books"),
    ],
)
def test_unmatchable_label_spaces_raise_usage_error(run, task):
    with pytest.raises(UsageError):
        label_mapping(run, get_task(task))


def test_regression_to_regression_is_identity_and_shape_is_checked():
    values = np.array([[1.0], [2.5]])
    np.testing.assert_array_equal(label_mapping(None, get_task("stsb"))(values), values)
    with pytest.raises(UsageError, match="3 labels"):
        label_mapping(NLI3, "hans")(np.ones((2, 2)))


def _tiny_model_dir(path: Path, num_labels: int) -> Path:
    from advtune.testing import tiny_model, tiny_tokenizer

    tiny_model(num_labels=num_labels, dropout=0.0).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _probs_by_idx(run: Path, name: str) -> dict[int, list[float]]:
    rows = [json.loads(line) for line in (run / "eval" / name / "predictions.jsonl").read_text().splitlines()]
    return {r["idx"]: r["probs"] for r in rows}


def test_mnli_run_evaluates_zero_shot_on_local_nli_files(tmp_path):
    """Train (TAT, 2 epochs) on the MNLI-format fixture, then evaluate on HANS / SciTail / SNLI fixture files."""
    from advtune.pipeline import evaluate, train

    run = train(
        "mnli",
        "tat",
        tmp_path / "run",
        model=str(_tiny_model_dir(tmp_path / "tiny", 3)),
        data_dir=str(FIXTURES),
        eval_splits="validation_matched",
        max_length=32,
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        save_strategy="no",
        logging_steps=1,
        method_overrides={"adv_seed": 0},
    )
    three = _probs_by_idx(run, "mnli.validation_matched")
    assert len(three) == 6
    results = evaluate(run, task="hans", data_dir=str(FIXTURES))
    assert set(results) == {"hans.validation"} and 0 <= results["hans.validation"]["accuracy"] <= 1
    for task, split in (("hans", "validation"), ("scitail", "test")):
        if task != "hans":
            evaluate(run, task=task, data_dir=str(FIXTURES))
        two = _probs_by_idx(run, f"{task}.{split}")
        for i, p in enumerate(three.values()):  # same pairs in the same order
            np.testing.assert_allclose(two[i], [p[0], p[1] + p[2]], atol=2e-6)
    snli = evaluate(run, task="snli", data_dir=str(FIXTURES))
    assert len(_probs_by_idx(run, "snli.test")) == 6  # the unlabelled row is dropped
    assert "accuracy" in snli["snli.test"]
    with pytest.raises(UsageError, match="cannot map"):
        evaluate(run, task="books", data_dir=str(FIXTURES))
    # TAT's tally reached the logs (top confusions at each epoch end)
    logs = json.loads((run / "log_history.json").read_text())
    assert sum("adv/tally_error_rate" in entry for entry in logs) == 2
