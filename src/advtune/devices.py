"""Where a finished run's model runs: ``--device`` of ``eval``, ``attack``, ``robustness`` and ``surface``.

``auto`` (the default) is the first CUDA GPU when torch sees one, else the CPU: on a GPU machine the
commands that load a finished run use the GPU without being asked (training already does, through
the Trainer). ``cpu``, ``cuda`` and ``cuda:N`` choose explicitly; a GPU that is not there is refused
before anything is loaded. The choice of a command holds for the rest of its process (like
``--threads``), so :func:`advtune.pipeline.load_run` puts every run it loads there.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import UsageError

HELP = "where the run's model runs: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N"
CHOICES = "auto, cpu, cuda, cuda:N"
_chosen: str = "auto"


def resolve(value: Any = None) -> Any:
    """The ``torch.device`` for a ``--device`` value (None: ``auto``); UsageError for a bad or absent device."""
    import torch

    text = "auto" if value is None else str(value).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise UsageError(f"invalid --device {value!r} (choose from: {CHOICES})")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {text}: no CUDA GPU is available on this machine (use --device cpu)")
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise UsageError(f"--device {text}: this machine has {count} CUDA GPU(s), numbered from 0")
    return torch.device(text)


def choose(value: Any = None) -> Any:
    """Validate ``--device`` and make it this process's device for loaded runs; returns the device."""
    global _chosen
    device = resolve(value)
    _chosen = "auto" if value is None else str(value).strip().lower()
    return device


def current() -> Any:
    """The device a run loaded now goes to: the last :func:`choose` of this process, else ``auto``."""
    return resolve(_chosen)


def batch_to(batch: Any, model: Any) -> dict[str, Any]:
    """A collated batch with every tensor on ``model``'s device (loaders build batches on the CPU)."""
    device = next(model.parameters()).device
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
