"""YOPO-m-n: "You Only Propagate Once" (Zhang et al., NeurIPS 2019, arXiv:1905.00877) on word
embeddings, as implemented for the comparison in FreeLB (arXiv:1909.11764, section 4.3, Table 4).

f0 = the layers up to the output of the first Transformer block (FreeLB 4.3: with a linear f0,
YOPO degenerates into FreeLB with an n-times larger step). Per step, m full passes on X + δ, each
``backward(loss / m)`` (parameter gradients accumulated, one optimizer step, as FreeLB describes
YOPO); after each full pass but the last, n adversary updates δ ← Π_ε(δ + (α/n)·normalize(g_j))
with g_j = ∂(p · f0(X + δ))/∂δ, where p = ∂L/∂f0-output is frozen from the full backward. g_1 is
the full backward's ∂L/∂δ itself; g_2..g_n need a forward/backward through f0 only.

The first block is found generically (:func:`advtune.methods.yopo_blocks.first_block`: element 0 of the first
stack of identical blocks, e.g. ``encoder.layer[0]``); the partial forward stops there. Dropout
masks are reused across all passes of a step (``adv_reuse_dropout``, as FreeLB-m).

Defaults: FreeLB-m's hyper-parameters with α/n per inner update (FreeLB 4.3): Table 7 RTE
(ε = 0.15, α = 0.03, m = 3) and n = 2 (YOPO-3-2 of Table 4). ``adv_divide_step=False`` uses α per
inner update (Table 9). Cost: m full forward + backward passes, plus (m - 1)(n - 1) forward +
backward passes through the embeddings and the first block.

The loop is FreeLB's (:mod:`advtune.methods.multipass`); only the δ update differs.

Deviations: no replay sampler (one optimizer step per m passes, as FreeLB describes YOPO; the
original YOPO code for images differs in its outer loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..dropout_replay import maybe_replay
from ..perturbation import ascent_step
from .base import cfg_field
from .freelb import FreeLBConfig
from .multipass import Frame, MultiPassMethod
from .yopo_blocks import first_block, first_block_output, record_first_block


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


class YOPO(MultiPassMethod):
    """The multi-pass frame (m training passes) whose δ update is n steps from the frozen ``p`` at f0."""

    name = "yopo"
    config_class = YOPOConfig
    paper = {"title": "You Only Propagate Once: Accelerating Adversarial Training", "arxiv": "1905.00877"}

    def setup(self, model: torch.nn.Module, tokenizer: Any = None, task: Any = None) -> torch.nn.Module:
        first_block(model)  # fail before training on models without distinct blocks (ALBERT)
        return model

    def recording(self, frame: Frame) -> Any:
        return record_first_block(frame.model)  # p = ∂L/∂f0-output of the full backward

    def next_delta(self, frame: Frame, delta: torch.Tensor, grad: torch.Tensor, record: Any) -> torch.Tensor:
        cfg = self.config
        n = cfg.adv_inner_steps
        alpha = cfg.adv_step_size / n if cfg.adv_divide_step else cfg.adv_step_size
        p = record["grad"].float()
        for j in range(n):
            if j > 0:  # the s-loop: p frozen, only f0 re-evaluated
                delta.requires_grad_()
                with frame.backward.no_sync(), maybe_replay(frame.rng):
                    h = first_block_output(frame.model, frame.inputs, delta)
                    (grad,) = torch.autograd.grad((h.float() * p).sum(), delta)
            delta = ascent_step(delta, grad, frame.mask, alpha, cfg.adv_epsilon, cfg.adv_norm)
        return delta
