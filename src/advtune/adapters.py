"""Parameter-efficient adapters (``--peft lora|ia3|prompt|prefix``): the one way advtune wraps, saves
and loads a PEFT model.

Every method reaches the model only through ``get_input_embeddings()`` and its forward, and ``peft``
keeps both (prompt and prefix tuning look the text up through the same embedding module before they
add their virtual tokens), so any method trains an adapter unchanged: the base weights are frozen,
the adapter and the classification head train. The head (``classifier`` / ``score``, plus a BERT
``pooler``, which the packaged MiniLM ships untrained) is a ``modules_to_save`` copy, so it is saved
with the adapter.

A run folder stores ``peft_adapter/`` (adapter + head, safetensors; no copy of the base model), the
tokenizer, and names the base model in ``run_config.json`` (``model.model``); :func:`load_adapter`
rebuilds the classifier from both, so every command that loads a run works on adapter runs.
``--merge-adapter`` also writes ``merged/``: a plain ``transformers`` folder with LoRA / IA³ merged
into the base weights (prompt and prefix adapters add inputs, there is nothing to merge them into).
PEAFT's defence prompt goes through :func:`wrap` too (:mod:`advtune.methods.peaft`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError

ADAPTER_KINDS = ("lora", "ia3", "prompt", "prefix")
MERGEABLE = ("lora", "ia3")
ADAPTER_DIR = "peft_adapter"
MERGED_DIR = "merged"


def _f(default: Any, help: str) -> Any:  # noqa: A002
    return field(default=default, metadata={"help": help})


@dataclass
class AdapterArguments:
    """Flags (and YAML keys) of the adapter; ``peft=None`` trains every weight, as before."""

    peft: str | None = _f(None, "Train a parameter-efficient adapter: lora, ia3, prompt or prefix (default: none).")
    peft_rank: int = _f(8, "LoRA rank r.")
    peft_alpha: float = _f(16.0, "LoRA alpha (the update is scaled by alpha / r).")
    peft_dropout: float = _f(0.05, "LoRA dropout on the adapter's input.")
    peft_target_modules: str | None = _f(
        None, "Comma-separated module names LoRA / IA3 wrap (default: peft's choice for the architecture)."
    )
    peft_num_virtual_tokens: int = _f(20, "Virtual tokens of a prompt / prefix adapter.")
    merge_adapter: bool = _f(False, "Also write merged/: the base model with the LoRA / IA3 weights merged in.")

    def __post_init__(self) -> None:
        if self.peft is not None and self.peft not in ADAPTER_KINDS:
            raise UsageError(f"invalid peft={self.peft!r}: choose from {', '.join(ADAPTER_KINDS)}")
        checks = (
            (self.peft_rank > 0, "peft_rank", "must be positive"),
            (self.peft_alpha > 0, "peft_alpha", "must be positive"),
            (0 <= self.peft_dropout < 1, "peft_dropout", "must be in [0, 1)"),
            (self.peft_num_virtual_tokens > 0, "peft_num_virtual_tokens", "must be positive"),
        )
        for ok, name, why in checks:
            if not ok:
                raise UsageError(f"invalid {name}={getattr(self, name)!r}: {why}")
        if self.peft_target_modules and self.peft not in MERGEABLE:
            raise UsageError("--peft_target_modules applies to --peft lora or ia3 only")
        if self.merge_adapter and self.peft not in MERGEABLE:
            raise UsageError("--merge_adapter needs --peft lora or ia3 (prompt and prefix adapters cannot be merged)")

    def target_modules(self) -> list[str] | None:
        names = [n.strip() for n in (self.peft_target_modules or "").split(",") if n.strip()]
        return names or None


def head_modules(model: torch.nn.Module, train_pooler: bool = True) -> list[str] | None:
    """Extra modules that train with the adapter: a BERT-style ``pooler`` (peft adds ``classifier`` /
    ``score`` itself for sequence classification)."""
    has_pooler = any(n.split(".")[-1] == "pooler" for n, _ in model.named_modules())
    return ["pooler"] if train_pooler and has_pooler else None


def peft_config(model: torch.nn.Module, args: AdapterArguments, train_pooler: bool = True):
    """The ``peft`` config of ``args.peft`` for ``model`` (sequence classification)."""
    import peft

    from .embeddings import embedding_dim

    common: dict[str, Any] = {"task_type": "SEQ_CLS", "modules_to_save": head_modules(model, train_pooler)}
    if args.peft == "lora":
        return peft.LoraConfig(
            r=args.peft_rank,
            lora_alpha=args.peft_alpha,
            lora_dropout=args.peft_dropout,
            target_modules=args.target_modules(),
            **common,
        )
    if args.peft == "ia3":
        targets = args.target_modules()
        # IA3 needs to know which of its targets are feed-forward layers; peft's defaults say so per architecture
        return peft.IA3Config(target_modules=targets, feedforward_modules=[] if targets else None, **common)
    # explicit sizes: peft cannot infer them from every config (DistilBERT says dim / n_layers / n_heads)
    config = model.config
    sizes = {
        "num_virtual_tokens": args.peft_num_virtual_tokens,
        "token_dim": embedding_dim(model),
        "num_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
    }
    if args.peft == "prompt":
        return peft.PromptTuningConfig(prompt_tuning_init=peft.PromptTuningInit.SAMPLE_VOCAB, **sizes, **common)
    return peft.PrefixTuningConfig(**sizes, **common)


def wrap(model: torch.nn.Module, args: AdapterArguments, train_pooler: bool = True) -> torch.nn.Module:
    """``model`` with a fresh adapter: base weights frozen, adapter and head trainable."""
    from peft import get_peft_model

    if args.peft is None:
        return model
    if is_adapter_model(model):
        raise UsageError("the model already carries a PEFT adapter; one adapter per run")
    try:
        return _cache_prefix(get_peft_model(model, peft_config(model, args, train_pooler)))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot add a {args.peft} adapter to {type(model).__name__}: {_first_line(exc)}") from exc


def _cache_prefix(model: torch.nn.Module) -> torch.nn.Module:
    """Let a prefix adapter reach ``transformers`` 5 models, whose forward takes the key/value prefix as
    ``cache`` (a named argument, or through ``**kwargs`` to the backbone) where ``peft`` (0.21) looks for,
    and passes, ``past_key_values`` (it then refuses the model).

    Only the hand-over changes: peft still builds the prefix (``get_prompt``: a ``DynamicCache`` of
    ``num_virtual_tokens`` keys and values per layer) and extends the attention mask over it.
    """
    import inspect
    import types

    if adapter_kind(model) != "prefix":
        return model
    if "past_key_values" in inspect.signature(model.base_model.forward).parameters:
        return model  # a model (or peft version) that still takes the old name: peft's own forward works

    def prefix_forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):
        for key in ("output_attentions", "output_hidden_states", "return_dict"):
            if kwargs.get(key) is None:
                kwargs.pop(key, None)
        batch = input_ids.shape[0] if input_ids is not None else inputs_embeds.shape[0]
        return self.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            labels=labels,
            cache=self.get_prompt(batch),
            **kwargs,
        )

    model._prefix_tuning_forward = types.MethodType(prefix_forward, model)
    return model


def wrap_for_task(model: torch.nn.Module, args: AdapterArguments, multiple_choice: bool = False) -> torch.nn.Module:
    """:func:`wrap` for the pipeline: adapters are for sequence classification (peft has no multiple-choice task)."""
    if args.peft is not None and multiple_choice:
        raise UsageError("--peft is not supported for multiple-choice tasks")
    return wrap(model, args)


def is_adapter_model(model: Any) -> bool:
    """Whether ``model`` is a ``peft`` model (a ``PeftModel`` or one of its task subclasses)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def adapter_kind(model: torch.nn.Module) -> str | None:
    """``lora``, ``ia3``, ``prompt`` or ``prefix`` for a PEFT model, else ``None``."""
    if not is_adapter_model(model):
        return None
    kinds = {"LORA": "lora", "IA3": "ia3", "PROMPT_TUNING": "prompt", "PREFIX_TUNING": "prefix"}
    peft_type = model.peft_config[model.active_adapter].peft_type
    return kinds.get(str(getattr(peft_type, "value", peft_type)), str(peft_type).lower())


def save_adapter(model: torch.nn.Module, tokenizer: Any, out_dir: str | Path) -> None:
    """``out_dir/peft_adapter/`` (adapter + head, safetensors) and the tokenizer; not the base model."""
    model.save_pretrained(Path(out_dir) / ADAPTER_DIR, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def has_adapter(run_dir: str | Path) -> bool:
    return (Path(run_dir) / ADAPTER_DIR / "adapter_config.json").is_file()


def load_adapter(run_dir: str | Path, run_config: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    """The classifier of an adapter run: its base model (:func:`run_record`'s ``base_model``, else the run's
    ``--model``) + adapter + head."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from .modeling import load_model

    labels = run_config.get("label_names")
    base_model = run_config.get("adapter", {}).get("base_model") or run_config["model"]["model"]
    num_labels = len(labels) if labels else 1
    base = load_model(base_model, num_labels=num_labels, regression=not labels, label_names=labels)
    model = _cache_prefix(PeftModel.from_pretrained(base, str(Path(run_dir) / ADAPTER_DIR)))
    return model, AutoTokenizer.from_pretrained(str(run_dir))


def run_record(args: AdapterArguments, model_name: str) -> dict[str, Any]:
    """The adapter's entry in ``run_config.json``: its arguments and the base model it needs, a local
    folder as an absolute path (so the run loads from any working directory)."""
    path = Path(model_name).expanduser()
    base = str(path.resolve()) if path.exists() else model_name
    values = {f: getattr(args, f) for f in args.__dataclass_fields__}
    return {**values, "base_model": base if args.peft else None}


def write_merged(model: torch.nn.Module, tokenizer: Any, out_dir: str | Path) -> Path:
    """``out_dir/merged/``: a copy of ``model`` with its LoRA / IA³ weights merged (``model`` is untouched)."""
    kind = adapter_kind(model)
    if kind not in MERGEABLE:
        raise UsageError(f"cannot merge a {kind or 'missing'} adapter (only lora and ia3 merge into the weights)")
    merged = copy.deepcopy(model).merge_and_unload()
    target = Path(out_dir) / MERGED_DIR
    merged.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def trainable_parameters(model: torch.nn.Module) -> int:
    """Number of parameters that train (adapter + head under PEFT, all of them otherwise)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = [
    "ADAPTER_DIR",
    "ADAPTER_KINDS",
    "AdapterArguments",
    "adapter_kind",
    "has_adapter",
    "is_adapter_model",
    "load_adapter",
    "save_adapter",
    "trainable_parameters",
    "wrap",
    "write_merged",
]
