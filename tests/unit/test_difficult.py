"""The TF-IDF "difficult" test subset (CAT Table 2, after Qi et al. 2021) on hand-made data."""

from __future__ import annotations

import pytest
from datasets import Dataset

from advtune.errors import UsageError
from advtune.evaluation.difficult import difficult_subset, intent_similarity

TRAIN = {
    "text_a": [
        "book a flight to paris",
        "book a flight to london",
        "book a cheap flight",
        "play some jazz music",
        "play rock music",
        "play music please",
    ],
    "label": [0, 0, 0, 1, 1, 1],
}
TEST = {
    "idx": [10, 11, 12, 13, 14, 15],
    "text_a": [
        "book a flight to rome",  # intent 0, near-duplicate of training          -> easy
        "i must travel by plane tomorrow",  # intent 0, no shared word           -> difficult
        "play jazz music",  # intent 1, near-duplicate                            -> easy
        "could you put on a song",  # intent 1, no shared word                    -> difficult
        "book a flight to paris",  # intent 1 (!): similar to intent 0's examples only -> difficult
        "play some music for me",  # intent 1, shares words                        -> easy
    ],
    "label": [0, 0, 1, 1, 1, 1],
}


def _ds():
    return Dataset.from_dict(TRAIN), Dataset.from_dict(TEST)


def test_least_similar_examples_are_chosen():
    train, test = _ds()
    sub = difficult_subset(train, test, 3)
    assert sub["idx"] == [11, 13, 14]  # original order kept
    assert sub.column_names == test.column_names
    sims = intent_similarity(train["text_a"], train["label"], test["text_a"], test["label"])
    assert sims[1] == 0 and sims[3] == 0  # no shared word with the own intent's training texts
    assert sims[0] > 0.5 and sims[2] > 0.5


def test_compared_with_the_examples_of_its_own_intent_only():
    """'book a flight to paris' is a training sentence, but of intent 0: as intent 1 it is dissimilar."""
    train, test = _ds()
    sims = intent_similarity(train["text_a"], train["label"], test["text_a"], test["label"])
    as_intent0 = intent_similarity(train["text_a"], train["label"], ["book a flight to paris"], [0])
    assert as_intent0[0] == pytest.approx(1.0)
    assert sims[4] == 0


def test_size_and_ties_broken_by_idx():
    train, test = _ds()
    assert len(difficult_subset(train, test, 6)) == 6
    # two examples with similarity 0 (idx 11 and 13): size 1 keeps the smaller idx, whatever the row order
    assert difficult_subset(train, test, 1)["idx"] == [11]
    reversed_test = test.select(list(range(len(test)))[::-1])
    assert difficult_subset(train, reversed_test, 1)["idx"] == [11]
    assert difficult_subset(train, reversed_test, 3)["idx"] == [14, 13, 11]  # its own row order
    assert difficult_subset(train, test, 3)["idx"] == difficult_subset(train, test, 3)["idx"]  # deterministic


@pytest.mark.parametrize("reduce", ["max", "mean", "centroid"])
def test_reductions_agree_on_the_obvious_cases(reduce):
    train, test = _ds()
    assert set(difficult_subset(train, test, 2, reduce=reduce)["idx"]) == {11, 13}


def test_mean_differs_from_max():
    train = Dataset.from_dict({"text_a": ["card lost today", "transfer money now", "transfer money later"]})
    labels = [0, 0, 0]
    sims_max = intent_similarity(train["text_a"], labels, ["card lost today"], [0], "max")
    sims_mean = intent_similarity(train["text_a"], labels, ["card lost today"], [0], "mean")
    assert sims_max[0] == pytest.approx(1.0) and sims_mean[0] == pytest.approx(1 / 3)


def test_unseen_intent_counts_as_most_difficult():
    train, _ = _ds()
    sims = intent_similarity(train["text_a"], train["label"], ["book a flight"], [7])
    assert sims[0] == 0


@pytest.mark.parametrize("size", [0, -1, 7])
def test_bad_sizes(size):
    train, test = _ds()
    with pytest.raises(UsageError, match="size"):
        difficult_subset(train, test, size)


def test_missing_column_and_bad_reduce():
    train, test = _ds()
    with pytest.raises(UsageError, match="text"):
        difficult_subset(train, test.rename_column("text_a", "text"), 2)
    with pytest.raises(UsageError, match="reduce"):
        difficult_subset(train, test, 2, reduce="median")
