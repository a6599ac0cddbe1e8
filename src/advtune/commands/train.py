"""``advtune train``: HfArgumentParser over task, model, run, method and TrainingArguments dataclasses.

``--config file.yaml`` supplies any of the flags; the command line overrides it. The method's own
config class (``--method freelb`` → ``FreeLBConfig``) contributes its ``adv_*`` flags.
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from ..adapters import AdapterArguments
from ..config import AdvTrainingArguments, ModelArguments, RunArguments, TaskArguments, read_yaml, yaml_to_argv
from ..errors import UsageError
from ..methods import get_method_class
from . import ArgumentParser, OneLineErrors


class _Parser(OneLineErrors, HfArgumentParser):
    """HfArgumentParser with one-line errors (the full usage of ``advtune train`` is 115 lines)."""


def parse(argv: list[str]):
    """``(task, model, run, method, training)`` arguments; :func:`parse_all` adds the adapter's."""
    return parse_all(argv)[:5]


def parse_all(argv: list[str]):
    pre = ArgumentParser(prog="advtune train", add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--method")
    known, _ = pre.parse_known_args(argv)
    yaml_args: list[str] = []
    method_name = known.method
    if known.config:
        data = read_yaml(known.config)
        method_name = method_name or data.get("method")
        yaml_args = yaml_to_argv({k: v for k, v in data.items() if k != "config"})
    method_cls = get_method_class(method_name or "standard")
    parser = _Parser(
        (
            TaskArguments,
            ModelArguments,
            RunArguments,
            method_cls.config_class,
            AdvTrainingArguments,
            AdapterArguments,
        ),
        prog="advtune train",
        description="Fine-tune a Transformer classifier with an (adversarial) training method.",
    )
    try:
        parsed = parser.parse_args_into_dataclasses(args=yaml_args + argv, look_for_args_file=False)
        task_args, model_args, run_args, method_cfg, training_args, adapter_args = parsed
    except UsageError:
        raise
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc).strip().splitlines()[0]) from exc
    return task_args, model_args, run_args, method_cls(method_cfg), training_args, adapter_args


def main(argv: list[str]) -> int:
    from ..pipeline import run_training

    task_args, model_args, run_args, method, training_args, adapter_args = parse_all(argv)
    out = run_training(task_args, model_args, run_args, training_args, method, adapter_args)
    if training_args.process_index == 0:  # the main process wrote the run folder and prints its summary
        _print_summary(out)
    return 0


def _print_summary(run_dir) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..runs import METRICS, read_json

    metrics = read_json(run_dir / METRICS)
    table = Table(title=f"{metrics['task']} · {metrics['method']} · {run_dir}")
    table.add_column("split")
    keys = sorted({k for m in metrics["splits"].values() for k in m})
    for key in keys:
        table.add_column(key, justify="right")
    for split, m in metrics["splits"].items():
        table.add_row(split, *[f"{m[k]:.4f}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in keys])
    Console(file=sys.stdout).print(table)
