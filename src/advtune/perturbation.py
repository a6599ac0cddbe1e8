"""Perturbation maths shared by every embedding-space method: init, normalise, project, ascend.

Pure tensor functions with no model knowledge. Conventions, identical in every function:

* ``x`` (or ``delta``/``grad``) has shape ``(B, L, H)`` or ``(B, k, L, H)``; ``mask`` has the same
  shape without the trailing hidden dimension (``(B, L)`` / ``(B, k, L)``), 1 for real tokens and
  0 for padding, and is broadcast over the hidden dimension. ``mask=None`` means "all real".
* Everything is **per example** (dimension 0): an example's norm is taken over all its real
  entries, e.g. the Frobenius norm over (tokens x hidden) of FreeLB eq. (2).
* Norms and the returned perturbations are **fp32** whatever the input dtype, so bf16/fp16
  gradients neither underflow in the norm nor round δ.
* Padding positions of every returned perturbation are exactly zero.
* ``epsilon`` / ``step_size`` may be a float or a ``(B,)`` tensor (per-example budgets, e.g. the
  ΔL_max evaluation of FreeLB section 4.3 with ε = 0.01‖X‖_F per sample). ``epsilon == 0``
  means unbounded (no projection), as in FreeLB's released settings.
"""

from __future__ import annotations

from typing import Literal

import torch

Norm = Literal["l2", "linf"]
Init = Literal["zero", "uniform", "normal"]
NORMS: tuple[str, ...] = ("l2", "linf")
INITS: tuple[str, ...] = ("zero", "uniform", "normal")

_TINY = 1e-12


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r} (choose from {', '.join(NORMS)})")


def _mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The mask as fp32, broadcastable against ``like`` (trailing hidden dimension added)."""
    if mask is None:
        return torch.ones(like.shape[:-1] + (1,), dtype=torch.float32, device=like.device)
    if mask.shape != like.shape[:-1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match tensor shape {tuple(like.shape)}")
    return mask.to(device=like.device, dtype=torch.float32).unsqueeze(-1)


def _per_example(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A float or ``(B,)`` tensor as fp32 shaped ``(B, 1, ..., 1)`` to broadcast against ``like``."""
    t = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if t.dim() == 0:
        t = t.expand(like.shape[0])
    return t.reshape((like.shape[0],) + (1,) * (like.dim() - 1))


def masked_norm(x: torch.Tensor, mask: torch.Tensor | None, norm: Norm = "l2") -> torch.Tensor:
    """Per-example norm over the real (unmasked) entries, in fp32. Returns shape ``(B,)``."""
    _check_norm(norm)
    xm = x.float() * _mask(mask, x)
    flat = xm.reshape(x.shape[0], -1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(x.shape[0])


def num_entries(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``N_δ`` of FreeLB Algorithm 1 per example: real tokens x hidden size, fp32 ``(B,)``."""
    m = _mask(mask, like)
    return m.reshape(like.shape[0], -1).sum(dim=1) * like.shape[-1]


def init_delta(
    like: torch.Tensor,
    mask: torch.Tensor | None,
    init: Init = "zero",
    scale: float | torch.Tensor = 0.0,
    norm: Norm = "l2",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A starting perturbation shaped like ``like`` (fp32, zero at padding).

    Args:
        like (`torch.Tensor`): the embeddings to perturb (only shape and device are used).
        mask (`torch.Tensor`, *optional*): real-token mask (see the module docstring).
        init (`str`): ``"zero"``; ``"uniform"``: for ``norm="l2"`` FreeLB's
            ``U(-scale, scale) / sqrt(N_δ)`` with ``N_δ`` = real tokens x hidden of that example
            (Algorithm 1, line 4), for ``norm="linf"`` plain ``U(-scale, scale)`` (Madry's random
            start inside the L∞ ball); ``"normal"``: ``N(0, scale²)`` per entry whatever the norm
            (SMART/VAT-style noise; normalise it yourself for a unit direction).
        scale (`float` or `torch.Tensor`): magnitude (float or per-example ``(B,)``).
        norm (`str`): ``"l2"`` or ``"linf"`` (only changes ``"uniform"``).
        generator (`torch.Generator`, *optional*): for reproducible draws independent of the global RNG.
    """
    _check_norm(norm)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r} (choose from {', '.join(INITS)})")
    m = _mask(mask, like)
    if init == "zero":
        return torch.zeros(like.shape, dtype=torch.float32, device=like.device)
    s = _per_example(scale, like)
    if init == "uniform":
        u = torch.rand(like.shape, dtype=torch.float32, device=like.device, generator=generator) * 2 - 1
        if norm == "l2":
            s = s / _per_example(num_entries(mask, like).clamp_min(1.0).sqrt(), like)
        return u * s * m
    z = torch.randn(like.shape, dtype=torch.float32, device=like.device, generator=generator)
    return z * s * m


def normalize(grad: torch.Tensor, mask: torch.Tensor | None, norm: Norm = "l2") -> torch.Tensor:
    """Steepest-ascent direction of unit size: ``g / ‖g‖_F`` per example (L2) or ``sign(g)`` (L∞).

    Scale-invariant, so fp16 loss scaling and gradient-accumulation factors do not change it.
    An all-zero gradient gives a zero direction. Differentiable (VAT's power iteration uses it).
    """
    _check_norm(norm)
    g = grad.float() * _mask(mask, grad)
    if norm == "linf":
        return torch.sign(g)
    n = g.reshape(g.shape[0], -1).norm(p=2, dim=1)
    return g / _per_example(n.clamp_min(_TINY), g)


def project(
    delta: torch.Tensor, mask: torch.Tensor | None, epsilon: float | torch.Tensor, norm: Norm = "l2"
) -> torch.Tensor:
    """Project each example onto its ε-ball (L2: rescale if outside; L∞: clamp); padding zeroed.

    ``epsilon == 0`` (float) means unbounded: only the padding is zeroed.
    """
    _check_norm(norm)
    d = delta.float() * _mask(mask, delta)
    if not torch.is_tensor(epsilon) and float(epsilon) == 0.0:
        return d
    eps = _per_example(epsilon, d)
    unbounded = eps <= 0
    if norm == "linf":
        return torch.where(unbounded, d, torch.maximum(torch.minimum(d, eps), -eps))
    n = _per_example(masked_norm(d, None, "l2"), d)
    factor = torch.where((n > eps) & ~unbounded, eps / n.clamp_min(_TINY), torch.ones_like(n))
    return d * factor


def finite_examples(grad: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: examples whose gradient is entirely finite (fp16 overflow check)."""
    return torch.isfinite(grad.reshape(grad.shape[0], -1)).all(dim=1)


@torch.no_grad()
def ascent_step(
    delta: torch.Tensor,
    grad: torch.Tensor,
    mask: torch.Tensor | None,
    step_size: float | torch.Tensor,
    epsilon: float | torch.Tensor = 0.0,
    norm: Norm = "l2",
    descend: bool = False,
) -> torch.Tensor:
    """One projected, normalised step: ``Π_ε(δ ± α · normalize(g))`` (FreeLB eq. 2 for L2).

    Returns a new **detached** fp32 tensor (call ``.requires_grad_()`` to differentiate again).
    Examples whose gradient has a non-finite entry keep their old δ, so an fp16 overflow step
    (which the GradScaler will skip for the weights) does not poison the perturbation.
    ``descend=True`` steps against the gradient (targeted attacks minimise the target's loss).
    """
    g = grad.float()
    ok = finite_examples(g)
    g = torch.where(_per_example(ok, g).bool(), g, torch.zeros_like(g))
    direction = normalize(g, mask, norm)
    alpha = _per_example(step_size, g)
    new = delta.detach().float() + (-alpha if descend else alpha) * direction
    new = project(new, mask, epsilon, norm)
    return torch.where(_per_example(ok, g).bool(), new, delta.detach().float() * _mask(mask, g))


@torch.no_grad()
def unit_linf_step(
    delta: torch.Tensor,
    grad: torch.Tensor,
    mask: torch.Tensor | None,
    step_size: float,
    descend: bool = False,
    stabilizer: float = 1e-6,
) -> torch.Tensor:
    """SMART's reference-code step (MT-DNN ``SmartPerturbation``, L∞, token level):
    ``v = δ ± η g``, then every token's ``v`` divided by its own ``max |v|`` (+ ``stabilizer``).

    Each real token's δ ends with L∞ norm 1 (just under); nothing is projected to ε, the ε of that
    code being this stabiliser. Detached fp32, zero at padding; examples with a non-finite gradient
    keep their old δ (as :func:`ascent_step`).
    """
    g = grad.float()
    ok = finite_examples(g)
    g = torch.where(_per_example(ok, g).bool(), g, torch.zeros_like(g))
    v = delta.detach().float() + (-step_size if descend else step_size) * g
    v = v / (v.abs().amax(dim=-1, keepdim=True) + stabilizer) * _mask(mask, v)
    return torch.where(_per_example(ok, g).bool(), v, delta.detach().float() * _mask(mask, g))


def gradient_share(
    delta: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor | None, step_size: float, descend: bool = False
) -> float:
    """How much of a :func:`unit_linf_step` the gradient decides: the mean over real tokens of
    ``‖η g‖∞ / ‖δ ± η g‖∞`` (− when ``descend``). Near 0, the normalised δ is just its previous value
    (the random start for K = 1), whatever the sign of the step; near 1, δ points where the gradient says."""
    g = (-step_size if descend else step_size) * grad.detach().float()
    v = delta.detach().float()
    share = g.abs().amax(dim=-1) / (v + g).abs().amax(dim=-1).clamp_min(1e-30)
    m = _mask(mask, g).squeeze(-1)
    return float((share.nan_to_num(0.0) * m).sum() / m.sum().clamp_min(1.0))


__all__ = [
    "INITS",
    "NORMS",
    "Init",
    "Norm",
    "ascent_step",
    "finite_examples",
    "gradient_share",
    "init_delta",
    "masked_norm",
    "normalize",
    "num_entries",
    "project",
    "unit_linf_step",
]
