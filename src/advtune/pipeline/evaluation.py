"""Scoring finished runs: prediction, metrics, per-example predictions and loading a run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import runs
from ..errors import UsageError
from ..methods import get_method_class
from ..tasks.base import TaskPath
from ..tasks.multiple_choice import KIND as MC_KIND
from ..tasks.multiple_choice import run_task as mc_run_task

_STANDARD = TaskPath()  # the sequence-classification path, for callers that give no task


def predict(
    model, tokenizer, dataset, max_length: int = 128, batch_size: int = 64, desc: str = "Evaluating", task=None
):
    """Logits for a dataset of ``task`` (default: a standard-column classification dataset)."""
    return (task or _STANDARD).predict(model, tokenizer, dataset, max_length, batch_size, desc)


def score(task, logits: np.ndarray, dataset, label_map=None) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics and per-example predictions; ``label_map`` maps probabilities across label spaces."""
    from ..evaluation.metrics import compute_metrics

    gold = list(dataset["label"])
    idx = list(dataset["idx"]) if "idx" in dataset.column_names else list(range(len(gold)))
    if task.is_regression:
        preds = logits.reshape(len(gold), -1)[:, 0].astype(float)
        rows = [
            {"idx": int(i), "gold": float(g), "pred": float(p), "probs": None} for i, g, p in zip(idx, gold, preds)
        ]
    else:
        probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
        if label_map is not None:
            probs = label_map(probs)
        preds = probs.argmax(-1)
        rows = [
            {"idx": int(i), "gold": int(g), "pred": int(p), "probs": [round(float(x), 6) for x in pr]}
            for i, g, p, pr in zip(idx, gold, preds, probs)
        ]
    return compute_metrics(task.metric, np.asarray(preds), np.asarray(gold)), rows


def _with_languages(metrics: dict[str, float], rows: list[dict], dataset) -> dict[str, float]:
    """Cross-lingual sets (a ``language`` column, e.g. XNLI): add per-language accuracy + average (TAT Table 3)."""
    if "language" not in dataset.column_names:
        return metrics
    from ..evaluation.crosslingual import per_language_metrics

    return {**metrics, **per_language_metrics(rows, dataset["language"])}


def _write_eval(run_dir: Path, task_name: str, split: str, metrics: dict, rows: list[dict]) -> None:
    out = runs.eval_dir(run_dir, task_name, split)
    runs.write_jsonl_atomic(out / "predictions.jsonl", rows)
    runs.write_json_atomic(out / "metrics.json", {"task": task_name, "split": split, "n": len(rows), **metrics})


@dataclass
class LoadedRun:
    path: Path
    config: dict[str, Any]
    model: Any
    tokenizer: Any
    task: Any

    @property
    def label_names(self) -> list[str] | None:
        return self.config.get("label_names")

    @property
    def max_length(self) -> int:
        return int(self.config["task"].get("max_length", 128))


def read_run(run_dir: str | Path) -> tuple[Path, dict[str, Any], Any]:
    """A finished run's folder, config and task, every file checked, without loading the model (cheap)."""
    run = runs.require_run(run_dir)
    runs.check_run_files(run)  # weights, tokenizer, configs, method state: damage is one line naming the file
    config = _read_run_config(run)
    get_method_class(config["method"]["name"])
    return run, config, _run_task(config)


def load_run(run_dir: str | Path, device: Any = None) -> LoadedRun:
    """A finished run's inference model (in eval mode, on ``device``: by default the one ``--device`` chose,
    see :mod:`advtune.devices`), tokenizer, config and task."""
    from .. import devices

    run, config, task = read_run(run_dir)
    method_cls = get_method_class(config["method"]["name"])
    model, tokenizer = task.load_inference_model(run, config, method_cls)
    model.to(devices.current() if device is None else devices.resolve(device))
    model.eval()
    return LoadedRun(run, config, model, tokenizer, task)


def _read_run_config(run: Path) -> dict[str, Any]:
    """``run_config.json`` with the keys loading needs; anything else is damage, named."""
    path = run / runs.RUN_CONFIG
    config = runs.read_json(path)
    ok = isinstance(config, dict) and all(
        isinstance(config.get(k), dict) and isinstance(config[k].get("name"), str) for k in ("task", "method")
    )
    if not ok:
        raise UsageError(f"{path} is damaged (no task and method names)")
    return config


def _run_task(config: dict[str, Any]):
    from ..tasks import get_task
    from ..tasks.base import Task

    name = config["task"]["name"]
    if config["task"].get("kind") == MC_KIND:  # multiple choice: the task's record names its k
        return mc_run_task(config["task"])
    if name == "file":
        labels = config.get("label_names")
        return Task(
            name="file",
            label_names=tuple(labels) if labels else None,
            metric=config["task"]["metric"],
            pair=bool(config["task"].get("pair")),
            text_fields=tuple((config["task"].get("text_fields") or "text").split(",")),
        )
    return get_task(name)


def evaluate(
    run_dir: str | Path,
    task: str | None = None,
    split: str | None = None,
    data_file: str | None = None,
    text_fields: str | None = None,
    label_field: str | None = None,
    data_dir: str | None = None,
    max_samples: int | None = None,
    batch_size: int = 64,
    sample_seed: int | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate a finished run on its task, another task with a compatible label space, or a file.

    ``max_samples`` keeps the first N examples, or, with ``sample_seed``, a seeded random sample of N
    (the same examples for every run given the same seed: use it on files sorted by label, such as
    the review domains, where the first N examples all carry one label).
    """
    if max_samples is not None and max_samples <= 0:
        raise UsageError(f"invalid --max-samples {max_samples}: must be positive")
    if batch_size <= 0:
        raise UsageError(f"invalid --batch-size {batch_size}: must be positive")
    _, config, run_task = read_run(run_dir)  # the data is checked before the model is loaded
    target, datasets_, label_map = _eval_sets(
        run_task, config.get("label_names"), task, split, data_file, text_fields, label_field, data_dir
    )
    loaded = load_run(run_dir)
    results = {}
    for s, ds in datasets_.items():
        if max_samples:
            if sample_seed is not None:
                ds = ds.shuffle(seed=sample_seed)
            ds = ds.select(range(min(len(ds), max_samples)))
        logits = target.predict(
            loaded.model, loaded.tokenizer, ds, loaded.max_length, batch_size, f"{target.name}.{s}"
        )
        metrics, rows = score(target, logits, ds, label_map=label_map)
        metrics = _with_languages(metrics, rows, ds)
        _write_eval(loaded.path, target.name, s, metrics, rows)
        results[f"{target.name}.{s}"] = metrics
    return results


def _eval_sets(run_task, label_names, task, split, data_file, text_fields, label_field, data_dir):
    """The target task, its evaluation datasets by split and the label map (another task's label space)."""
    from ..tasks import get_task, resolve_data_dir

    label_map = None
    if data_file and task is None and not run_task.reads_own_data_file:
        from ..tasks.files import load_file_task

        if not text_fields or not label_field:
            raise UsageError("--data-file needs --text-fields and --label-field")
        fields = [f.strip() for f in text_fields.split(",") if f.strip()]
        target, ds = load_file_task(
            data_file, fields, label_field, label_names=label_names, name="file", regression=run_task.is_regression
        )
        return target, {split or "file": ds}, None
    target = get_task(task) if task else run_task
    if target.name != run_task.name:
        from ..evaluation.transfer import label_mapping

        label_map = label_mapping(label_names, target)
    splits = [target.canonical_split(split)] if split else list(target.eval_splits)
    ddir = resolve_data_dir(data_dir)
    if data_file:
        return target, {s: target.load(s, data_dir=ddir, data_file=data_file) for s in splits}, label_map
    return target, {s: target.load(s, data_dir=ddir) for s in splits}, label_map
