"""The single-backward frame: one loss L(c, a) of clean outputs c = f(x) and perturbed outputs a = f(x + δ).

VAT, SMART, TAT, R3F, R4F, CAT, ROSE and PEAFT backpropagate such a loss once per step. Its parameter
gradient is ``∂L/∂c · dc/dθ + ∂L/∂a · da/dθ``, each partial taken at the same values of c and a, so the
two graphs need not be alive together (``adv_memory``, :class:`~advtune.methods.base.AdvMemoryConfig`):

* ``joint``: ``c = f(x)``, ``a = f(x + δ)``, one backward of L(c, a): both graphs alive at the peak.
* ``sequential``: a's value is computed first without autograd (a forward without a graph, about a third
  of a pass); ``L(c, a.detach())`` is backpropagated through the clean graph, which is then freed; the
  perturbed forward runs again *with the same dropout masks* (RNG state and module buffers, such as
  R4F's spectral-norm vectors, are snapshotted and restored) and ``L(c.detach(), a)`` is backpropagated.
  Both backwards together give the joint gradient; the reported loss is the first one's value, L(c, a).
  Under DDP the first backward (and the clean forward it belongs to: DDP decides at forward time
  whether to all-reduce) runs under ``backward.no_sync()``, so one all-reduce per step remains.

Two variations a method declares:

* ``recompute_clean``: the method's own work between the two passes runs forward passes with graphs
  (VAT's inner steps to δ). Keeping the clean graph alive across them would keep two graphs at the peak
  again, so the clean pass first runs without autograd too (its value feeds the inner steps) and is
  re-run with its masks for its backward: one more third of a pass, one graph at a time.
* ``coupled=False``: L(c, a) = L_c(c) + L_a(a) has no term of both (PEAFT, CAT with λ = 0). Then
  ``loss(c, None)`` and ``loss(None, a)`` are the two parts: no graph-free forward, no replay, and the
  reported loss is their sum.

The random stream and buffers end where the joint step leaves them, so the next step draws the same
masks in either mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch

from ..dropout_replay import RNGState
from ..wrappers import unwrap
from .base import AdvMemoryConfig, Backward, Method, StepOutput, is_regression, model_inputs


class Passes(NamedTuple):
    """The four parts of a step. ``perturbed`` may run twice (sequential): it must draw only dropout."""

    clean: Callable[[], Any]  # the clean forward: outputs (a tensor, or a tuple/list/dict of tensors)
    prepare: Callable[[Any], None]  # what needs c's value (or its graph, when not recompute_clean): δ, targets
    perturbed: Callable[[], Any]  # the perturbed forward
    loss: Callable[[Any, Any], StepOutput]  # L(c, a); a side is None in an uncoupled part


class Pair(NamedTuple):
    """What a paired step returns: ``out`` (detached loss and metrics of L) and the outputs' values."""

    out: StepOutput
    clean: Any
    adv: Any


def detached(x: Any) -> Any:
    """``x`` with every tensor detached (tensors, tuples, lists and dicts of them; ``None`` stays)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (tuple, list)):
        return type(x)(detached(v) for v in x)
    if isinstance(x, dict):
        return {k: detached(v) for k, v in x.items()}
    return x


class Snapshot:
    """The RNG state and the model's buffers at one point of a step, to run a forward again as it ran."""

    def __init__(self, model: torch.nn.Module) -> None:
        params = list(unwrap(model).parameters())
        self.rng = RNGState.capture(params[0].device if params else None)
        self.buffers = [(b, b.detach().clone()) for b in unwrap(model).buffers()]

    def restore(self) -> None:
        self.rng.restore()
        with torch.no_grad():
            for buf, saved in self.buffers:
                buf.copy_(saved)


def paired_forward(passes: Passes) -> Pair:
    """The joint forward: ``L(c, a)`` with both graphs (for :meth:`Method.compute_loss`); no backward."""
    clean = passes.clean()
    passes.prepare(clean)
    adv = passes.perturbed()
    return Pair(passes.loss(clean, adv), clean, adv)


def paired_backward(
    model: torch.nn.Module,
    backward: Backward,
    passes: Passes,
    sequential: bool,
    recompute_clean: bool = False,
    coupled: bool = True,
) -> Pair:
    """Backpropagate L(c, a) jointly or sequentially (see the module docstring); returns the detached loss."""
    if not sequential:
        out, clean, adv = paired_forward(passes)
        backward(out.loss)
        return Pair(StepOutput(out.loss.detach(), out.metrics), detached(clean), detached(adv))
    return _sequential(model, backward, passes, recompute_clean, coupled)


def _sequential(model: torch.nn.Module, backward: Backward, passes: Passes, recompute: bool, coupled: bool) -> Pair:
    at_clean = Snapshot(model) if recompute else None
    with torch.no_grad() if recompute else backward.no_sync():
        clean = passes.clean()
    passes.prepare(clean)
    at_adv, adv_value = None, None
    if coupled:
        at_adv = Snapshot(model)
        with torch.no_grad():
            adv_value = passes.perturbed()
    end = Snapshot(model) if recompute or coupled else None
    with backward.no_sync():
        if at_clean is not None:
            at_clean.restore()
            clean = passes.clean()
        first = passes.loss(clean, adv_value)
        backward(first.loss)
    clean = detached(clean)  # its graph is freed: from here on one graph at a time
    if at_adv is not None:
        at_adv.restore()
    adv = passes.perturbed()
    second = passes.loss(clean if coupled else None, adv)
    backward(second.loss)
    if end is not None:
        end.restore()
    if coupled:
        return Pair(StepOutput(first.loss.detach(), first.metrics), clean, detached(adv))
    total = first.loss.detach() + second.loss.detach()
    return Pair(StepOutput(total, {**first.metrics, **second.metrics}), clean, detached(adv))


@dataclass
class PairFrame:
    """One step's inputs and seams, plus ``state``: what the hooks hand each other (δ, targets, ...)."""

    model: torch.nn.Module
    inputs: dict[str, Any]
    backward: Backward
    batch: dict[str, Any] = field(init=False)
    regression: bool = field(init=False)
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.batch = model_inputs(self.inputs)
        self.regression = is_regression(self.model)

    @property
    def labels(self) -> torch.Tensor:
        return self.inputs["labels"]


class PairedMethod(Method):
    """Base of the single-backward methods: hooks for the two passes and L(c, a), one :meth:`step` for both
    ``adv_memory`` modes (:func:`paired_backward`). A subclass's config derives from ``AdvMemoryConfig``."""

    config: AdvMemoryConfig
    recompute_clean: ClassVar[bool] = False
    """True when :meth:`prepare` runs passes with graphs of its own (VAT's inner steps), see the module doc."""

    # ------------------------------------------------------------------ hooks
    def begin(self, frame: PairFrame) -> None:
        """Per-step set-up before the clean pass (random draws that precede it, PEAFT's inner steps)."""

    def clean_pass(self, frame: PairFrame) -> Any:
        raise NotImplementedError

    def prepare(self, frame: PairFrame, clean: Any) -> None:
        """What needs the clean outputs before the perturbed pass (δ); runs once per step."""

    def perturbed_pass(self, frame: PairFrame) -> Any:
        raise NotImplementedError

    def pair_loss(self, frame: PairFrame, clean: Any, adv: Any) -> StepOutput:
        raise NotImplementedError

    def coupled(self) -> bool:
        """False when L(c, a) is a clean-only term plus a perturbed-only term (no graph-free forward needed)."""
        return True

    def finish(self, frame: PairFrame, pair: Pair) -> StepOutput:
        """The step's result from the detached loss and the outputs' values (more metrics, diagnostics)."""
        return pair.out

    # ------------------------------------------------------------------ the frame
    def passes(self, frame: PairFrame) -> Passes:
        return Passes(
            clean=lambda: self.clean_pass(frame),
            prepare=lambda clean: self.prepare(frame, clean),
            perturbed=lambda: self.perturbed_pass(frame),
            loss=lambda clean, adv: self.pair_loss(frame, clean, adv),
        )

    def step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], backward: Backward) -> StepOutput:
        frame = PairFrame(model, inputs, Backward.of(backward))
        self.begin(frame)
        sequential = self.config.adv_memory == "sequential"
        passes = self.passes(frame)
        pair = paired_backward(model, frame.backward, passes, sequential, self.recompute_clean, self.coupled())
        return self.finish(frame, pair)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> StepOutput:
        """The joint loss with its graph (for custom loops and tests); :meth:`step` honours ``adv_memory``."""
        frame = PairFrame(model, inputs, Backward.of(lambda loss: None))
        self.begin(frame)
        out, clean, adv = paired_forward(self.passes(frame))
        metrics = self.finish(frame, Pair(StepOutput(out.loss.detach(), out.metrics), detached(clean), detached(adv)))
        return StepOutput(out.loss, metrics.metrics)


__all__ = ["Pair", "PairFrame", "PairedMethod", "Passes", "Snapshot", "detached", "paired_backward", "paired_forward"]
