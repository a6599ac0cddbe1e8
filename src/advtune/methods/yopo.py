"""YOPO-m-n: "You Only Propagate Once" (Zhang et al., NeurIPS 2019, arXiv:1905.00877) on word
embeddings, as implemented for the comparison in FreeLB (arXiv:1909.11764, section 4.3, Table 4).

f0 = the layers up to the output of the first Transformer block (FreeLB 4.3: with a linear f0,
YOPO degenerates into FreeLB with an n-times larger step). Per step, m full passes on X + δ, each
``backward(loss / m)`` (parameter gradients accumulated, one optimizer step, as FreeLB describes
YOPO); after each full pass but the last, n adversary updates δ ← Π_ε(δ + (α/n)·normalize(g_j))
with g_j = ∂(p · f0(X + δ))/∂δ, where p = ∂L/∂f0-output is frozen from the full backward. g_1 is
the full backward's ∂L/∂δ itself; g_2..g_n need a forward/backward through f0 only.

The first block is found generically (:func:`advtune.embeddings.first_block`: element 0 of the first
stack of identical blocks, e.g. ``encoder.layer[0]``); the partial forward stops there. Dropout
masks are reused across all passes of a step (``adv_reuse_dropout``, as FreeLB-m).

Defaults: FreeLB-m's hyper-parameters with α/n per inner update (FreeLB 4.3): Table 7 RTE
(ε = 0.15, α = 0.03, m = 3) and n = 2 (YOPO-3-2 of Table 4). ``adv_divide_step=False`` uses α per
inner update (Table 9). Cost: m full forward + backward passes, plus (m - 1)(n - 1) forward +
backward passes through the embeddings and the first block.

Deviations: no replay sampler (one optimizer step per m passes, as FreeLB describes YOPO; the
original YOPO code for images differs in its outer loop).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..embeddings import RNGState, first_block, first_block_output, maybe_replay, record_first_block
from ..perturbation import ascent_step, init_delta
from .adversarial import adv_loss, delta_frame, delta_metrics
from .base import Backward, Method, StepOutput, cfg_field
from .freelb import FreeLBConfig


@dataclass
class YOPOConfig(FreeLBConfig):
    """YOPO-m-n hyper-parameters: FreeLB's (``adv_steps`` = m full passes) plus the inner updates.

    Args:
        adv_inner_steps (`int`, *optional*, defaults to `2`): adversary updates n per full pass.
        adv_divide_step (`bool`, *optional*, defaults to `True`): use α/n per inner update (FreeLB 4.3).
    """

    adv_inner_steps: int = cfg_field(2, "adversary updates n per full pass, from the frozen gradient at f0")
    adv_divide_step: bool = cfg_field(True, "inner step size alpha/n (same total ascent as FreeLB-m)")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_inner_steps >= 1, "adv_inner_steps", "must be >= 1")


class YOPO(Method):
    name = "yopo"
    config_class = YOPOConfig
    paper = {"title": "You Only Propagate Once: Accelerating Adversarial Training", "arxiv": "1905.00877"}

    def setup(self, model: torch.nn.Module) -> torch.nn.Module:
        first_block(model)  # fail before training on models without distinct blocks (ALBERT)
        return model

    def step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], backward: Backward) -> StepOutput:
        cfg = self.config
        m, n = cfg.adv_steps, cfg.adv_inner_steps
        alpha = cfg.adv_step_size / n if cfg.adv_divide_step else cfg.adv_step_size
        like, mask = delta_frame(model, inputs)
        delta = init_delta(like, mask, cfg.adv_init, cfg.adv_init_scale, cfg.adv_norm)
        rng = RNGState.capture(like.device) if cfg.adv_reuse_dropout and model.training else None
        total = torch.zeros((), device=like.device)
        for t in range(m):
            last = t == m - 1
            delta.requires_grad_()
            with contextlib.nullcontext() if last else self.no_sync(), maybe_replay(rng):
                with record_first_block(model) as rec:
                    loss = adv_loss(model, inputs, delta)
                    backward(loss / m)
            total += loss.detach()
            if last:
                break
            grad = delta.grad
            p = rec["grad"].float()
            for j in range(n):
                if j > 0:  # the s-loop: p frozen, only f0 re-evaluated
                    delta.requires_grad_()
                    with self.no_sync(), maybe_replay(rng):
                        h = first_block_output(model, inputs, delta)
                        (grad,) = torch.autograd.grad((h.float() * p).sum(), delta)
                delta = ascent_step(delta, grad, mask, alpha, cfg.adv_epsilon, cfg.adv_norm)
        metrics = {"adv/loss": float(loss.detach()), **delta_metrics(delta, mask, cfg.adv_norm)}
        return StepOutput(total / m, metrics)
