"""Properties of the shared perturbation maths (hypothesis over shapes, norms, budgets, masks)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advtune.perturbation import (
    ascent_step,
    gradient_share,
    init_delta,
    masked_norm,
    normalize,
    num_entries,
    project,
)

NORMS = ["l2", "linf"]


@st.composite
def masked_tensors(draw):
    """A random (B, L, H) or (B, k, L, H) tensor with a right-padded mask (>= 1 real token each)."""
    four_d = draw(st.booleans())
    b, seq, h = draw(st.integers(1, 4)), draw(st.integers(1, 7)), draw(st.integers(1, 6))
    shape = (b, draw(st.integers(1, 3)), seq, h) if four_d else (b, seq, h)
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * scale
    lengths = torch.randint(1, seq + 1, shape[:-2], generator=gen)
    mask = (torch.arange(seq).expand(shape[:-1]) < lengths.unsqueeze(-1)).long()
    return x, mask


def _padding(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return t[mask == 0]


@settings(max_examples=60, deadline=None)
@given(data=masked_tensors(), norm=st.sampled_from(NORMS), eps=st.floats(1e-3, 10.0))
def test_project_lands_in_ball_keeps_padding_zero_and_is_idempotent(data, norm, eps):
    x, mask = data
    p = project(x, mask, eps, norm)
    assert p.dtype == torch.float32
    assert (masked_norm(p, mask, norm) <= eps * (1 + 1e-5)).all()
    assert torch.count_nonzero(_padding(p, mask)) == 0
    torch.testing.assert_close(project(p, mask, eps, norm), p)
    # inside the ball nothing moves (except padding)
    small = x * 1e-9
    torch.testing.assert_close(project(small, mask, 1e3, norm), small * mask.unsqueeze(-1))


@settings(max_examples=40, deadline=None)
@given(data=masked_tensors(), norm=st.sampled_from(NORMS))
def test_project_with_zero_epsilon_is_unbounded(data, norm):
    x, mask = data
    torch.testing.assert_close(project(x, mask, 0.0, norm), x * mask.unsqueeze(-1))


@settings(max_examples=40, deadline=None)
@given(data=masked_tensors(), norm=st.sampled_from(NORMS), c=st.floats(1e-4, 1e4))
def test_normalize_is_scale_invariant_and_unit(data, norm, c):
    g, mask = data
    d = normalize(g, mask, norm)
    torch.testing.assert_close(normalize(g * c, mask, norm), d, rtol=1e-4, atol=1e-5)
    assert torch.count_nonzero(_padding(d, mask)) == 0
    if norm == "l2":
        torch.testing.assert_close(masked_norm(d, mask, "l2"), torch.ones(g.shape[0]), rtol=1e-4, atol=1e-4)
    else:
        assert set(d.unique().tolist()) <= {-1.0, 0.0, 1.0}


@settings(max_examples=40, deadline=None)
@given(data=masked_tensors(), norm=st.sampled_from(NORMS), eps=st.floats(1e-3, 5.0), alpha=st.floats(1e-3, 5.0))
def test_ascent_step_respects_budget_and_padding(data, norm, eps, alpha):
    g, mask = data
    delta = init_delta(g, mask, "uniform", eps, norm)
    new = ascent_step(delta, g, mask, alpha, eps, norm)
    assert not new.requires_grad and new.dtype == torch.float32
    assert (masked_norm(new, mask, norm) <= eps * (1 + 1e-5)).all()
    assert torch.count_nonzero(_padding(new, mask)) == 0


def test_uniform_l2_init_is_freelb_scaled():
    x = torch.zeros(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    torch.manual_seed(0)
    d = init_delta(x, mask, "uniform", 0.5, "l2")
    n_delta = torch.tensor([5 * 8, 2 * 8.0])
    torch.testing.assert_close(num_entries(mask, x), n_delta)
    bound = 0.5 / n_delta.sqrt()
    assert (d[0].abs() <= bound[0]).all() and (d[1, :2].abs() <= bound[1]).all()
    assert d[1, :2].abs().max() > bound[1] * 0.5  # not degenerate
    assert torch.count_nonzero(d[1, 2:]) == 0
    # Frobenius norm of U(-e,e)/sqrt(N) is about e/sqrt(3) whatever the length
    big = init_delta(torch.zeros(64, 20, 32), None, "uniform", 0.6, "l2")
    assert abs(masked_norm(big, None).mean().item() - 0.6 / 3**0.5) < 0.02


def test_linf_and_normal_init_and_generator():
    x = torch.zeros(3, 4, 6)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]])
    d = init_delta(x, mask, "uniform", 0.1, "linf")
    assert d.abs().max() <= 0.1 and d.abs().max() > 0.05
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    n1, n2 = init_delta(x, mask, "normal", 2.0, generator=g1), init_delta(x, mask, "normal", 2.0, generator=g2)
    torch.testing.assert_close(n1, n2)
    assert 1.0 < n1[0].std().item() < 3.0 and torch.count_nonzero(n1[2, 1:]) == 0
    assert torch.count_nonzero(init_delta(x, mask, "zero", 1.0)) == 0
    with pytest.raises(ValueError):
        init_delta(x, mask, "gaussian", 1.0)
    with pytest.raises(ValueError):
        project(x, mask, 1.0, "l1")


def test_per_example_epsilon_and_norms_in_fp32():
    x = torch.ones(2, 3, 4, dtype=torch.bfloat16) * 300
    eps = torch.tensor([1.0, 0.0])  # 0 = unbounded for that example
    p = project(x, None, eps, "l2")
    assert p.dtype == torch.float32
    torch.testing.assert_close(masked_norm(p, None)[0], torch.tensor(1.0))
    torch.testing.assert_close(p[1], x[1].float())
    assert masked_norm(x, None).dtype == torch.float32


@pytest.mark.parametrize("norm", NORMS)
def test_nonfinite_gradient_keeps_old_delta(norm):
    delta = torch.full((2, 3, 4), 0.01)
    grad = torch.randn(2, 3, 4)
    grad[1, 0, 0] = float("inf")
    new = ascent_step(delta, grad, None, 0.1, 1.0, norm)
    assert torch.isfinite(new).all()
    torch.testing.assert_close(new[1], delta[1])
    assert not torch.equal(new[0], delta[0])


@pytest.mark.parametrize("norm", NORMS)
def test_descend_steps_against_gradient(norm):
    grad = torch.randn(2, 3, 4)
    up = ascent_step(torch.zeros_like(grad), grad, None, 0.1, 0.0, norm)
    down = ascent_step(torch.zeros_like(grad), grad, None, 0.1, 0.0, norm, descend=True)
    torch.testing.assert_close(up, -down)
    assert ((up * grad).sum(dim=(1, 2)) > 0).all()


@pytest.mark.parametrize("norm", NORMS)
def test_one_ascent_step_increases_the_loss(norm, model, batch):
    """On a fixed tiny model and batch, one normalised step along ∂L/∂δ raises the loss."""
    from advtune.embeddings import embedding_dim, forward_with_delta
    from advtune.methods.base import task_loss

    model.eval()
    mask = batch["attention_mask"]
    shape = (*batch["input_ids"].shape, embedding_dim(model))
    delta = torch.zeros(shape, requires_grad=True)
    loss0 = task_loss(forward_with_delta(model, batch, delta).logits, batch["labels"], False)
    (grad,) = torch.autograd.grad(loss0, delta)
    step = 0.05 if norm == "l2" else 0.005
    new = ascent_step(delta, grad, mask, step, 0.0, norm)
    with torch.no_grad():
        loss1 = task_loss(forward_with_delta(model, batch, new).logits, batch["labels"], False)
    assert loss1 > loss0.detach() + 1e-6


def test_gradient_share_is_the_steps_part_of_each_real_token():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(2, 4, 8, generator=g) * 1e-5
    grad = torch.randn(2, 4, 8, generator=g)
    mask = torch.ones(2, 4)
    mask[1, 2:] = 0
    assert gradient_share(delta, grad, mask, 1.0) == pytest.approx(1.0, abs=1e-3)  # the step dominates
    assert gradient_share(delta, grad, mask, 1e-12) < 1e-4  # δ stays its start
    # one token by hand: ‖η g‖∞ / ‖δ + η g‖∞, padding ignored (garbage there changes nothing)
    eta = 1e-5
    one = (eta * grad[0, 0]).abs().max() / (delta[0, 0] + eta * grad[0, 0]).abs().max()
    single = torch.zeros(1, 4)
    single[0, 0] = 1
    assert gradient_share(delta[:1], grad[:1], single, eta) == pytest.approx(float(one), rel=1e-5)
    grad[1, 2:] = 1e9
    assert gradient_share(delta, grad, mask, eta) == pytest.approx(
        gradient_share(delta, grad * mask[..., None], mask, eta)
    )
