"""Every local dataset of the shared data folder loads with the row counts of its README (seconds)."""

from __future__ import annotations

import os
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from advtune.tasks import get_task

pytestmark = pytest.mark.integration

DATA_DIR = os.environ.get("ADVTUNE_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA_DIR, reason="ADVTUNE_DATA_DIR is not set (folder of the shared datasets)")


@cache
def load(task: str, split: str):
    return get_task(task).load(split, Path(DATA_DIR))


# (task, split) -> rows, as listed in the data README
COUNTS = {
    ("sst2", "train"): 67_349,
    ("sst2", "validation"): 872,
    ("sst2", "test"): 1_821,
    ("cola", "train"): 8_551,
    ("cola", "validation"): 1_043,
    ("mrpc", "train"): 3_667,
    ("mrpc", "validation"): 408,
    ("mrpc", "test"): 1_725,
    ("rte", "train"): 2_490,
    ("rte", "validation"): 277,
    ("stsb", "train"): 5_749,
    ("stsb", "validation"): 1_500,
    ("wnli", "train"): 635,
    ("wnli", "validation"): 71,
    ("qnli", "validation"): 5_463,
    ("banking77", "train"): 10_003,
    ("banking77", "test"): 3_080,
    ("clinc150", "train"): 15_000,
    ("clinc150", "validation"): 3_000,
    ("clinc150", "test"): 4_500,
    ("clinc150_oos", "train"): 15_100,
    ("clinc150_oos", "test"): 5_500,
    ("hwu64", "train"): 8_884,
    ("hwu64", "validation"): 1_076,
    ("hwu64", "test"): 1_076,
    **{(d, "test"): 2_000 for d in ("books", "dvd", "electronics", "kitchen")},
}


@needs_data
@pytest.mark.parametrize(("task", "split"), list(COUNTS), ids=[f"{t}-{s}" for t, s in COUNTS])
def test_row_counts(task, split):
    ds = load(task, split)
    assert len(ds) == COUNTS[(task, split)]
    assert all(t.strip() for t in ds["text_a"])
    if get_task(task).pair:
        assert all(t.strip() for t in ds["text_b"])


@needs_data
@pytest.mark.parametrize(("task", "n_labels"), [("banking77", 77), ("clinc150", 150), ("hwu64", 64)])
def test_intent_label_sets_are_all_used(task, n_labels):
    t = get_task(task)
    assert t.num_labels == n_labels
    assert len(set(load(task, "train")["label"])) == n_labels
    assert set(load(task, "test")["label"]) <= set(range(n_labels))


@needs_data
def test_stsb_scores_are_floats_in_range():
    ds = load("stsb", "validation")
    scores = ds["label"]
    assert ds.features["label"].dtype == "float32"
    assert min(scores) == 0.0 and max(scores) == 5.0 and len(set(scores)) > 10


@needs_data
@pytest.mark.parametrize("domain", ["books", "dvd", "electronics", "kitchen"])
def test_sentiment_domains_balanced(domain):
    ds = load(domain, "test")
    assert Counter(ds["label"]) == {0: 1000, 1: 1000}
    assert sum("\n" in t for t in ds["text_a"]) > 0  # the multi-line reviews stayed whole


@needs_data
def test_glue_labels_are_all_known_where_published():
    for task, split in (("sst2", "test"), ("mrpc", "train"), ("rte", "validation"), ("qnli", "validation")):
        assert min(load(task, split)["label"]) >= 0
    assert set(load("mrpc", "test")["label"]) == {-1}  # GLUE withholds MRPC test labels
