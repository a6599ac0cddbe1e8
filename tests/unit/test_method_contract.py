"""Contract every registered method must honour (runs over METHODS, so new methods are covered)."""

from __future__ import annotations

import pytest
import torch

from advtune.methods import METHODS, get_method
from advtune.testing import tiny_model


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _run_step(name: str, batch, seed: int = 0):
    torch.manual_seed(seed)
    model = tiny_model(num_labels=2, dropout=0.1, seed=0)
    method = get_method(name)
    model = method.setup(model)
    hooks_before = _hook_count(model)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model.train()
    torch.manual_seed(seed)
    out = method.step(model, dict(batch), lambda loss: loss.backward())
    return model, method, out, before, hooks_before


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, batch):
    model, method, out, before, hooks_before = _run_step(name, batch)
    assert torch.isfinite(out.loss), f"{name}: loss not finite"
    assert out.loss.dim() == 0 and not out.loss.requires_grad, f"{name}: loss must be a detached scalar"
    assert all(isinstance(v, float) and v == v for v in out.metrics.values()), f"{name}: metrics must be floats"
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, f"{name}: no trainable parameters"
    with_grad = [
        n for n, p in trainable if p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    ]
    assert with_grad, f"{name}: no parameter received a gradient"
    assert any("classifier" in n or "score" in n for n in with_grad), f"{name}: the classifier head got no gradient"
    for n, p in model.named_parameters():  # the method must never step the optimizer itself
        assert torch.equal(p.detach(), before[n]), f"{name}: step() changed parameter {n}"
    assert _hook_count(model) == hooks_before, f"{name}: hooks left behind"
    # reproducible under the same seed
    _, _, out2, _, _ = _run_step(name, batch)
    torch.testing.assert_close(out.loss, out2.loss, msg=f"{name}: same seed gave a different loss")
    # state round-trip
    state = method.state_dict()
    fresh = get_method(name)
    fresh.load_state_dict(state)
    assert set(fresh.state_dict()) == set(state)
