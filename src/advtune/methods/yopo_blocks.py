"""YOPO's first-block helpers: f0 = the layers up to the output of the first Transformer block.

YOPO freezes p = ∂L/∂f0-output from a full backward and re-evaluates only f0 for its cheap adversary
updates (FreeLB section 4.3), so it needs to find the first block of any model, record its output
and gradient during a full pass, and run a forward that stops there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ..embeddings import forward_with_delta, tag_hook
from ..errors import UsageError
from ..wrappers import unwrap


def first_block(model: torch.nn.Module) -> torch.nn.Module:
    """The first Transformer block, found generically: element 0 of the first non-empty
    ``ModuleList`` whose elements all share one class (``encoder.layer``, ``layers``, ``h``...).

    Used by YOPO, whose ``f0`` is "the layers up to the output of the first Transformer block"
    (FreeLB §4.3). Raises :class:`~advtune.errors.UsageError` when the model has no such stack.
    """
    for module in unwrap(model).modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1:
            kinds = {type(m) for m in module}
            if len(kinds) == 1 and any(p.numel() for p in module[0].parameters()):
                return module[0]
    raise UsageError(
        f"{type(unwrap(model)).__name__} has no stack of distinct Transformer blocks (ALBERT shares one layer "
        "across depth), so the output of its first block is not defined; use freelb instead of yopo"
    )


def _hidden(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a block's output (a tensor, or the first item of a tuple/ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        return next(iter(output.values()))
    return output[0]


class _StopForward(Exception):
    pass


@contextlib.contextmanager
def record_first_block(model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record the first block's hidden output (``rec["output"]``) and, after backward, ∂L/∂output
    (``rec["grad"]``) of every forward inside the block: YOPO's frozen ``p`` at ``f0``'s output."""
    rec: dict[str, torch.Tensor] = {}

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        hidden = _hidden(output)
        rec["output"] = hidden
        if hidden.requires_grad:
            hidden.register_hook(lambda g: rec.__setitem__("grad", g.detach()))

    handle = first_block(model).register_forward_hook(tag_hook(hook))
    try:
        yield rec
    finally:
        handle.remove()


def first_block_output(model: torch.nn.Module, inputs: Mapping[str, Any], delta: torch.Tensor | None) -> torch.Tensor:
    """``f0(X + δ)``: embeddings through the first Transformer block only (the rest is skipped).

    Runs the *unwrapped* model (no DDP bookkeeping: callers differentiate w.r.t. δ only) and stops
    the forward with an exception raised from a hook on the first block, so it works for any
    model that :func:`first_block` understands.
    """
    inner = unwrap(model)
    rec: dict[str, torch.Tensor] = {}

    def stop(module: torch.nn.Module, args: Any, output: Any) -> None:
        rec["output"] = _hidden(output)
        raise _StopForward

    handle = first_block(inner).register_forward_hook(tag_hook(stop))
    try:
        forward_with_delta(inner, inputs, delta)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "output" not in rec:
        raise RuntimeError("the forward pass did not reach the first Transformer block")
    return rec["output"]


__all__ = ["first_block", "first_block_output", "record_first_block"]
