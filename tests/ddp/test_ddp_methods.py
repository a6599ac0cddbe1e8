"""Two-process DDP on CPU (gloo) for TAT and CAT, next to the FreeLB-family test in ``test_ddp.py``.

Tolerance: parameters after 3 SGD steps (lr 0.5, fp32) agree to rtol 1e-4, atol 1e-5 (the runs differ
only in the order of the gradient sums).

* TAT and CAT's AT^x variant with λ = 0 are per-example computations, so 2 processes x 8 examples
  equal 1 process on the combined 16.
* CAT as in the paper perturbs rows of V with the sign of the *batch* gradient and contrasts each
  example against the other examples of the batch (NT-Xent). Under DDP both come from each process's
  own examples (as SimCLR without a cross-device gather), so the run equals one process that takes
  CAT's step on each half and averages the gradients, not one step on the combined batch; the last
  test pins that down so a future change (a gather) is noticed.
"""

from __future__ import annotations

import pytest
import torch

from tests.ddp import torchrun

from .ddp_methods_worker import CASES, build, combined_batch, train

pytestmark = pytest.mark.ddp


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from advtune.methods import METHODS

    missing = {CASES[c][0] for c in CASES} - set(METHODS)
    if missing:
        pytest.skip(f"methods not registered: {sorted(missing)}")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch was built without gloo")
    out = tmp_path_factory.mktemp("ddp_methods")
    torchrun("ddp_methods_worker.py", out)
    return out


def _halves() -> list[dict]:
    full = combined_batch()
    n = full["labels"].shape[0] // 2
    return [{k: v[:n] for k, v in full.items()}, {k: v[n:] for k, v in full.items()}]


def _close(got: dict, model: torch.nn.Module) -> bool:
    return all(torch.allclose(got[k], p.detach(), rtol=1e-4, atol=1e-5) for k, p in model.named_parameters())


@pytest.mark.parametrize("case", ["tat", "cat-embeddings"])
def test_two_processes_equal_one_process_on_the_combined_batch(results, case):
    ddp = torch.load(results / f"{case}.pt")
    torch.manual_seed(0)
    method, model = build(case)
    single = train(method, model, [combined_batch()])
    for k, p in single.named_parameters():
        torch.testing.assert_close(ddp["params"][k], p.detach(), rtol=1e-4, atol=1e-5, msg=f"{case}: {k} differs")
    assert ddp["allreduce_calls"] == 3, "one gradient all-reduce per optimizer step"


def test_cat_under_ddp_is_the_average_of_per_process_steps(results):
    ddp = torch.load(results / "cat.pt")
    torch.manual_seed(0)
    method, model = build("cat")
    sharded = train(method, model, _halves())
    for k, p in sharded.named_parameters():
        torch.testing.assert_close(ddp["params"][k], p.detach(), rtol=1e-4, atol=1e-5, msg=f"cat: {k} differs")
    torch.manual_seed(0)
    method, model = build("cat")
    combined = train(method, model, [combined_batch()])
    assert not _close(ddp["params"], combined), "CAT now matches the combined batch: update the docs and this test"
