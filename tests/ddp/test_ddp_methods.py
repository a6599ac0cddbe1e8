"""Two-process DDP on CPU (gloo) for TAT and CAT, next to the FreeLB-family test in ``test_ddp.py``.

Tolerance: parameters after 3 SGD steps (lr 0.5, fp32) agree to rtol 1e-4, atol 1e-5 (the runs differ
only in the order of the gradient sums).

* TAT and CAT's AT^x variant with λ = 0 are per-example computations, so 2 processes x 8 examples
  equal 1 process on the combined 16.
* CAT as in the paper perturbs rows of V with the sign (or L2 direction) of the *batch* gradient
  and contrasts each example against the other examples of the batch (NT-Xent): under DDP the row
  gradients are summed over processes and the projections all-gathered with gradients, so it equals
  the combined batch too; the last test checks that this is not trivially so (one process taking
  CAT's step on each half separately and averaging ends elsewhere).
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


@pytest.mark.parametrize("case", ["tat", "cat-embeddings", "cat", "cat-l2", "tat-sequential", "cat-sequential"])
def test_two_processes_equal_one_process_on_the_combined_batch(results, case):
    ddp = torch.load(results / f"{case}.pt")
    torch.manual_seed(0)
    method, model = build(case)
    single = train(method, model, [combined_batch()])
    for k, p in single.named_parameters():
        torch.testing.assert_close(ddp["params"][k], p.detach(), rtol=1e-4, atol=1e-5, msg=f"{case}: {k} differs")
    assert ddp["allreduce_calls"] == 3, "one gradient all-reduce per optimizer step"


def test_tat_error_tally_is_summed_over_processes(results):
    """At the epoch end each process's confusion counts become the sum over processes: the table equals
    the one a single process builds from the combined batch (a half alone counts half the examples)."""
    ddp = torch.load(results / "tat.pt")
    torch.manual_seed(0)
    method, model = build("tat")
    train(method, model, [combined_batch()])
    method.on_epoch_end(1)
    assert torch.equal(ddp["tally_table"], method.tally.table)


def test_cat_without_the_gather_would_differ(results):
    """Averaging CAT's per-half steps (what DDP gives without the gathers) is measurably different."""
    ddp = torch.load(results / "cat.pt")
    torch.manual_seed(0)
    method, model = build("cat")
    sharded = train(method, model, _halves())
    assert not _close(ddp["params"], sharded), "the per-half average equals the combined batch: weak test"
