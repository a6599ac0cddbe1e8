"""VAT: virtual adversarial training as the smoothness-inducing regulariser of SMART.

Paper: Jiang et al., "SMART: Robust and Efficient Fine-Tuning for Pre-trained Natural Language Models
through Principled Regularized Optimization" (arXiv 1911.03437), after Miyato et al. 2018 (VAT); it is
the "VAT" row of the TAT paper (arXiv 2104.05847, eq. 1):

    min_θ  L(f(x), y) + α · max_{‖δ‖∞ ≤ ε} ℓs(f(x + δ), f(x))

with ℓs the symmetric KL divergence (squared error for regression). The inner max is K normalised
L∞ steps from δ ~ N(0, σ²) on ℓs(f(x+δ), f(x).detach()), projected to ε. Defaults: SMART section 5
(σ = 1e-5, ε = 1e-5, η = 1e-3, K = 1, α = 1).

Cost per step: K + 2 forward passes; K backward passes to δ only (``torch.autograd.grad``), then one
backward through the clean and perturbed graphs (≈ 3× standard in passes for K = 1; TAT says "roughly 2×").
``adv_memory=sequential`` (:mod:`advtune.methods.paired`) gives the same gradient with one graph alive at a
time: the clean and the perturbed pass each run once more without autograd (the clean one too, because the
inner steps' graphs come between them), K + 2⅔ passes.

Two variants of the inner maximisation (``adv_variant``):

* ``paper`` (default): what the papers write. δ is added to the word embeddings, each step is
  ``Π_ε(δ + η·sign(g))``, ε = 1e-5. At that radius on MiniLM's word embeddings (entries of size
  ~0.05) δ barely changes the logits: measured, VAT and TAT then train almost identically.
* ``mtdnn``: what the authors' reference code (MT-DNN ``SmartPerturbation``, which TAT is built on)
  computes. δ is added to the output of the embedding layer (words + positions + segments after
  LayerNorm and dropout); δ ~ N(0, σ²); each step ``v = δ + η g`` (``δ − η g`` for TAT) is divided
  per token by ``max |v|`` (+1e-6), so every token's δ has L∞ norm 1 on a LayerNorm scale; the
  "ε = 1e-6" of that code is this stabiliser, nothing is projected. ``adv_epsilon`` and ``adv_norm``
  are not used. (MT-DNN feeds ``embed + noise`` back through ``inputs_embeds``, which in HF models
  re-adds positions and LayerNorm; we add δ at the layer's output instead, so δ = 0 reproduces the
  clean pass exactly.)

Choices where the papers are silent, as in their reference code: every forward pass draws its own dropout masks (set
``adv_reuse_dropout`` to give the perturbed passes the clean pass's masks); the regulariser's
gradient flows through both f(x) and f(x+δ). Deviation: the L∞ step is ``sign(g)`` (``perturbation.
normalize``) rather than MT-DNN's ``g / max|g|``; both are steepest-ascent directions for L∞ and
η ≫ ε makes the projected results equal up to rounding. The N(0, σ²) start is projected to the ε-ball too
(the papers set σ = ε and do not say; this keeps every perturbation the model sees within ε).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..dropout_replay import RNGState, dropout_rng, maybe_replay
from ..embeddings import embedding_output_dim, forward_with_delta, word_embeddings
from ..perturbation import NORMS, ascent_step, gradient_share, init_delta, masked_norm, project, unit_linf_step
from .base import StepOutput, cfg_field, symmetric_kl, task_loss
from .paired import Pair, PairedMethod, PairFrame
from .smoothness import Diagnostics, SmoothnessConfig, output_shift

Objective = Callable[[torch.Tensor], torch.Tensor]
CleanTerm = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
NoSync = Callable[[], contextlib.AbstractContextManager]
VARIANTS = ("paper", "mtdnn")


@dataclass
class VATConfig(SmoothnessConfig):
    """Hyper-parameters of VAT (defaults: SMART section 5, also used by TAT section 3.1); σ, α and
    dropout reuse are :class:`~advtune.methods.smoothness.SmoothnessConfig`'s.

    adv_steps (`int`, *optional*, defaults to `1`): K, inner steps estimating the worst δ.
    adv_step_size (`float`, *optional*, defaults to `1e-3`): η, size of each normalised L∞ step.
    adv_epsilon (`float`, *optional*, defaults to `1e-5`): ε, L∞ radius δ is projected to (0 = none).
    """

    adv_steps: int = cfg_field(1, "K: inner steps estimating the adversarial perturbation.")
    adv_step_size: float = cfg_field(1e-3, "eta: size of each normalised inner step.")
    adv_epsilon: float = cfg_field(1e-5, "epsilon: radius of the perturbation ball (0 = unbounded).")
    adv_norm: str = cfg_field("linf", "Norm of the perturbation ball and of the normalised steps: linf or l2.")
    adv_variant: str = cfg_field(
        "paper",
        "paper: delta on the word embeddings, sign steps projected to epsilon (the papers' text); mtdnn: delta on "
        "the embedding layer's output, each token's delta + eta*g rescaled to unit L-inf (the reference code).",
    )

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_steps >= 1, "adv_steps", "must be >= 1")
        self._check(self.adv_step_size > 0, "adv_step_size", "must be > 0")
        self._check(self.adv_epsilon >= 0, "adv_epsilon", "must be >= 0 (0 = unbounded)")
        self._check(self.adv_norm in NORMS, "adv_norm", f"choose from {', '.join(NORMS)}")
        self._check(self.adv_variant in VARIANTS, "adv_variant", f"choose from {', '.join(VARIANTS)}")


class VAT(PairedMethod):
    """``L(f(x), y) + α · ℓs(f(x), f(x + δ*))``; subclasses change the inner objective (TAT) or add terms (SMART)."""

    name = "vat"
    config_class = VATConfig
    paper = {"title": "SMART: Robust and Efficient Fine-Tuning for Pre-trained NLP Models", "arxiv": "1911.03437"}
    recompute_clean = True  # the inner steps run graphs of their own (methods/paired.py)
    descend = False  # the inner steps ascend their objective; TAT descends toward a target label
    last_gradient_share = 0.0  # mtdnn variant: the gradient's share of the last unit-L∞ step (logged)

    def __init__(self, config: VATConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.diagnostics = Diagnostics()
        self.start: torch.Tensor | None = None

    def inner_objective(
        self, clean_logits: torch.Tensor, inputs: dict[str, Any], regression: bool
    ) -> tuple[Objective, dict[str, float]]:
        """What the inner steps maximise (or minimise when ``descend``), built once per batch."""
        target = clean_logits.detach()
        return (lambda adv_logits: symmetric_kl(adv_logits, target, regression)), {}

    def clean_terms(
        self, model: torch.nn.Module, inputs: dict[str, Any], regression: bool
    ) -> tuple[CleanTerm | None, dict[str, float]]:
        """Additional terms of the outer loss that depend on f(x) only (SMART's Bregman proximal term), as a
        function of the clean logits; built once per step, before the perturbed pass. None for VAT."""
        return None, {}

    @property
    def site(self) -> str:
        """Where δ is added (:data:`advtune.embeddings.SITES`): the word embeddings, or the embedding
        layer's output for the reference-code variant."""
        return "output" if self.config.adv_variant == "mtdnn" else "word"

    def perturbation(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        objective: Objective,
        rng: RNGState | None,
        no_sync: NoSync = contextlib.nullcontext,
    ) -> torch.Tensor:
        """δ after K normalised steps on ``objective`` (gradients to δ only, no parameter grads, under
        ``no_sync``: DDP must not expect a reduction for them)."""
        cfg = self.config
        mask = inputs.get("attention_mask")
        mtdnn = cfg.adv_variant == "mtdnn"
        if mtdnn:
            ids = inputs["input_ids"]
            like = torch.empty(*ids.shape, embedding_output_dim(model), device=ids.device)
            delta = init_delta(like, mask, "normal", cfg.adv_init_scale)
        else:
            with torch.no_grad():
                like = word_embeddings(model, inputs["input_ids"])
            # N(0, σ²) start, projected so every δ the model sees lies in the ε-ball (σ = ε: a 3σ tail would not)
            delta = project(
                init_delta(like, mask, "normal", cfg.adv_init_scale, cfg.adv_norm), mask, cfg.adv_epsilon, cfg.adv_norm
            )
        self.start = delta.detach()  # δ_0, for the diagnostics of the inner steps
        for _ in range(cfg.adv_steps):
            delta.requires_grad_()
            with torch.enable_grad(), no_sync(), maybe_replay(rng):  # also when called under no_grad
                value = objective(forward_with_delta(model, inputs, delta, self.site).logits)
            (grad,) = torch.autograd.grad(value, delta)
            if mtdnn:
                self.last_gradient_share = gradient_share(delta, grad, mask, cfg.adv_step_size, self.descend)
                delta = unit_linf_step(delta, grad, mask, cfg.adv_step_size, self.descend)
            else:
                delta = ascent_step(delta, grad, mask, cfg.adv_step_size, cfg.adv_epsilon, cfg.adv_norm, self.descend)
        return delta

    # ------------------------------------------------------------------ the paired frame (methods/paired.py)
    def begin(self, frame: PairFrame) -> None:
        device = frame.inputs["input_ids"].device
        frame.state["rng"] = dropout_rng(self.config.adv_reuse_dropout, frame.model, device)
        frame.state["masks"] = self.diagnostics.start(self.config.adv_diagnostics_every, device)

    def clean_pass(self, frame: PairFrame) -> torch.Tensor:
        with maybe_replay(frame.state["rng"]):
            return frame.model(**frame.batch).logits

    def prepare(self, frame: PairFrame, clean: torch.Tensor) -> None:
        """δ from the inner steps on ``clean``'s value, and the extra clean-side terms (SMART's teacher)."""
        objective, metrics = self.inner_objective(clean, frame.inputs, frame.regression)
        st = frame.state
        st["delta"] = self.perturbation(frame.model, frame.batch, objective, st["rng"], frame.backward.no_sync)
        st["extra"], extra_metrics = self.clean_terms(frame.model, frame.batch, frame.regression)
        st["metrics"] = {**metrics, **extra_metrics}

    def perturbed_pass(self, frame: PairFrame) -> torch.Tensor:
        with maybe_replay(frame.state["rng"]):
            return forward_with_delta(frame.model, frame.batch, frame.state["delta"], self.site).logits

    def pair_loss(self, frame: PairFrame, clean: torch.Tensor, adv: torch.Tensor) -> StepOutput:
        """``L(f(x), y) + α · ℓs(f(x), f(x + δ))`` plus :meth:`clean_terms` of f(x)."""
        clean_loss = task_loss(clean, frame.labels, frame.regression)
        smooth = symmetric_kl(clean, adv, frame.regression)
        loss = clean_loss + self.config.adv_alpha * smooth
        metrics = {"adv/clean_loss": float(clean_loss.detach()), "adv/smoothness": float(smooth.detach())}
        extra = frame.state["extra"]
        if extra is not None:
            term, extra_metrics = extra(clean)
            loss = loss + term
            metrics.update(extra_metrics)
        return StepOutput(loss, metrics)

    def finish(self, frame: PairFrame, pair: Pair) -> StepOutput:
        cfg, st = self.config, frame.state
        metrics = {**st["metrics"], **pair.out.metrics}
        if self.site == "output" and cfg.adv_steps:
            metrics["adv/grad_share"] = self.last_gradient_share  # ~0: δ is its random start (docs/methods/vat.md)
        norm = "linf" if self.site == "output" else cfg.adv_norm
        metrics["adv/delta_norm"] = float(masked_norm(st["delta"], frame.batch.get("attention_mask"), norm).mean())
        if st["masks"] is not None:
            diag = self.diagnose(frame.model, frame.batch, pair.clean, st["delta"], st["masks"], frame.regression)
            metrics.update(diag)
        return StepOutput(pair.out.loss, metrics)

    # ------------------------------------------------------------------ diagnostics (diag/*)
    def replayed(self, model: torch.nn.Module, batch: dict[str, Any], delta: torch.Tensor, masks: RNGState):
        """Logits of x + δ without gradients, with the clean pass's dropout masks, random stream untouched."""
        with Diagnostics.masks(masks):
            masks.restore()
            return forward_with_delta(model, batch, delta, self.site).logits

    def diagnose(self, model, batch: dict[str, Any], clean, delta, masks: RNGState, regression: bool) -> dict:
        """How much the final δ alone moves the outputs (``diag/sym_kl``, ``diag/abs_dlogit``), plus
        :meth:`diagnose_inner`'s view of the inner steps."""
        shifted = self.replayed(model, batch, delta, masks)
        return {**output_shift(clean, shifted, regression), **self.diagnose_inner(model, batch, shifted, masks)}

    def diagnose_inner(self, model: torch.nn.Module, batch: dict[str, Any], shifted: torch.Tensor, masks):
        """What the inner steps achieved on their own objective (TAT: the target's probability); none for VAT."""
        return {}
