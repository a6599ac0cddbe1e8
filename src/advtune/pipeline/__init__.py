"""Train and evaluate: the Python API behind ``advtune train`` and ``advtune eval``.

``train()`` validates everything before writing anything (:mod:`.prepare`), trains with
:class:`~advtune.trainer.AdversarialTrainer`, saves the inference model as safetensors, evaluates the
task's evaluation splits and writes ``metrics.json`` last (:mod:`.training`, see :mod:`advtune.runs`).
``evaluate()`` scores a finished run (:mod:`.evaluation`). Every kind of task (single text, pair,
regression, multiple choice) runs the same path: the task object encodes, collates, builds the model and
predicts (:class:`advtune.tasks.base.TaskPath`).
"""

from .evaluation import LoadedRun, evaluate, load_run, predict, read_run, score
from .prepare import load_task
from .training import run_training, train, versions

__all__ = [
    "LoadedRun",
    "evaluate",
    "load_run",
    "load_task",
    "predict",
    "read_run",
    "run_training",
    "score",
    "train",
    "versions",
]
