"""The one place that touches a model's input embeddings.

Everything goes through ``unwrap(model).get_input_embeddings()``, so any ``AutoModel`` works
(BERT, RoBERTa, DeBERTa, ...), under DDP/DataParallel/accelerate after unwrapping, and for a PEFT
``PeftModel`` (prompt tuning looks up ``word_embeddings(input_ids)`` through the same module before
it prepends the virtual tokens, so δ has the shape of ``input_ids`` there too). No attribute paths
or ``model_type`` checks.

Perturbing = a forward hook on the input-embedding module that adds δ to its output, i.e. to the
word (sub-word) embeddings only, leaving position and segment embeddings unchanged (FreeLB §3).
The hook lives only inside :func:`perturb_embeddings`, so no hook is ever left behind.

Dropout-mask reuse lives in :mod:`advtune.dropout_replay`, YOPO's first-block helpers beside YOPO
(:mod:`advtune.methods.yopo_blocks`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from .errors import UsageError
from .wrappers import unwrap

_HOOK_TAG = "_advtune_delta_hook"


def tag_hook(hook: Any) -> Any:
    """Mark a forward hook as this package's, so :func:`hooks_left` counts it (tests assert none stay)."""
    setattr(hook, _HOOK_TAG, True)
    return hook


def input_embedding_module(model: torch.nn.Module) -> torch.nn.Module:
    """The word-embedding module (``get_input_embeddings()``) of a possibly wrapped model."""
    inner = unwrap(model)
    getter = getattr(inner, "get_input_embeddings", None)
    module = getter() if callable(getter) else None
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"{type(inner).__name__} has no get_input_embeddings(); cannot perturb its embeddings")
    return module


def embedding_dim(model: torch.nn.Module) -> int:
    """Hidden size of the word embeddings (to shape δ without a lookup)."""
    module = input_embedding_module(model)
    dim = getattr(module, "embedding_dim", None)
    return int(dim) if dim is not None else int(module.weight.shape[-1])


SITES: tuple[str, ...] = ("word", "output")
"""Where a perturbation δ is added: ``"word"``, the word-embedding lookup ``V[input_ids]`` (FreeLB, PGD,
CAT, the papers' text); ``"output"``, the output of the whole embedding layer (word + position +
segment embeddings after LayerNorm and dropout), where SMART's reference code (MT-DNN) adds its noise."""


def embedding_output_module(model: torch.nn.Module) -> torch.nn.Module:
    """The embedding layer (``base_model.embeddings``: words, positions, segments, LayerNorm, dropout)."""
    inner = unwrap(model)
    module = getattr(getattr(inner, "base_model", inner), "embeddings", None)
    if not isinstance(module, torch.nn.Module):
        raise UsageError(
            f"{type(inner).__name__} has no base_model.embeddings layer, so its embedding output cannot be "
            "perturbed; use adv_variant=paper (perturb the word embeddings)"
        )
    return module


def embedding_output_dim(model: torch.nn.Module) -> int:
    """Width of the embedding layer's output: ``config.embedding_size`` (ALBERT, ELECTRA) or ``hidden_size``."""
    config = getattr(unwrap(model), "config", None)
    size = getattr(config, "embedding_size", None) or getattr(config, "hidden_size", None)
    return int(size) if size else embedding_dim(model)


def _site_module(model: torch.nn.Module, site: str) -> torch.nn.Module:
    if site not in SITES:
        raise ValueError(f"unknown perturbation site {site!r} (choose from {', '.join(SITES)})")
    return input_embedding_module(model) if site == "word" else embedding_output_module(model)


def word_embeddings(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The word-embedding lookup ``V[input_ids]`` (no positions/segments; includes an active δ hook)."""
    return input_embedding_module(model)(input_ids)


def _delta_hook(delta: torch.Tensor):
    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        d = delta
        if d.dim() == output.dim() + 1 and d.shape[0] * d.shape[1] == output.shape[0]:
            d = d.flatten(0, 1)  # multiple choice: δ (B, k, L, H), the model looks up (B * k, L)
        if output.shape != d.shape:
            raise RuntimeError(
                f"perturbation shape {tuple(delta.shape)} does not match the embedding output {tuple(output.shape)}"
            )
        return output + d.to(dtype=output.dtype, device=output.device)

    return tag_hook(hook)


@contextlib.contextmanager
def perturb_embeddings(model: torch.nn.Module, delta: torch.Tensor | None, site: str = "word") -> Iterator[None]:
    """Inside the block, every forward of ``model`` sees word embeddings ``V[input_ids] + δ``
    (``site="output"``: the embedding layer's output + δ, see :data:`SITES`).

    ``delta`` (shape ``(B, L, H)``, fp32 is fine: it is cast to the embeddings' dtype) may require
    grad; ``delta.grad`` is then filled by ``backward``. ``None`` is a no-op (clean pass). The hook
    is removed on exit, also after an exception.
    """
    if delta is None:
        yield
        return
    handle = _site_module(model, site).register_forward_hook(_delta_hook(delta))
    try:
        yield
    finally:
        handle.remove()


def forward_with_delta(
    model: torch.nn.Module, inputs: Mapping[str, Any], delta: torch.Tensor | None, site: str = "word"
) -> Any:
    """``model(**inputs)`` (labels dropped: methods compute their own loss) with δ on the embeddings."""
    kwargs = {k: v for k, v in inputs.items() if k != "labels"}
    with perturb_embeddings(model, delta, site):
        return model(**kwargs)


def hooks_left(model: torch.nn.Module) -> int:
    """Number of hooks of this package (δ, first-block recorders) still attached to the model (tests assert 0)."""
    return sum(1 for m in unwrap(model).modules() for fn in m._forward_hooks.values() if getattr(fn, _HOOK_TAG, False))


__all__ = [
    "embedding_dim",
    "forward_with_delta",
    "hooks_left",
    "input_embedding_module",
    "perturb_embeddings",
    "tag_hook",
    "word_embeddings",
]


# =============================================================================================
# Embedding-MATRIX perturbation (CAT, AT^V). Owned by the CAT issue; appended, nothing above changed.
#
# CAT perturbs the word-embedding matrix V rather than the looked-up vectors. Only the rows of
# tokens present in a batch have a non-zero gradient, so the perturbation is kept as
# ``(token_ids, row_delta)`` (unique ids x hidden) and added to the lookup output by a forward hook:
# (V + R)[ids] = V[ids] + R[ids]. Memory grows with the batch's unique tokens, never with the
# vocabulary (a dense vocab x hidden gradient is 250k rows for XLM-R), and the stored weight is
# never modified, so the optimizer, DDP buckets and weight tying see the clean V.
# =============================================================================================


def row_gradients(grad_embeds: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-zero rows of ``∂L/∂V`` from the gradient w.r.t. the looked-up embeddings.

    Since ``E = V[input_ids]``, ``∂L/∂V[t] = Σ_{positions p with id t} ∂L/∂E[p]``: an ``index_add``
    over the batch's unique ids. Mask padding positions out of ``grad_embeds`` first if their
    gradient should not count.

    Args:
        grad_embeds (`torch.Tensor`): ``(B, L, H)`` gradient w.r.t. the word-embedding output.
        input_ids (`torch.Tensor`): ``(B, L)`` token ids of the same batch.

    Returns:
        ``(token_ids, row_grads)``: sorted unique ids ``(U,)`` and their summed gradients ``(U, H)``
        in fp32. Rows of ``∂L/∂V`` for ids not listed are exactly zero.
    """
    if grad_embeds.shape[:-1] != input_ids.shape:
        raise ValueError(f"gradient {tuple(grad_embeds.shape)} does not match input_ids {tuple(input_ids.shape)}")
    token_ids, inverse = torch.unique(input_ids, sorted=True, return_inverse=True)
    rows = grad_embeds.new_zeros((token_ids.numel(), grad_embeds.shape[-1]), dtype=torch.float32)
    rows.index_add_(0, inverse.reshape(-1), grad_embeds.reshape(-1, grad_embeds.shape[-1]).float())
    return token_ids, rows


def _row_delta_hook(token_ids: torch.Tensor, row_delta: torch.Tensor):
    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        ids = args[0] if args else None
        if not torch.is_tensor(ids) or ids.shape != output.shape[:-1]:
            raise RuntimeError("the input-embedding module was not called with input_ids; cannot perturb rows of V")
        sorted_ids = token_ids.to(ids.device)
        pos = torch.searchsorted(sorted_ids, ids).clamp_max(sorted_ids.numel() - 1)
        hit = (sorted_ids[pos] == ids).unsqueeze(-1)  # ids outside the perturbed rows get nothing
        add = row_delta.to(device=output.device, dtype=output.dtype)[pos]
        return output + add * hit.to(output.dtype)

    return tag_hook(hook)


@contextlib.contextmanager
def perturb_embedding_rows(
    model: torch.nn.Module, token_ids: torch.Tensor | None, row_delta: torch.Tensor | None
) -> Iterator[None]:
    """Inside the block, the model looks tokens up in ``V + R`` where ``R[token_ids] = row_delta``.

    Functional: the weight is untouched; a forward hook adds ``row_delta`` to the lookup output of
    every position whose id is in ``token_ids`` (so repeated tokens get the same perturbation,
    unlike a per-position δ). ``token_ids`` must be sorted and unique (as :func:`row_gradients`
    returns them). ``None`` or an empty set is a no-op. The hook is removed on exit.
    """
    if token_ids is None or row_delta is None or token_ids.numel() == 0:
        yield
        return
    if row_delta.shape[0] != token_ids.numel():
        raise ValueError(f"row_delta has {row_delta.shape[0]} rows for {token_ids.numel()} token ids")
    handle = input_embedding_module(model).register_forward_hook(_row_delta_hook(token_ids, row_delta))
    try:
        yield
    finally:
        handle.remove()


__all__ += ["perturb_embedding_rows", "row_gradients"]
