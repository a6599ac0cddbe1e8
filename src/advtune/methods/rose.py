"""ROSE-First: robust selective fine-tuning (Jiang et al., EMNLP 2022, arXiv 2210.09658), first-order variant.

Each step runs the batch twice with independent dropout masks. The symmetric KL between the two
output distributions measures how *unrobust* the model is around the input; its gradient norm per
weight tensor is that tensor's saliency. Only tensors whose saliency lies between the ``lower`` and
``upper`` quantiles are updated with the cross-entropy gradient: tensors below the band carry
*invaluable* updates, tensors above it *unrobust* ones (the paper's "filtering out invaluable and
unrobust updates"). Selection applies to the Transformer blocks' weight tensors (names containing
both ``layer`` and ``weight``); embeddings, biases and the head always train, as in the released
code (defaults lower = 50, upper = 95 percentiles from its ``SparseAdamW``). Loss = mean CE of the two
passes.

Reconstructed from the paper's description and its released code. Departures: (1) the released code
masks inside its own Adam (masked tensors: no step, no weight decay, momentum kept); here the method
cannot touch the optimizer, so a masked tensor's gradient from this micro-batch is removed (set back
to what it was, ``None`` at the start of an optimizer step) and torch's AdamW then skips it entirely,
which also means no step and no weight decay; (2) the KL uses the model's own dropout rate (the
released code has a separate ``kl_dropout``); (3) the second-order variant (ROSE-Second, update-
direction oscillation from the optimizer's momentum) and the ensemble are not implemented; (4) the
warmup (no masking during LR warmup in the released code) is ``adv_warmup_steps`` method steps.
Cost per step: 2 forwards, 1 KL backward (tensor gradients only) + 1 CE backward. ``adv_memory=sequential``
(:mod:`advtune.methods.paired`): each backward in two parts, one graph alive at a time, the KL gradients of
the parts summed before ranking; the second pass runs once more without autograd to give the first part its value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import AdvMemoryConfig, StepOutput, cfg_field, symmetric_kl, task_loss
from .paired import Pair, PairedMethod, PairFrame


@dataclass
class ROSEConfig(AdvMemoryConfig):
    adv_lower: float = cfg_field(50.0, "Lower saliency percentile: tensors below it are not updated (invaluable).")
    adv_upper: float = cfg_field(95.0, "Upper saliency percentile: tensors above it are not updated (unrobust).")
    adv_select_terms: str = cfg_field("layer,weight", "Tensors subject to selection: names holding all these terms.")
    adv_warmup_steps: int = cfg_field(0, "Steps without selection at the start (the released code skips LR warmup).")

    def validate(self) -> None:
        super().validate()
        self._check(0 <= self.adv_lower < self.adv_upper <= 100, "adv_lower", "need 0 <= adv_lower < adv_upper <= 100")
        self._check(bool(self.terms), "adv_select_terms", "name at least one term")
        self._check(self.adv_warmup_steps >= 0, "adv_warmup_steps", "must be >= 0")

    @property
    def terms(self) -> list[str]:
        return [t.strip() for t in self.adv_select_terms.split(",") if t.strip()]


def band_mask(saliency: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """True where ``saliency`` lies within its [lower, upper] percentiles (inclusive)."""
    lo, hi = torch.quantile(saliency.float(), torch.tensor([lower / 100, upper / 100], device=saliency.device))
    return (saliency >= lo) & (saliency <= hi)


class ROSE(PairedMethod):
    name = "rose"
    config_class = ROSEConfig
    paper = {"title": "ROSE: Robust Selective Fine-tuning for Pre-trained Language Models", "arxiv": "2210.09658"}

    def __init__(self, config: ROSEConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.steps = 0
        self.last_mask: dict[str, bool] = {}

    def selectable(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        terms = self.config.terms
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad and all(t in n for t in terms)]

    def compute_loss(self, model, inputs) -> StepOutput:
        raise NotImplementedError("ROSE filters parameter gradients after its backward: use step()")

    # ------------------------------------------------------------------ the paired frame (methods/paired.py)
    def begin(self, frame: PairFrame) -> None:
        """Pick this step's selectable tensors and keep their gradients so far (the filtered ones get them
        back after the backward)."""
        self.steps += 1
        params = self.selectable(frame.model)
        selecting = bool(params) and self.steps > self.config.adv_warmup_steps
        frame.state.update(params=params if selecting else [], kl_grads=None)
        frame.state["saved"] = [None if p.grad is None else p.grad.detach().clone() for _, p in frame.state["params"]]

    def clean_pass(self, frame: PairFrame) -> torch.Tensor:
        return frame.model(**frame.batch).logits

    def perturbed_pass(self, frame: PairFrame) -> torch.Tensor:
        return frame.model(**frame.batch).logits  # the second pass: its own dropout masks

    def pair_loss(self, frame: PairFrame, clean: torch.Tensor, adv: torch.Tensor) -> StepOutput:
        """Mean CE of the two passes; the KL's parameter gradient (summed over the parts) is the saliency."""
        ce = 0.5 * (task_loss(clean, frame.labels, frame.regression) + task_loss(adv, frame.labels, frame.regression))
        kl = symmetric_kl(clean, adv, frame.regression)
        params = [p for _, p in frame.state["params"]]
        if params:
            with frame.backward.no_sync():
                grads = torch.autograd.grad(kl, params, retain_graph=True, allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
            if frame.state["kl_grads"] is None:
                frame.state["kl_grads"] = grads
            else:  # sequential: the second part's share, in place (one copy of the gradients at a time)
                torch._foreach_add_(frame.state["kl_grads"], grads)
        return StepOutput(ce, {"adv/kl": kl.item()})

    def finish(self, frame: PairFrame, pair: Pair) -> StepOutput:
        c, params = self.config, frame.state["params"]
        if params:
            saliency = torch.stack([g.float().norm() for g in frame.state["kl_grads"]])
            keep = band_mask(saliency, c.adv_lower, c.adv_upper).tolist()
            self.last_mask = {n: bool(k) for (n, _), k in zip(params, keep)}
            for (_, p), k, g in zip(params, keep, frame.state["saved"]):
                if not k:  # drop this micro-batch's update of the filtered tensors
                    p.grad = g
        kept = sum(self.last_mask.values()) / max(len(self.last_mask), 1) if self.last_mask else 1.0
        return StepOutput(pair.out.loss, {**pair.out.metrics, "adv/selected_fraction": float(kept)})

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
