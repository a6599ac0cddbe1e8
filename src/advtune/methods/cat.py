"""CAT: contrastive adversarial training (Pan et al., "Improved Text Classification via Contrastive
Adversarial Training", AAAI 2022, arXiv 2107.10137).

One FGSM step on the word-embedding **matrix** V (eqs. 3-6), then cross-entropy on the clean and the
perturbed batch plus NT-Xent between their projected first-token states (eqs. 7-10)::

    r = ε·sign(∇_V CE(V))          (max-norm, the default; l2: ε·∇_V CE / ‖∇_V CE‖_F)
    L = (1 − λ)/2 · (CE(V) + CE(V + r)) + λ · NT-Xent(z_clean, z_adv; τ),   z = W2 ReLU(W1 h_first)

Defaults: the paper gives grids, not chosen values (ε ∈ {1e-4, 1e-3, 5e-3, 2e-2}, τ ∈ {0.05 … 0.1},
λ ∈ {0.1 … 0.5}); we take ε = 1e-3, τ = 0.05, λ = 0.3 (see docs/methods/cat.md) and d_k = 300.

Cost per step: 2 forward passes and 2 backward passes: the gradient w.r.t. the looked-up
embeddings is taken with ``torch.autograd.grad(retain_graph=True)`` (no parameter gradients), and
one backward of the total loss gives every parameter gradient. ``adv_memory=sequential``
(:mod:`advtune.methods.paired`): the same gradient with one graph alive at a time, for one forward of
x + r without autograd (none when λ = 0: the loss then has no term of both passes).

Deviations / readings of the paper: eqs. 5-6 print ``r = −ε·…``, which would *decrease* the loss;
we add ``+ε·…`` (the FGSM ascent step Goodfellow et al. describe). Eq. 9 writes
``sim(z_i, z_j/τ)``, which equals ``sim(z_i, z_j)`` for cosine similarity; we use SimCLR's
``sim(z_i, z_j)/τ``, averaged over all 2N anchors. ``r`` is a constant (no gradient flows into it).
Padding positions do not contribute to ∇_V. The projection head has no biases, as written in eq. 7.

Distributed (DDP): ∇_V is summed over the processes' row gradients (only the rows present, weighted
by shard size) before the sign / normalisation, the NT-Xent negatives are all-gathered with
gradients, and ``mixed`` draws its norm on rank 0, so W processes take the step one process would
take on the combined batch (tested with 2 gloo processes).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..distributed import all_gather_with_grad, same_choice, sum_rows, world_size
from ..embeddings import embedding_dim, perturb_embedding_rows, perturb_embeddings, row_gradients
from ..perturbation import masked_norm, normalize
from ..pooling import sentence_representation
from ..wrappers import unwrap
from .base import AdvMemoryConfig, RadiusConfig, StepOutput, cfg_field, task_loss
from .paired import Pair, PairedMethod, PairFrame

HEAD = "advtune_cat_head"
"""Attribute under which :meth:`CAT.setup` attaches the projection head to the model (training only)."""


def nt_xent(z_clean: torch.Tensor, z_adv: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR) over the 2N representations: pair i is (clean_i, adv_i), others are negatives.

    ``-log(exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ))`` with cosine ``s``, averaged over all 2N anchors, in fp32.
    """
    z = F.normalize(torch.cat([z_clean, z_adv]).float(), dim=-1)
    n = z_clean.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def _install_output_capture(model: torch.nn.Module) -> None:
    """transformers >= 5 adds inert output-capturing hooks on the first ``output_hidden_states`` call;
    add them at setup so that a training step leaves the model's hooks exactly as it found them."""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # older transformers return hidden states without hooks
        return
    try:
        maybe_install_capturing_hooks(model)
    except Exception:  # noqa: BLE001 - a model without recorders simply installs them on its first call
        pass


@dataclass
class CATConfig(AdvMemoryConfig, RadiusConfig):
    """Hyper-parameters of CAT (grids: Training Details; max-norm default: Method section and Table 10).

    adv_epsilon (`float`, *optional*, defaults to `1e-3`): ε, size of the perturbation of V.
    adv_norm (`str`, *optional*, defaults to `"linf"`): ``linf`` (max-norm, eq. 5), ``l2`` (eq. 6) or ``mixed``.
    adv_target (`str`, *optional*, defaults to `"matrix"`): ``matrix`` (AT^V) or ``embeddings`` (AT^x, Table 9).
    adv_lambda (`float`, *optional*, defaults to `0.3`): λ of eq. 10; 0 = "AT only" (no head, no NT-Xent).
    adv_temperature (`float`, *optional*, defaults to `0.05`): τ of the NT-Xent loss.
    adv_proj_dim (`int`, *optional*, defaults to `300`): d_k, output size of the projection head.
    """

    adv_epsilon: float = cfg_field(1e-3, "epsilon: size of the FGSM perturbation (max-norm or L2 radius).")
    adv_norm: str = cfg_field("linf", "linf (max-norm, eq. 5), l2 (eq. 6) or mixed (random per batch, Table 10).")
    adv_target: str = cfg_field("matrix", "matrix: perturb rows of V (AT^V); embeddings: looked-up vectors (AT^x).")
    adv_lambda: float = cfg_field(0.3, "lambda: weight of the contrastive loss (eq. 10); 0 = AT only.")
    adv_temperature: float = cfg_field(0.05, "tau: temperature of the NT-Xent contrastive loss.")
    adv_proj_dim: int = cfg_field(300, "d_k: output size of the projection head z = W2 ReLU(W1 h).")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_epsilon >= 0, "adv_epsilon", "must be >= 0")
        self._check(self.adv_norm in ("linf", "l2", "mixed"), "adv_norm", "choose linf, l2 or mixed")
        self._check(self.adv_target in ("matrix", "embeddings"), "adv_target", "choose matrix or embeddings")
        self._check(0 <= self.adv_lambda <= 1, "adv_lambda", "must be in [0, 1]")
        self._check(self.adv_temperature > 0, "adv_temperature", "must be > 0")
        self._check(self.adv_proj_dim >= 1, "adv_proj_dim", "must be >= 1")


class CAT(PairedMethod):
    name = "cat"
    config_class = CATConfig
    paper = {"title": "Improved Text Classification via Contrastive Adversarial Training", "arxiv": "2107.10137"}

    def setup(self, model: torch.nn.Module, tokenizer: Any = None, task: Any = None) -> torch.nn.Module:
        """Attach the projection head (eqs. 7-8) as ``model.advtune_cat_head`` so the optimizer,
        which is built from ``model.parameters()``, trains it; :meth:`inference_model` strips it."""
        inner = unwrap(model)
        if self.config.adv_lambda > 0 and not hasattr(inner, HEAD):
            h = int(inner.config.hidden_size)
            w1, w2 = torch.nn.Linear(h, h, bias=False), torch.nn.Linear(h, self.config.adv_proj_dim, bias=False)
            head = torch.nn.Sequential(w1, torch.nn.ReLU(), w2)
            ref = next(inner.parameters())
            inner.add_module(HEAD, head.to(device=ref.device, dtype=ref.dtype))
            _install_output_capture(inner)
        return model

    def inference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """A shallow copy of the classifier without the head (same weights; ``model`` keeps its head)."""
        inner = unwrap(model)
        if HEAD not in inner._modules:
            return inner
        clone = copy.copy(inner)
        clone._modules = {k: v for k, v in inner._modules.items() if k != HEAD}
        return clone

    def norm(self) -> str:
        """The norm of this batch's perturbation (``mixed`` draws one per batch, Table 10)."""
        if self.config.adv_norm != "mixed":
            return self.config.adv_norm
        return "linf" if same_choice(0.5) else "l2"

    def perturbation(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        grad: torch.Tensor,
        mask: torch.Tensor | None,
        norm: str,
    ) -> tuple[contextlib.AbstractContextManager, float]:
        """A context manager under which the model sees the adversarial input (eqs. 5-6, ascent sign).
        :meth:`perturbation_factory` gives a function that makes one per forward (sequential steps run two).

        ``grad`` is ∂CE/∂E of the clean loss w.r.t. the looked-up embeddings ``E = V[input_ids]``.
        AT^V: r is one matrix for the whole batch (‖r‖∞ = ε, or ‖r‖_F = ε over the rows present);
        AT^x: one δ per example (sign, or ε·g/‖g‖_F per example, as Miyato et al.).
        Returns ``(context, norm of r)``.
        """
        factory, size = self.perturbation_factory(model, input_ids, grad, mask, norm)
        return factory(), size

    def perturbation_factory(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        grad: torch.Tensor,
        mask: torch.Tensor | None,
        norm: str,
    ) -> tuple[Callable[[], contextlib.AbstractContextManager], float]:
        """:meth:`perturbation` as ``(context factory, norm of r)``: r is computed (and under DDP summed) once."""
        eps = self.config.adv_epsilon
        g = grad.detach().float() * (mask.unsqueeze(-1).float() if mask is not None else 1.0)
        if self.config.adv_target == "embeddings":
            delta = eps * normalize(g, mask, norm)
            return (lambda: perturb_embeddings(model, delta)), float(masked_norm(delta, mask, norm).max())
        token_ids, rows = row_gradients(g, input_ids)
        if world_size() > 1:  # ∇_V of the combined batch's mean loss: shard sums weighted by shard size
            token_ids, rows = sum_rows(token_ids, rows * input_ids.shape[0])
        r = eps * normalize(rows.unsqueeze(0), None, norm)[0]
        size = float(masked_norm(r.unsqueeze(0), None, norm)[0])
        return (lambda: perturb_embedding_rows(model, token_ids, r)), size

    # ------------------------------------------------------------------ the paired frame (methods/paired.py)
    def coupled(self) -> bool:
        return self.config.adv_lambda > 0  # λ = 0: (CE(V) + CE(V + r)) / 2 has no term of both passes

    def begin(self, frame: PairFrame) -> None:
        if self.config.adv_lambda > 0 and getattr(unwrap(frame.model), HEAD, None) is None:
            raise RuntimeError("CAT's projection head is missing: call method.setup(model) before training")

    def _outputs(self, frame: PairFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, z): z = the projection of the final state of the token the classifier pools (eqs. 7-8)."""
        contrast = self.config.adv_lambda > 0
        out = frame.model(**frame.batch, output_hidden_states=contrast)
        if not contrast:
            return out.logits, None
        head, mask = getattr(unwrap(frame.model), HEAD), frame.batch.get("attention_mask")
        return out.logits, head(sentence_representation(frame.model, out.hidden_states[-1], mask))

    def clean_pass(self, frame: PairFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        # a zero δ that requires grad exposes ∂CE/∂E without a dense ∂CE/∂V
        ids = frame.inputs["input_ids"]
        probe = frame.state["probe"] = torch.zeros(*ids.shape, embedding_dim(frame.model), device=ids.device)
        probe.requires_grad_(torch.is_grad_enabled())
        with perturb_embeddings(frame.model, probe):
            return self._outputs(frame)

    def prepare(self, frame: PairFrame, clean: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        ce_clean = task_loss(clean[0], frame.labels, frame.regression)
        (grad,) = torch.autograd.grad(ce_clean, frame.state["probe"], retain_graph=True)
        ids, mask = frame.inputs["input_ids"], frame.inputs.get("attention_mask")
        context, size = self.perturbation_factory(frame.model, ids, grad, mask, self.norm())
        frame.state.update(context=context, size=size)

    def perturbed_pass(self, frame: PairFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        with frame.state["context"]():
            return self._outputs(frame)

    def pair_loss(self, frame: PairFrame, clean, adv) -> StepOutput:
        """(1 − λ)/2 · (CE(V) + CE(V + r)) + λ · NT-Xent (eq. 10); a side is None in an uncoupled part."""
        lam, metrics, terms = self.config.adv_lambda, {}, []
        for side, key in ((clean, "adv/clean_loss"), (adv, "adv/loss")):
            if side is not None:
                ce = task_loss(side[0], frame.labels, frame.regression)
                metrics[key] = ce.item()
                terms.append((1 - lam) / 2 * ce)
        if lam > 0:
            # under DDP the negatives are the whole combined batch (SimCLR's cross-device gather)
            ctr = nt_xent(all_gather_with_grad(clean[1]), all_gather_with_grad(adv[1]), self.config.adv_temperature)
            terms.append(lam * ctr)
            metrics["adv/ctr_loss"] = ctr.item()
        return StepOutput(sum(terms[1:], terms[0]), metrics)

    def finish(self, frame: PairFrame, pair: Pair) -> StepOutput:
        return StepOutput(pair.out.loss, {**pair.out.metrics, "adv/delta_norm": frame.state["size"]})
