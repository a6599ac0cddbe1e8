"""Two-process DDP on CPU (gloo): the embedding-space methods match one process on the combined
batch, and multi-pass methods all-reduce the gradients once per optimizer step.

Tolerance: parameters after 3 SGD steps (lr 0.5) agree with the single-process run to rtol 1e-4,
atol 1e-5 (fp32; the two runs only differ in the order of the gradient sums).
"""

from __future__ import annotations

import pytest
import torch

from tests.ddp import torchrun

from .ddp_worker import METHODS, STEPS, combined_batch, train

pytestmark = pytest.mark.ddp

PASSES = {"standard": 1, "freelb": 3, "fgm": 2, "pgd": 3, "freeat": 1, "yopo": 3}
"""Backward passes that would all-reduce per step without no_sync (PGD: K inner autograd.grad + 1)."""


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_gloo_available():
        pytest.skip("torch was built without gloo")
    out = tmp_path_factory.mktemp("ddp")
    torchrun("ddp_worker.py", out)
    return out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_two_processes_equal_one_process_on_the_combined_batch(ddp_results, name):
    ddp = torch.load(ddp_results / f"{name}.pt")
    torch.manual_seed(0)
    from advtune.testing import tiny_model

    single = train(name, tiny_model(dropout=0.0, seed=0), combined_batch())
    for k, p in single.named_parameters():
        torch.testing.assert_close(ddp["params"][k], p.detach(), rtol=1e-4, atol=1e-5, msg=f"{name}: {k} differs")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_allreduce_per_step(ddp_results, name):
    """The tiny model fits one DDP bucket: one all-reduce per step iff inner passes skip the sync."""
    ddp = torch.load(ddp_results / f"{name}.pt")
    assert ddp["allreduce_calls"] == ddp["steps"] == STEPS
    if PASSES[name] > 1 and name != "pgd":  # PGD's inner autograd.grad never touches parameter grads
        unsynced = torch.load(ddp_results / f"{name}-sync_inner.pt")
        assert unsynced["allreduce_calls"] == PASSES[name] * STEPS
