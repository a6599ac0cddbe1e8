"""Registry of named tasks, data-folder resolution and seeded subsampling.

``TASKS`` is one literal dict (name -> :class:`~advtune.tasks.base.Task`); :func:`register_task` adds a
user's own task. Data comes from ``--data-dir`` / ``ADVTUNE_DATA_DIR`` (a folder laid out like the shared
data folder, see ``docs/data.md``) and otherwise from the HF hub.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from datasets import Dataset

from ..errors import UsageError
from .advglue import ADVGLUE_TASKS
from .base import Task
from .glue import COLA, MNLI, MRPC, QNLI, QQP, RTE, SST2, STSB, WNLI
from .intent import BANKING77, CLINC150, CLINC150_OOS, HWU64
from .multiple_choice import MC_TASKS
from .nli import HANS, SCITAIL, SNLI
from .sentiment import SENTIMENT_TASKS
from .xnli import XNLI_TASKS

books, dvd, electronics, kitchen = SENTIMENT_TASKS

TASKS: dict[str, Task] = {
    # GLUE
    "cola": COLA,
    "sst2": SST2,
    "mrpc": MRPC,
    "stsb": STSB,
    "qqp": QQP,
    "mnli": MNLI,
    "qnli": QNLI,
    "rte": RTE,
    "wnli": WNLI,
    # intent classification
    "banking77": BANKING77,
    "clinc150": CLINC150,
    "clinc150_oos": CLINC150_OOS,
    "hwu64": HWU64,
    # transfer sets (evaluation only)
    "books": books,
    "dvd": dvd,
    "electronics": electronics,
    "kitchen": kitchen,
    "snli": SNLI,
    "scitail": SCITAIL,
    "hans": HANS,
    **{t.name: t for t in ADVGLUE_TASKS},  # advglue-sst2, advglue-qqp, ... (evaluation only)
    **MC_TASKS,  # multiple choice: arc_easy, arc_challenge, commonsense_qa, race, multiple_choice (user jsonl)
    **XNLI_TASKS,  # cross-lingual NLI: xnli (15 languages, per-language accuracy) and xnli_<lang>
}

ENV_DATA_DIR = "ADVTUNE_DATA_DIR"


def get_task(name: str) -> Task:
    """The registered task called ``name`` (UsageError listing the names otherwise)."""
    if name in TASKS:
        return TASKS[name]
    key = str(name).strip().lower()
    for candidate in (key, key.replace("-", ""), key.replace("-", "_")):  # SST-2, sts-b, clinc150-oos
        if candidate in TASKS:
            return TASKS[candidate]
    raise UsageError(f"unknown task '{name}'; choose one of: {', '.join(TASKS)}")


def register_task(task: Task, overwrite: bool = False) -> Task:
    """Add a user's task to :data:`TASKS` (refuses to replace an existing name unless ``overwrite``)."""
    if not isinstance(task, Task):
        raise UsageError(f"register_task expects a Task, got {type(task).__name__}")
    if task.name in TASKS and not overwrite and TASKS[task.name] is not task:
        raise UsageError(f"a task named '{task.name}' is already registered")
    TASKS[task.name] = task
    return task


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The data folder: the argument, else ``$ADVTUNE_DATA_DIR``, else ``None`` (hub only).

    A folder that is named but does not exist is a usage error, so a typo is not silently replaced by
    a hub download.
    """
    value = data_dir if data_dir not in (None, "") else os.environ.get(ENV_DATA_DIR) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        source = "--data-dir" if data_dir not in (None, "") else ENV_DATA_DIR
        raise UsageError(f"data folder not found: {path} (from {source})")
    return path


def subsample(ds: Dataset, n: int, seed: int) -> Dataset:
    """A seeded random subset of ``n`` examples, kept in their original order (the whole set if ``n >= len``).

    The same ``(n, seed)`` always gives the same examples, so runs of different methods see the same data.
    """
    if n is None or int(n) <= 0:
        raise UsageError(f"invalid number of samples {n}: must be positive")
    if n >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(ds), size=int(n), replace=False))
    return ds.select(picked.tolist())


def subsample_per_label(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """A seeded ``fraction`` of each label's examples (rounded half up, at least one per label).

    Used for the CAT paper's sample-efficiency runs (train on 50% of each intent). The examples keep
    their original order.
    """
    if not 0 < fraction <= 1:
        raise UsageError(f"invalid fraction {fraction}: must be in (0, 1]")
    labels = np.asarray(ds["label"])
    if labels.dtype.kind == "f":
        raise UsageError("a per-label fraction needs class labels; this task is a regression task")
    if fraction == 1:
        return ds
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        k = max(1, math.floor(fraction * len(members) + 0.5))
        picked.extend(rng.choice(members, size=k, replace=False).tolist())
    return ds.select(sorted(picked))


__all__ = ["TASKS", "Task", "get_task", "register_task", "resolve_data_dir", "subsample", "subsample_per_label"]
