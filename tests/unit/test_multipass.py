"""The multi-pass frame: FreeLB, PGD and YOPO through it equal their algorithm boxes written out in full.

The references below are the loops each method had before the frame existed (FreeLB Algorithm 1, K-PGD,
YOPO-m-n), built from the same public helpers; with dropout on and masks replayed, the frame must give
bit-identical losses, metrics and parameter gradients, and leave the random stream where they leave it.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from advtune.dropout_replay import dropout_rng, maybe_replay
from advtune.methods import Backward, get_method
from advtune.methods.embedding_space import adv_loss, delta_frame, delta_metrics
from advtune.methods.freelb import FreeLB
from advtune.methods.multipass import Frame
from advtune.methods.yopo_blocks import first_block_output, record_first_block
from advtune.perturbation import ascent_step, init_delta
from advtune.testing import tiny_model


def _freelb_reference(cfg, model, inputs, backward, no_sync):
    k = cfg.adv_steps
    like, mask = delta_frame(model, inputs)
    delta = init_delta(like, mask, cfg.adv_init, cfg.adv_init_scale, cfg.adv_norm)
    rng = dropout_rng(cfg.adv_reuse_dropout, model, like.device)
    total = torch.zeros((), device=like.device)
    for t in range(k):
        delta.requires_grad_()
        with contextlib.nullcontext() if t == k - 1 else no_sync(), maybe_replay(rng):
            loss = adv_loss(model, inputs, delta)
            backward(loss / k)
        total += loss.detach()
        if t < k - 1:
            delta = ascent_step(delta, delta.grad, mask, cfg.adv_step_size, cfg.adv_epsilon, cfg.adv_norm)
    return total / k, {"adv/loss": float(loss.detach()), **delta_metrics(delta, mask, cfg.adv_norm)}


def _pgd_reference(cfg, model, inputs, backward, no_sync):
    like, mask = delta_frame(model, inputs)
    delta = init_delta(like, mask, cfg.adv_init, cfg.adv_init_scale, cfg.adv_norm)
    rng = dropout_rng(cfg.adv_reuse_dropout, model, like.device)
    first = None
    for _ in range(cfg.adv_steps):
        delta.requires_grad_()
        with no_sync(), maybe_replay(rng):
            loss = adv_loss(model, inputs, delta)
            (grad,) = torch.autograd.grad(loss, delta)
        first = loss.detach() if first is None else first
        delta = ascent_step(delta, grad, mask, cfg.adv_step_size, cfg.adv_epsilon, cfg.adv_norm)
    with maybe_replay(rng):
        adv = adv_loss(model, inputs, delta)
    metrics = {"adv/loss": float(adv.detach()), "adv/start_loss": float(first)}
    metrics.update(delta_metrics(delta, mask, cfg.adv_norm))
    total = adv
    if cfg.adv_clean_weight > 0:
        clean = adv_loss(model, inputs, None)
        metrics["adv/clean_loss"] = float(clean.detach())
        total = adv + cfg.adv_clean_weight * clean
    backward(total)
    return total.detach(), metrics


def _yopo_reference(cfg, model, inputs, backward, no_sync):
    m, n = cfg.adv_steps, cfg.adv_inner_steps
    alpha = cfg.adv_step_size / n if cfg.adv_divide_step else cfg.adv_step_size
    like, mask = delta_frame(model, inputs)
    delta = init_delta(like, mask, cfg.adv_init, cfg.adv_init_scale, cfg.adv_norm)
    rng = dropout_rng(cfg.adv_reuse_dropout, model, like.device)
    total = torch.zeros((), device=like.device)
    for t in range(m):
        last = t == m - 1
        delta.requires_grad_()
        with contextlib.nullcontext() if last else no_sync(), maybe_replay(rng):
            with record_first_block(model) as rec:
                loss = adv_loss(model, inputs, delta)
                backward(loss / m)
        total += loss.detach()
        if last:
            break
        grad, p = delta.grad, rec["grad"].float()
        for j in range(n):
            if j > 0:
                delta.requires_grad_()
                with no_sync(), maybe_replay(rng):
                    h = first_block_output(model, inputs, delta)
                    (grad,) = torch.autograd.grad((h.float() * p).sum(), delta)
            delta = ascent_step(delta, grad, mask, alpha, cfg.adv_epsilon, cfg.adv_norm)
    return total / m, {"adv/loss": float(loss.detach()), **delta_metrics(delta, mask, cfg.adv_norm)}


REFERENCES = {"freelb": _freelb_reference, "pgd": _pgd_reference, "yopo": _yopo_reference}
CASES = [
    ("freelb", {}),
    ("freelb", {"adv_reuse_dropout": False, "adv_norm": "linf", "adv_epsilon": 0.05, "adv_step_size": 0.02}),
    ("pgd", {}),
    ("pgd", {"adv_reuse_dropout": True, "adv_clean_weight": 0.5, "adv_steps": 2}),
    ("yopo", {}),
    ("yopo", {"adv_inner_steps": 3, "adv_divide_step": False, "adv_steps": 2}),
]


def _run(step, batch, seed=3):
    model = tiny_model(num_labels=2, dropout=0.2, seed=0).train()
    syncs: list[int] = []
    no_sync = lambda: contextlib.nullcontext(syncs.append(1))  # noqa: E731
    torch.manual_seed(seed)
    loss, metrics = step(model, Backward(lambda loss: loss.backward(), no_sync=no_sync), no_sync)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss, metrics, grads, len(syncs), torch.rand(4)


@pytest.mark.parametrize(("name", "overrides"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_frame_equals_the_written_out_loop(name, overrides, batch):
    method = get_method(name, **overrides)

    def framed(model, backward, no_sync):
        out = method.step(model, dict(batch), backward)
        return out.loss, out.metrics

    def reference(model, backward, no_sync):
        return REFERENCES[name](method.config, model, dict(batch), backward, no_sync)

    new, old = _run(framed, batch), _run(reference, batch)
    assert torch.equal(new[0], old[0]), f"loss {new[0]} != {old[0]}"
    assert new[1] == old[1]
    assert new[2].keys() == old[2].keys() and all(torch.equal(new[2][k], old[2][k]) for k in old[2])
    assert new[3] == old[3] > 0, "inner passes under no_sync"
    assert torch.equal(new[4], old[4]), "the random stream after the step differs"


class _DoubledInnerLoss(FreeLB):
    """An InfoBERT-style method only changes the inner-loss hook; the frame does the rest."""

    def pass_loss(self, frame: Frame, delta: torch.Tensor, last: bool):
        loss, logs = super().pass_loss(frame, delta, last)
        return 2 * loss, {**logs, "custom/seen": 1.0}


def test_the_inner_loss_hook_is_what_trains_and_what_is_logged(batch):
    """Doubling the inner loss doubles every parameter gradient exactly (δ's normalised steps are
    scale-free), and the hook's metrics are logged."""
    base, doubled = FreeLB(adv_steps=2), _DoubledInnerLoss(adv_steps=2)
    runs = []
    for method in (base, doubled):
        model = tiny_model(num_labels=2, dropout=0.0, seed=0).train()
        torch.manual_seed(0)
        out = method.step(model, dict(batch), lambda loss: loss.backward())
        runs.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (out_a, g_a), (out_b, g_b) = runs
    assert torch.equal(out_b.loss, 2 * out_a.loss)
    assert all(torch.equal(g_b[n], 2 * g_a[n]) for n in g_a)
    assert out_b.metrics["custom/seen"] == 1.0 and "custom/seen" not in out_a.metrics
