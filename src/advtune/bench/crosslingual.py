"""TAT Table 3 from finished runs: evaluate each run on every language, then tabulate.

The per-language metrics and the table layout are pure functions of predictions
(:mod:`advtune.evaluation.crosslingual`, which the evaluation itself calls); driving a run's
evaluation lives up here, beside the other grids over run folders, so that the evaluation layer never
imports the pipeline that imports it.
"""

from __future__ import annotations

from pathlib import Path


def evaluate_crosslingual(
    run_dir: str | Path,
    task: str = "xnli",
    split: str = "test",
    data_dir: str | None = None,
    data_file: str | None = None,
    max_samples: int | None = None,
) -> dict[str, float]:
    """Evaluate a finished run on every language of ``task``; returns the per-language metrics."""
    from ..pipeline import evaluate

    result = evaluate(run_dir, task=task, split=split, data_dir=data_dir, data_file=data_file, max_samples=max_samples)
    return next(iter(result.values()))


__all__ = ["evaluate_crosslingual"]
