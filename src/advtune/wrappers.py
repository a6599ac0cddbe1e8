"""Looking through the wrappers a training model sits in, to the user's ``transformers`` model.

One function for the whole package, because the wrappers nest (accelerate's DDP around a compiled
PEFT model) and a helper that knows only some of them silently returns a wrapper: its ``config`` or
``get_input_embeddings()`` then belongs to the wrong object.
"""

from __future__ import annotations

import torch

_MAX_DEPTH = 16


def unwrap(model: torch.nn.Module, peft: bool = False) -> torch.nn.Module:
    """The model under DDP / DataParallel / accelerate (``.module``) and ``torch.compile`` (``_orig_mod``).

    These wrappers share the model's parameters and forward, so the result can be run in their place.
    ``peft=True`` also looks through PEFT wrappers (``get_base_model()``), for reading the
    ``transformers`` model's config or modules; do not *run* that result for a prompt-tuned model,
    whose forward without the wrapper has no soft prompt.
    """
    for _ in range(_MAX_DEPTH):
        inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module) and peft and type(model).__name__.startswith("Peft"):
            getter = getattr(model, "get_base_model", None)
            inner = getter() if callable(getter) else None
        if not isinstance(inner, torch.nn.Module) or inner is model:
            return model
        model = inner
    return model


__all__ = ["unwrap"]
