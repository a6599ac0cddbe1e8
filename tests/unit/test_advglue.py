"""AdvGLUE loader on a hand-made file in the official dev.json layout, and `advtune eval --data-file`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advtune.errors import UsageError
from advtune.tasks import get_task

FIXTURE = Path(__file__).parent.parent / "fixtures" / "advglue_dev.json"


@pytest.mark.parametrize(
    "name,n,pair,glue",
    [
        ("advglue-sst2", 3, False, "sst2"),
        ("advglue-qqp", 2, True, "qqp"),
        ("advglue-mnli", 2, True, "mnli"),
        ("advglue-mnli-mm", 1, True, "mnli"),
        ("advglue-qnli", 2, True, "qnli"),
        ("advglue-rte", 2, True, "rte"),
    ],
)
def test_loader_reads_every_task(name, n, pair, glue):
    task = get_task(name)
    assert task.label_names == get_task(glue).label_names and task.pair == pair
    ds = task.load("validation", data_file=FIXTURE)
    assert len(ds) == n and ("text_b" in ds.column_names) == pair
    raw = json.loads(FIXTURE.read_text())[name.removeprefix("advglue-")]
    assert ds["label"] == [r["label"] for r in raw] and ds["idx"] == [r["idx"] for r in raw]
    first = {"sst2": "sentence", "qqp": "question1", "mnli": "premise", "qnli": "question", "rte": "sentence1"}
    assert ds["text_a"][0] == raw[0][first[glue]]


def test_data_dir_layout_and_errors(tmp_path):
    (tmp_path / "advglue").mkdir()
    (tmp_path / "advglue" / "dev.json").write_text(FIXTURE.read_text())
    assert len(get_task("advglue-rte").load("dev", data_dir=tmp_path)) == 2
    with pytest.raises(UsageError, match="not found"):
        get_task("advglue-sst2").load("validation", data_dir=tmp_path / "nothing")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sst2": [{"idx": 0, "label": 1}]}))
    with pytest.raises(UsageError, match="sentence"):
        get_task("advglue-sst2").load("validation", data_file=bad)
    with pytest.raises(UsageError, match="no 'qqp'"):
        get_task("advglue-qqp").load("validation", data_file=bad)


def test_eval_command_on_advglue_file(tmp_path):
    from advtune import runs
    from advtune.pipeline import evaluate
    from tests.conftest import make_tiny_run

    run = make_tiny_run(tmp_path / "run")
    results = evaluate(run, task="advglue-sst2", data_file=str(FIXTURE))
    assert set(results) == {"advglue-sst2.validation"}
    metrics = runs.read_json(run / "eval" / "advglue-sst2.validation" / "metrics.json")
    assert metrics["n"] == 3 and 0.0 <= metrics["accuracy"] <= 1.0
    preds = runs.read_jsonl(run / "eval" / "advglue-sst2.validation" / "predictions.jsonl")
    assert [p["gold"] for p in preds] == [1, 0, 1]
