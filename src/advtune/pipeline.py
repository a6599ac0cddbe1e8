"""Train and evaluate: the Python API behind ``advtune train`` and ``advtune eval``.

``train()`` validates everything before writing anything, trains with
:class:`~advtune.trainer.AdversarialTrainer`, saves the inference model as safetensors, evaluates
the task's evaluation splits and writes ``metrics.json`` last (see :mod:`advtune.runs`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from . import adapters, runs
from .config import AdvTrainingArguments, ModelArguments, RunArguments, TaskArguments, dataclass_values
from .data import collator, encode
from .errors import UsageError
from .methods import METHOD_STATE_FILE, Method, get_method_class
from .modeling import load_model, load_tokenizer
from .tasks import multiple_choice as mc
from .threads import MachineProbe
from .threads import apply as apply_threads


# ------------------------------------------------------------------------------------------ data
def load_task(task_args: TaskArguments, label_names: list[str] | None = None):
    """The task object, the training set (subsampled as asked) and the evaluation sets."""
    if task_args.task in mc.MC_TASKS:  # multiple choice: tasks/multiple_choice.py
        return mc.load_splits(task_args)
    from .tasks import get_task, resolve_data_dir

    data_dir = resolve_data_dir(task_args.data_dir)
    if task_args.train_file:
        from .tasks.files import load_file_task

        fields = [f.strip() for f in task_args.text_fields.split(",") if f.strip()]
        task, train_ds = load_file_task(task_args.train_file, fields, task_args.label_field, label_names=label_names)
        evals = {}
        if task_args.eval_file:
            _, evals["validation"] = load_file_task(
                task_args.eval_file, fields, task_args.label_field, label_names=list(task.label_names or []) or None
            )
        return task, train_ds, evals
    task = get_task(task_args.task)
    train_ds = task.load(task.train_split, data_dir=data_dir)
    splits = [task.canonical_split(s) for s in _split_list(task_args.eval_splits)] or list(task.eval_splits)
    evals = {s: task.load(s, data_dir=data_dir) for s in splits}
    if task_args.max_eval_samples:
        evals = {s: d.select(range(min(len(d), task_args.max_eval_samples))) for s, d in evals.items()}
    return task, train_ds, evals


def _subsample_train(train_ds, task_args: TaskArguments, seed: int):
    from .tasks import subsample, subsample_per_label

    if task_args.train_fraction_per_label:
        train_ds = subsample_per_label(train_ds, task_args.train_fraction_per_label, seed)
    if task_args.max_train_samples:
        train_ds = subsample(train_ds, task_args.max_train_samples, seed)
    return train_ds


def _split_list(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


# ------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def predict(model, tokenizer, dataset, max_length: int = 128, batch_size: int = 64, desc: str = "Evaluating"):
    """Logits for a standard-column dataset (plain loop: works for any model, PEFT ones included)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    encoded = encode(dataset, tokenizer, max_length, desc="Tokenizing")
    cols = [c for c in encoded.column_names if c not in ("idx", "labels")]
    loader = DataLoader(encoded.select_columns(cols), batch_size=batch_size, collate_fn=collator(tokenizer))
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    for batch in tqdm(loader, desc=desc, leave=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        chunks.append(model(**batch).logits.float().cpu())
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 1), dtype=np.float32)


def score(task, logits: np.ndarray, dataset, label_map=None) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics and per-example predictions; ``label_map`` maps probabilities across label spaces."""
    from .evaluation.metrics import compute_metrics

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
    from .evaluation.crosslingual import per_language_metrics

    return {**metrics, **per_language_metrics(rows, dataset["language"])}


def _write_eval(run_dir: Path, task_name: str, split: str, metrics: dict, rows: list[dict]) -> None:
    out = runs.eval_dir(run_dir, task_name, split)
    runs.write_jsonl_atomic(out / "predictions.jsonl", rows)
    runs.write_json_atomic(out / "metrics.json", {"task": task_name, "split": split, "n": len(rows), **metrics})


# ------------------------------------------------------------------------------------------ training
class _StepTimer(TrainerCallback):
    """Wall and process-CPU seconds of each training step, and the machine record of the training.

    It applies the run's ``--threads`` when created (see :mod:`advtune.threads`). CPU step times sit
    beside the wall ones because on a shared machine wall time follows the other jobs' load, so the
    report compares methods by CPU time where both runs recorded it.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self._t = self._c = 0.0
        self._setting = apply_threads(threads)
        self._probe = MachineProbe.start(self._setting)
        self.machine: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._probe = MachineProbe.start(self._setting)

    def on_step_begin(self, args, state, control, **kwargs):
        self._t, self._c = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)
        self.cpu_times.append(time.process_time() - self._c)

    def on_train_end(self, args, state, control, **kwargs):
        self.machine = self._probe.finish()

    def record(self) -> dict[str, Any]:
        """The ``train_stats.json`` fields: median wall and CPU step time, threads and machine load."""
        return {
            "step_time_median_s": statistics.median(self.times) if self.times else None,
            "step_cpu_time_median_s": statistics.median(self.cpu_times) if self.cpu_times else None,
            "machine": self.machine or self._probe.finish(),
        }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("advtune", "torch", "transformers", "datasets", "accelerate", "peft"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _prepare_output(out: Path, run_args: RunArguments, main: bool = True) -> None:
    """Refuse a used run folder unless --resume / --overwrite; ``main``: the process that may delete it."""
    if out.exists() and any(out.iterdir()):
        if run_args.overwrite:
            if main:
                shutil.rmtree(out)
        elif runs.is_finished(out):
            raise UsageError(f"run folder {out} holds a finished run; pass --overwrite to replace it")
        elif not run_args.resume:
            raise UsageError(f"run folder {out} holds an unfinished run; pass --resume to continue it or --overwrite")


def _barrier(training_args: AdvTrainingArguments) -> None:
    import torch.distributed as dist

    if training_args.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_training(
    task_args: TaskArguments,
    model_args: ModelArguments,
    run_args: RunArguments,
    training_args: AdvTrainingArguments,
    method: Method | None = None,
    adapter_args: adapters.AdapterArguments | None = None,
) -> Path:
    """Train, save and evaluate one run; returns the run folder."""
    if not training_args.output_dir:
        raise UsageError("--output-dir is required")
    out = Path(training_args.output_dir)
    method = method or get_method_class(run_args.method)()
    # ---- validate and load everything before the first byte is written
    task, train_ds, evals = load_task(task_args)
    train_ds = _subsample_train(train_ds, task_args, training_args.seed)
    label_names = list(task.label_names) if task.label_names else None
    tokenizer = load_tokenizer(model_args.model)
    from transformers import set_seed

    set_seed(training_args.seed)
    is_mc = mc.is_multiple_choice(task)
    if is_mc:
        model = mc.load_model(model_args.model)
    else:
        model = load_model(
            model_args.model, num_labels=task.num_labels, regression=task.is_regression, label_names=label_names
        )
    adapter_args = adapter_args or adapters.AdapterArguments()
    model = adapters.wrap_for_task(model, adapter_args, is_mc)
    _encode, _collator, _predict = (mc.encode, mc.collator, mc.predict) if is_mc else (encode, collator, predict)
    # under torchrun / accelerate launch every process checks the folder before any of them writes;
    # the main process alone writes the run folder (the Trainer saves checkpoints the same way)
    main = training_args.process_index == 0
    _prepare_output(out, run_args, main)
    _barrier(training_args)
    resume = run_args.resume and _last_checkpoint(out) is not None

    out.mkdir(parents=True, exist_ok=True)
    config = {
        "task": {**dataclass_values(task_args), "name": task.name, "metric": task.metric, "pair": task.pair}
        | ({"kind": mc.KIND, "num_choices": task.num_choices} if is_mc else {}),
        "model": dataclass_values(model_args),
        "method": {"name": method.name, "config": method.config.to_dict()},
        "adapter": adapters.run_record(adapter_args, model_args.model),
        "training": dataclass_values(training_args),
        "label_names": label_names,
        "num_train_examples": len(train_ds),
        "versions": versions(),
    }
    if main:
        runs.write_json_atomic(out / runs.RUN_CONFIG, config)

    from .trainer import AdversarialTrainer

    model = method.setup(model, tokenizer=tokenizer, task=task)
    if main and method.embedding_scale is not None:  # measured by setup: record what the radii were scaled by
        config["method"]["embedding_scale"] = method.embedding_scale
        runs.write_json_atomic(out / runs.RUN_CONFIG, config)
    timer = _StepTimer(training_args.threads)
    eval_ds = next(iter(evals.values()), None)
    trainer = AdversarialTrainer(
        model=model,
        args=training_args,
        method=method,
        train_dataset=_encode(train_ds, tokenizer, task_args.max_length),
        eval_dataset=_encode(eval_ds, tokenizer, task_args.max_length) if eval_ds is not None else None,
        data_collator=_collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=_trainer_metrics(task) if eval_ds is not None else None,
        callbacks=[timer],
    )
    result = trainer.train(resume_from_checkpoint=str(_last_checkpoint(out)) if resume else None)
    if not main:
        return out

    inference = method.inference_model(trainer.model)
    method.save_inference_model(inference, tokenizer, out)
    state = method.state_dict()
    if state:
        torch.save(state, out / METHOD_STATE_FILE)
    if adapter_args.merge_adapter:
        adapters.write_merged(inference, tokenizer, out)
    runs.write_json_atomic(out / "log_history.json", trainer.state.log_history)
    runs.write_json_atomic(
        out / "train_stats.json",
        {
            **{k: v for k, v in result.metrics.items()},
            "global_step": trainer.state.global_step,
            "world_size": training_args.world_size,
            **timer.record(),
            "num_train_examples": len(train_ds),
        },
    )
    summary: dict[str, dict[str, float]] = {}
    inference.eval()
    for split, ds in evals.items():
        logits = _predict(inference, tokenizer, ds, task_args.max_length, training_args.per_device_eval_batch_size)
        metrics, rows = score(task, logits, ds)
        metrics = _with_languages(metrics, rows, ds)
        _write_eval(out, task.name, split, metrics, rows)
        summary[split] = metrics
    for ckpt in out.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)  # the final weights are saved; checkpoints only serve --resume
    runs.write_json_atomic(out / runs.METRICS, {"task": task.name, "method": method.name, "splits": summary})
    return out


def _trainer_metrics(task):
    from .evaluation.metrics import compute_metrics

    def fn(eval_pred):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        preds = logits.reshape(len(labels), -1)[:, 0] if task.is_regression else logits.argmax(-1)
        return compute_metrics(task.metric, preds, labels)

    return fn


def _last_checkpoint(out: Path) -> Path | None:
    ckpts = sorted(
        out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1
    )
    return ckpts[-1] if ckpts else None


def train(
    task: str = "sst2",
    method: str = "standard",
    output_dir: str | Path = "runs/run",
    model: str = "minilm",
    method_overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    **kwargs: Any,
) -> Path:
    """Python API: ``train("rte", "freelb", "runs/rte-freelb", max_train_samples=500, num_train_epochs=1)``.

    Keyword arguments go to :class:`TaskArguments`, :class:`~advtune.adapters.AdapterArguments` (``peft="lora"``)
    or :class:`AdvTrainingArguments` by name.
    """
    task_fields = {f.name for f in dataclasses.fields(TaskArguments)}
    adapter_fields = {f.name for f in dataclasses.fields(adapters.AdapterArguments)}
    task_kwargs = {k: v for k, v in kwargs.items() if k in task_fields}
    adapter_kwargs = {k: v for k, v in kwargs.items() if k in adapter_fields}
    train_kwargs = {k: v for k, v in kwargs.items() if k not in task_fields | adapter_fields}
    train_kwargs.setdefault("report_to", "none")
    task_args = TaskArguments(task=task, **task_kwargs)
    training_args = AdvTrainingArguments(output_dir=str(output_dir), **train_kwargs)
    method_obj = get_method_class(method)(**(method_overrides or {}))
    return run_training(
        task_args,
        ModelArguments(model=model),
        RunArguments(method=method, overwrite=overwrite, resume=resume),
        training_args,
        method_obj,
        adapters.AdapterArguments(**adapter_kwargs),
    )


# ------------------------------------------------------------------------------------------ loading + eval
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


def load_run(run_dir: str | Path) -> LoadedRun:
    """A finished run's inference model, tokenizer, config and task."""
    run = runs.require_run(run_dir)
    config = runs.read_json(run / runs.RUN_CONFIG)
    method_cls = get_method_class(config["method"]["name"])
    if config["task"].get("kind") == mc.KIND:
        model, tokenizer = mc.load_inference_model(run)
    else:
        model, tokenizer = method_cls.load_inference_model(run, config)
    model.eval()
    task = _run_task(config)
    return LoadedRun(run, config, model, tokenizer, task)


def _run_task(config: dict[str, Any]):
    from .tasks import get_task
    from .tasks.base import Task

    name = config["task"]["name"]
    if config["task"].get("kind") == mc.KIND:
        return mc.run_task(config["task"])
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
    from .tasks import get_task, resolve_data_dir

    loaded = load_run(run_dir)
    run_task = loaded.task
    label_map = None
    if data_file and task is None and not mc.is_multiple_choice(run_task):
        from .tasks.files import load_file_task

        if not text_fields or not label_field:
            raise UsageError("--data-file needs --text-fields and --label-field")
        fields = [f.strip() for f in text_fields.split(",") if f.strip()]
        target, ds = load_file_task(
            data_file,
            fields,
            label_field,
            label_names=loaded.label_names,
            name="file",
            regression=run_task.is_regression,
        )
        datasets_ = {split or "file": ds}
    else:
        target = get_task(task) if task else run_task
        if target.name != run_task.name:
            from .evaluation.transfer import label_mapping

            label_map = label_mapping(loaded.label_names, target)
        splits = [target.canonical_split(split)] if split else list(target.eval_splits)
        ddir = resolve_data_dir(data_dir)
        if data_file:
            datasets_ = {s: target.load(s, data_dir=ddir, data_file=data_file) for s in splits}
        else:
            datasets_ = {s: target.load(s, data_dir=ddir) for s in splits}
    results = {}
    for s, ds in datasets_.items():
        if max_samples:
            if sample_seed is not None:
                ds = ds.shuffle(seed=sample_seed)
            ds = ds.select(range(min(len(ds), max_samples)))
        _predict = mc.predict if mc.is_multiple_choice(target) else predict
        logits = _predict(loaded.model, loaded.tokenizer, ds, loaded.max_length, batch_size, desc=f"{target.name}.{s}")
        metrics, rows = score(target, logits, ds, label_map=label_map)
        metrics = _with_languages(metrics, rows, ds)
        _write_eval(loaded.path, target.name, s, metrics, rows)
        results[f"{target.name}.{s}"] = metrics
    return results
