"""Train and evaluate: the Python API behind ``advtune train`` and ``advtune eval``.

``train()`` validates everything before writing anything, trains with
:class:`~advtune.trainer.AdversarialTrainer`, saves the inference model as safetensors, evaluates
the task's evaluation splits and writes ``metrics.json`` last (see :mod:`advtune.runs`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from . import adapters, checkpoints, faults, runs
from .config import AdvTrainingArguments, ModelArguments, RunArguments, TaskArguments, dataclass_values
from .data import collator, encode
from .errors import UsageError
from .methods import METHOD_STATE_FILE, Method, get_method_class
from .modeling import load_model, load_tokenizer, resolve_model_path
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
        regression = {"auto": None, "classification": False, "regression": True}[task_args.task_type]
        task, train_ds = load_file_task(
            task_args.train_file, fields, task_args.label_field, label_names=label_names, regression=regression
        )
        evals = {}
        if task_args.eval_file:
            _, evals["validation"] = load_file_task(
                task_args.eval_file,
                fields,
                task_args.label_field,
                label_names=list(task.label_names or []) or None,
                regression=task.is_regression,
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


class _RunClock(TrainerCallback, ExportableState):
    """Whole-run bookkeeping that survives ``--resume``.

    A log line is forced at every checkpoint, so the checkpoint's ``log_history`` accounts for the loss
    of every step up to it (the whole-run ``train_loss`` of a resumed run is rebuilt from it), and the
    training time so far is stored in the checkpoint's ``trainer_state.json``. Also the ``step`` fault
    point of :mod:`advtune.faults`.
    """

    def __init__(self, runtime_s: float = 0.0, keep: int | None = None) -> None:
        self.runtime_s = runtime_s  # training seconds of the earlier parts of the run
        self.keep = keep  # --save-total-limit, applied here once the new checkpoint is complete
        self._start = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        faults.point("step", state.global_step)
        if control.should_save:
            control.should_log = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            checkpoints.rotate(args.output_dir, self.keep, protect=state.best_model_checkpoint)

    def state(self) -> dict:
        return {"args": {}, "attributes": {"runtime_s": self.runtime_s + time.perf_counter() - self._start}}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("advtune", "torch", "transformers", "datasets", "accelerate", "peft"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _barrier(training_args: AdvTrainingArguments) -> None:
    import torch.distributed as dist

    if training_args.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


@dataclass
class _Prepared:
    """Everything a run needs, loaded and checked before the run folder is touched."""

    task: Any
    train_ds: Any
    evals: dict
    tokenizer: Any
    model: Any
    method: Method
    adapter_args: adapters.AdapterArguments


def _prepare(task_args, model_args, run_args, training_args, method: Method | None, adapter_args=None) -> _Prepared:
    """Validate and load in order of cost: method, model path, data and labels, tokenizer, model, optimizer."""
    method = method or get_method_class(run_args.method)()
    resolve_model_path(model_args.model)
    task, train_ds, evals = load_task(task_args)
    train_ds = _subsample_train(train_ds, task_args, training_args.seed)
    _check_training_labels(task, train_ds, task_args)
    _check_optimizer(training_args, None)
    _check_max_length(task_args.max_length, model_args.model)
    tokenizer = load_tokenizer(model_args.model)
    from transformers import set_seed

    set_seed(training_args.seed)
    if mc.is_multiple_choice(task):
        model = mc.load_model(model_args.model)
    else:
        labels = list(task.label_names) if task.label_names else None
        model = load_model(
            model_args.model, num_labels=task.num_labels, regression=task.is_regression, label_names=labels
        )
    adapter_args = adapter_args or adapters.AdapterArguments()
    model = adapters.wrap_for_task(model, adapter_args, mc.is_multiple_choice(task))
    _check_optimizer(training_args, model)
    return _Prepared(task, train_ds, evals, tokenizer, model, method, adapter_args)


def _check_training_labels(task, train_ds, task_args: TaskArguments) -> None:
    """A classifier needs at least two classes in its training data."""
    if task.is_regression or mc.is_multiple_choice(task) or len(train_ds) == 0:
        return
    present = set(train_ds["label"])
    if len(present) < 2:
        where = task_args.train_file or f"task '{task.name}' ({len(train_ds)} training examples)"
        name = task.label_names[next(iter(present))] if present and task.label_names else "?"
        raise UsageError(
            f"{where}: every training example has the label '{name}'; a classifier needs at least two classes"
        )


def _check_max_length(max_length: int, model_name: str) -> None:
    """A ``--max-length`` beyond the model's position embeddings would fail at the first long example.

    Read from the model's config alone (cheap and quiet); a config that does not load is reported
    when the model is loaded.
    """
    from transformers import AutoConfig

    try:
        limit = getattr(AutoConfig.from_pretrained(resolve_model_path(model_name)), "max_position_embeddings", None)
    except (OSError, ValueError):
        return
    if isinstance(limit, int) and max_length > limit:
        raise UsageError(f"--max-length {max_length} exceeds the model's {limit} positions")


def _check_optimizer(training_args: AdvTrainingArguments, model) -> None:
    """An optimizer that cannot be built (``--optim adamw_bnb_8bit`` without bitsandbytes) fails now, not mid-run.

    Called once before the model is loaded (``model=None``: most optimizers need no model to be
    resolved; those that do are checked again with the model).
    """
    from transformers import Trainer

    try:
        Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    except (ImportError, ValueError, NotImplementedError) as exc:
        optim = getattr(training_args.optim, "value", training_args.optim)
        raise UsageError(f"--optim {optim}: {_first_line(exc)}") from None
    except (TypeError, AttributeError):
        if model is not None:
            raise


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def run_training(
    task_args: TaskArguments,
    model_args: ModelArguments,
    run_args: RunArguments,
    training_args: AdvTrainingArguments,
    method: Method | None = None,
    adapter_args: adapters.AdapterArguments | None = None,
) -> Path:
    """Train, save and evaluate one run; returns the run folder.

    Everything is validated and loaded before the run folder is touched; ``--overwrite`` moves the old
    run aside and deletes it only when the new one has written ``metrics.json`` (see :func:`runs.replacing`).
    """
    if not training_args.output_dir:
        raise UsageError("--output-dir is required (the run folder to write)")
    out = Path(training_args.output_dir)
    # under torchrun / accelerate launch every process checks the folder before any of them writes;
    # the main process alone writes the run folder (the Trainer saves checkpoints the same way)
    main = training_args.process_index == 0
    if main:
        runs.recover(out)
    mode = runs.check_output(out, overwrite=run_args.overwrite, resume=run_args.resume)
    prepared = _prepare(task_args, model_args, run_args, training_args, method, adapter_args)
    _barrier(training_args)
    with runs.replacing(out, replace=mode == "replace" and main), checkpoints.discard_if_fruitless(out, mode, main):
        _barrier(training_args)
        checkpoint = checkpoints.latest_complete(out, main=main) if mode == "resume" else None
        _train_and_save(out, prepared, task_args, model_args, training_args, checkpoint, main)
    return out


def _run_config(prepared: _Prepared, task_args, model_args, training_args) -> dict[str, Any]:
    task = prepared.task
    is_mc = mc.is_multiple_choice(task)
    return {
        "task": {**dataclass_values(task_args), "name": task.name, "metric": task.metric, "pair": task.pair}
        | ({"kind": mc.KIND, "num_choices": task.num_choices} if is_mc else {}),
        "model": dataclass_values(model_args),
        "method": {"name": prepared.method.name, "config": prepared.method.config.to_dict()},
        "adapter": adapters.run_record(prepared.adapter_args, model_args.model),
        "training": dataclass_values(training_args),
        "label_names": list(task.label_names) if task.label_names else None,
        "num_train_examples": len(prepared.train_ds),
        "versions": versions(),
    }


def _train_and_save(out: Path, p: _Prepared, task_args, model_args, training_args, checkpoint, main: bool) -> None:
    """Train (from ``checkpoint`` when resuming), then save weights, statistics, evaluations and metrics.json."""
    from .trainer import AdversarialTrainer

    is_mc = mc.is_multiple_choice(p.task)
    _encode, _collator, _predict = (mc.encode, mc.collator, mc.predict) if is_mc else (encode, collator, predict)
    out.mkdir(parents=True, exist_ok=True)
    config = _run_config(p, task_args, model_args, training_args)
    if main:
        runs.write_json_atomic(out / runs.RUN_CONFIG, config)
    model = p.method.setup(p.model, tokenizer=p.tokenizer, task=p.task)
    if main and p.method.embedding_scale is not None:  # measured by setup: record what the radii were scaled by
        config["method"]["embedding_scale"] = p.method.embedding_scale
        runs.write_json_atomic(out / runs.RUN_CONFIG, config)
    timer = _StepTimer(training_args.threads)
    earlier = checkpoints.Earlier.read(checkpoint)
    clock = _RunClock(earlier.runtime_s, keep=training_args.save_total_limit)
    eval_ds = next(iter(p.evals.values()), None)
    trainer = AdversarialTrainer(
        model=model,
        args=training_args,
        method=p.method,
        train_dataset=_encode(p.train_ds, p.tokenizer, task_args.max_length),
        eval_dataset=_encode(eval_ds, p.tokenizer, task_args.max_length) if eval_ds is not None else None,
        data_collator=_collator(p.tokenizer),
        processing_class=p.tokenizer,
        compute_metrics=_trainer_metrics(p.task) if eval_ds is not None else None,
        callbacks=[timer, clock],
    )
    trainer.args.save_total_limit = None  # the Trainer would delete the old checkpoint before the new one is whole
    faults.install_checkpoint_hook(trainer)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if not main:
        return
    inference = p.method.inference_model(trainer.model)
    p.method.save_inference_model(inference, p.tokenizer, out)
    state = p.method.state_dict()
    if state:
        torch.save(state, out / METHOD_STATE_FILE)
    if p.adapter_args.merge_adapter:
        adapters.write_merged(inference, p.tokenizer, out)
    runs.write_json_atomic(out / "log_history.json", trainer.state.log_history)
    stats = checkpoints.whole_run_stats(result.metrics, trainer.state.global_step, earlier)
    runs.write_json_atomic(
        out / "train_stats.json",
        {
            **stats,
            "global_step": trainer.state.global_step,
            "world_size": training_args.world_size,
            **timer.record(),
            "num_train_examples": len(p.train_ds),
        },
    )
    summary: dict[str, dict[str, float]] = {}
    inference.eval()
    for split, ds in p.evals.items():
        logits = _predict(inference, p.tokenizer, ds, task_args.max_length, training_args.per_device_eval_batch_size)
        metrics, rows = score(p.task, logits, ds)
        metrics = _with_languages(metrics, rows, ds)
        _write_eval(out, p.task.name, split, metrics, rows)
        summary[split] = metrics
    runs.write_json_atomic(out / runs.METRICS, {"task": p.task.name, "method": p.method.name, "splits": summary})
    checkpoints.remove_all(out)  # the final weights are saved; checkpoints only served --resume
    runs.remove_temporaries(out)


def _trainer_metrics(task):
    from .evaluation.metrics import compute_metrics

    def fn(eval_pred):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        preds = logits.reshape(len(labels), -1)[:, 0] if task.is_regression else logits.argmax(-1)
        return compute_metrics(task.metric, preds, labels)

    return fn


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


def read_run(run_dir: str | Path) -> tuple[Path, dict[str, Any], Any]:
    """A finished run's folder, config and task, every file checked, without loading the model (cheap)."""
    run = runs.require_run(run_dir)
    runs.check_run_files(run)  # weights, tokenizer, configs, method state: damage is one line naming the file
    config = _read_run_config(run)
    get_method_class(config["method"]["name"])
    return run, config, _run_task(config)


def load_run(run_dir: str | Path) -> LoadedRun:
    """A finished run's inference model, tokenizer, config and task."""
    run, config, task = read_run(run_dir)
    method_cls = get_method_class(config["method"]["name"])
    if config["task"].get("kind") == mc.KIND:
        model, tokenizer = mc.load_inference_model(run)
    else:
        model, tokenizer = method_cls.load_inference_model(run, config)
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
        _predict = mc.predict if mc.is_multiple_choice(target) else predict
        logits = _predict(loaded.model, loaded.tokenizer, ds, loaded.max_length, batch_size, desc=f"{target.name}.{s}")
        metrics, rows = score(target, logits, ds, label_map=label_map)
        metrics = _with_languages(metrics, rows, ds)
        _write_eval(loaded.path, target.name, s, metrics, rows)
        results[f"{target.name}.{s}"] = metrics
    return results


def _eval_sets(run_task, label_names, task, split, data_file, text_fields, label_field, data_dir):
    """The target task, its evaluation datasets by split and the label map (another task's label space)."""
    from .tasks import get_task, resolve_data_dir

    label_map = None
    if data_file and task is None and not mc.is_multiple_choice(run_task):
        from .tasks.files import load_file_task

        if not text_fields or not label_field:
            raise UsageError("--data-file needs --text-fields and --label-field")
        fields = [f.strip() for f in text_fields.split(",") if f.strip()]
        target, ds = load_file_task(
            data_file, fields, label_field, label_names=label_names, name="file", regression=run_task.is_regression
        )
        return target, {split or "file": ds}, None
    target = get_task(task) if task else run_task
    if target.name != run_task.name:
        from .evaluation.transfer import label_mapping

        label_map = label_mapping(label_names, target)
    splits = [target.canonical_split(split)] if split else list(target.eval_splits)
    ddir = resolve_data_dir(data_dir)
    if data_file:
        return target, {s: target.load(s, data_dir=ddir, data_file=data_file) for s in splits}, label_map
    return target, {s: target.load(s, data_dir=ddir) for s in splits}, label_map
