"""AdvGLUE (Wang et al., NeurIPS 2021 Datasets and Benchmarks): adversarial GLUE dev sets.

The official ``dev.json`` holds one list per task::

    {"sst2": [{"idx": 0, "label": 0, "sentence": "..."}],
     "qqp": [{"question1", "question2", ...}], "mnli": [{"premise", "hypothesis", ...}], "mnli-mm": [...],
     "qnli": [{"question", "sentence", ...}], "rte": [{"sentence1", "sentence2", ...}]}

Labels are GLUE's integer ids, so each ``advglue-<task>`` task has the GLUE task's label names and a
run trained on the GLUE task evaluates on it with the identity label map. The file is taken from
``data_file`` (``advtune eval --task advglue-sst2 --data-file dev.json``) or from
``<data_dir>/advglue/dev.json``; AdvGLUE has one split, ``validation`` (``dev``).
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset

from ..errors import UsageError
from .base import Task, make_dataset
from .glue import MNLI, QNLI, QQP, RTE, SST2

#: AdvGLUE key -> (GLUE task, text field(s)).
LAYOUT: dict[str, tuple[Task, tuple[str, ...]]] = {
    "sst2": (SST2, ("sentence",)),
    "qqp": (QQP, ("question1", "question2")),
    "mnli": (MNLI, ("premise", "hypothesis")),
    "mnli-mm": (MNLI, ("premise", "hypothesis")),
    "qnli": (QNLI, ("question", "sentence")),
    "rte": (RTE, ("sentence1", "sentence2")),
}
DEFAULT_FILE = Path("advglue") / "dev.json"


def _key(task: Task) -> str:
    return task.name.removeprefix("advglue-")


def read_advglue(path: Path, key: str) -> list[dict]:
    """The example list of one AdvGLUE task from an official-layout JSON file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read AdvGLUE file {path}: {err}") from None
    if not isinstance(data, dict) or key not in data:
        keys = ", ".join(data) if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"{path} is not in the AdvGLUE layout or has no '{key}' list (found: {keys})")
    return data[key]


def load_advglue(task: Task, split: str, data_dir: Path | None, data_file: Path | None) -> Dataset:
    path = data_file or (data_dir / DEFAULT_FILE if data_dir else None)
    if path is None or not Path(path).is_file():
        where = path if path is not None else f"<data dir>/{DEFAULT_FILE}"
        raise UsageError(f"AdvGLUE file not found: {where} (pass --data-file dev.json)")
    key = _key(task)
    fields = LAYOUT[key][1]
    items = read_advglue(Path(path), key)
    try:
        rows = {
            "idx": [int(it.get("idx", i)) for i, it in enumerate(items)],
            "text_a": [it[fields[0]] for it in items],
            "label": [int(it["label"]) for it in items],
        }
        if len(fields) > 1:
            rows["text_b"] = [it[fields[1]] for it in items]
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"{path}: AdvGLUE '{key}' entries need {', '.join(fields)} and label ({err})") from None
    return make_dataset(task, rows)


def _advglue_task(key: str) -> Task:
    glue, fields = LAYOUT[key]
    return Task(
        name=f"advglue-{key}",
        label_names=glue.label_names,
        metric="accuracy",
        pair=len(fields) == 2,
        text_fields=fields,
        train_split="validation",
        eval_splits=("validation",),
        splits=("validation",),
        loader=load_advglue,
        description=f"AdvGLUE {key} (adversarial dev set; train on {glue.name})",
    )


ADVGLUE_TASKS: tuple[Task, ...] = tuple(_advglue_task(k) for k in LAYOUT)
