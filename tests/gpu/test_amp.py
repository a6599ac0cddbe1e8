"""Mixed precision on a GPU: every method trains under bf16 autocast and under fp16 with loss scaling.

Skipped without CUDA. fp16: the Trainer's GradScaler scales every backward, so δ-gradients come back
scaled; the methods' normalised / sign steps cancel the scale, and a non-finite δ-gradient keeps the
old δ (``perturbation.ascent_step``) while the scaler skips the weight update. The last test forces an
overflow and checks that the weights are left untouched and δ stays finite.
"""

from __future__ import annotations

import math

import pytest
import torch

from advtune.methods import METHODS, get_method
from advtune.testing import tiny_family_batch, tiny_family_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (mixed precision is GPU-only here)"),
]

TEXTS = ["the movie was very good", "bad", "i love this film and the plot is great", "the story was boring"]
LABELS = [1, 0, 1, 0]


def _batch(family: str = "bert") -> dict[str, torch.Tensor]:
    return {k: v.cuda() for k, v in tiny_family_batch(family, TEXTS, LABELS).items()}


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_method_step_under_autocast(name, dtype):
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    torch.manual_seed(0)
    method = get_method(name)
    model = method.setup(tiny_model_cuda())
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(2):
        optim.zero_grad()
        with torch.autocast("cuda", dtype=dtype):
            out = method.step(model, _batch(), lambda loss: scaler.scale(loss).backward())
        assert math.isfinite(float(out.loss)), f"{name}: loss {out.loss}"
        scaler.step(optim)
        scaler.update()
    assert all(torch.isfinite(p).all() for p in model.parameters()), f"{name}: non-finite weights"


def tiny_model_cuda():
    return tiny_family_model("bert", dropout=0.1).cuda()


@pytest.mark.skipif("freelb" not in METHODS, reason="freelb is not registered")
def test_fp16_overflow_skips_the_update_and_keeps_delta_finite():
    torch.manual_seed(0)
    method = get_method("freelb")
    model = tiny_model_cuda()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**40)  # large enough to overflow fp16 gradients
    optim = torch.optim.SGD(model.parameters(), lr=1e-2)
    with torch.autocast("cuda", dtype=torch.float16):
        out = method.step(model, _batch(), lambda loss: scaler.scale(loss).backward())
    scaler.step(optim)
    scaler.update()
    assert scaler.get_scale() < 2.0**40, "the scaler must have seen the overflow"
    for k, p in model.named_parameters():
        assert torch.equal(p.detach(), before[k]), f"{k} changed although the step overflowed"
    assert all(math.isfinite(v) for v in out.metrics.values()), f"δ metrics not finite: {out.metrics}"
