"""ROSE-First: only tensors within the saliency band get this step's update; others are untouched."""

from __future__ import annotations

import pytest
import torch

from advtune.errors import UsageError
from advtune.methods import get_method
from advtune.methods.base import symmetric_kl
from advtune.methods.rose import band_mask
from advtune.testing import tiny_model


def test_band_mask_keeps_the_percentile_band():
    sal = torch.arange(1.0, 21.0)  # 1..20
    keep = band_mask(sal, 50, 95)
    assert keep.tolist() == [False] * 10 + [True] * 9 + [False]


def test_selection_matches_kl_gradient_band_and_masks_updates(batch):
    torch.manual_seed(0)
    model = tiny_model(num_labels=2, dropout=0.1, seed=0).train()
    method = get_method("rose")
    params = method.selectable(model)
    assert params and all("layer" in n and "weight" in n for n, _ in params)
    # pre-existing gradients (an earlier micro-batch under gradient accumulation) must survive masking
    for _, p in params:
        p.grad = torch.full_like(p, 0.5)
    torch.manual_seed(123)
    out = method.step(model, dict(batch), lambda loss: loss.backward())
    # replay the two dropout passes to recompute the saliency independently
    ref = tiny_model(num_labels=2, dropout=0.1, seed=0).train()
    x = {k: v for k, v in batch.items() if k != "labels"}
    torch.manual_seed(123)
    kl = symmetric_kl(ref(**x).logits, ref(**x).logits)
    names = [n for n, _ in params]
    grads = torch.autograd.grad(kl, [dict(ref.named_parameters())[n] for n in names], allow_unused=True)
    sal = torch.stack([g.norm() if g is not None else torch.zeros(()) for g in grads])
    expected = band_mask(sal, 50, 95)
    assert [method.last_mask[n] for n in names] == expected.tolist()
    kept = sum(expected.tolist())
    assert 0 < kept < len(names)
    assert out.metrics["adv/selected_fraction"] == pytest.approx(kept / len(names))
    for (n, p), k in zip(params, expected.tolist()):
        if k:
            assert not torch.equal(p.grad, torch.full_like(p, 0.5)), f"{n} kept but got no update"
        else:
            assert torch.equal(p.grad, torch.full_like(p, 0.5)), f"{n} filtered but its gradient changed"
    # the head and the embeddings always train
    grads_all = dict(model.named_parameters())
    assert grads_all["classifier.weight"].grad is not None and grads_all["classifier.weight"].grad.abs().sum() > 0
    assert grads_all["bert.embeddings.word_embeddings.weight"].grad is not None


def test_filtered_tensors_are_not_stepped_by_adamw(batch):
    torch.manual_seed(0)
    model = tiny_model(num_labels=2, dropout=0.1, seed=0).train()
    method = get_method("rose", adv_lower=10, adv_upper=60)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad(set_to_none=True)
    method.step(model, dict(batch), lambda loss: loss.backward())
    opt.step()
    for n, kept in method.last_mask.items():
        p = dict(model.named_parameters())[n]
        assert torch.equal(p.detach(), before[n]) != kept, f"{n}: kept={kept}"


def test_warmup_and_validation(batch):
    torch.manual_seed(0)
    model = tiny_model(num_labels=2, dropout=0.1, seed=0).train()
    method = get_method("rose", adv_warmup_steps=1)
    out = method.step(model, dict(batch), lambda loss: loss.backward())
    assert out.metrics["adv/selected_fraction"] == 1.0
    assert all(p.grad is not None for _, p in method.selectable(model))
    with pytest.raises(UsageError):
        get_method("rose", adv_lower=90, adv_upper=50)
