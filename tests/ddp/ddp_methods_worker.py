"""Worker for test_ddp_methods.py (TAT, CAT): ``torchrun --standalone --nproc_per_node 2 ddp_methods_worker.py OUT``.

Reuses the batch and the counting all-reduce hook of ``ddp_worker.py`` (the FreeLB-family DDP test).
Each rank trains the tiny model (dropout off) for ``STEPS`` SGD steps on its contiguous half of the
batch; rank 0 saves the parameters to ``OUT/<case>.pt``.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_worker import combined_batch, counting_hook  # noqa: E402

from advtune.methods import Backward, get_method  # noqa: E402
from advtune.testing import tiny_model  # noqa: E402

_TAT = {"adv_init_scale": 0.0, "adv_step_size": 1e-2, "adv_epsilon": 5e-2, "adv_alpha": 1.0}
_CAT = {"adv_epsilon": 1e-2, "adv_lambda": 0.3, "adv_proj_dim": 16}
CASES = {
    # binary labels: TAT's target y_t != y is unique, so no sampling differs between ranks; zero start
    "tat": ("tat", _TAT),
    # AT^x with lambda = 0: the FGSM step is per example, nothing couples examples of a batch
    "cat-embeddings": ("cat", {"adv_target": "embeddings", "adv_lambda": 0.0, "adv_epsilon": 1e-2}),
    # the paper's CAT: V's row gradient and the NT-Xent negatives span the combined batch (gathered)
    "cat": ("cat", _CAT),
    "cat-l2": ("cat", {"adv_epsilon": 1e-1, "adv_norm": "l2", "adv_lambda": 0.5, "adv_proj_dim": 16}),
    # adv_memory=sequential: two backwards per step, the first under no_sync (one all-reduce per step)
    "tat-sequential": ("tat", {**_TAT, "adv_memory": "sequential"}),
    "cat-sequential": ("cat", {**_CAT, "adv_memory": "sequential"}),
}
STEPS = 3
LR = 0.5


def build(case: str):
    name, overrides = CASES[case]
    method = get_method(name, **overrides)
    model = method.setup(tiny_model(dropout=0.0, seed=0))
    return method, model


def train(method, model: torch.nn.Module, batches: list[dict], no_sync=contextlib.nullcontext) -> torch.nn.Module:
    """``STEPS`` SGD steps; with several ``batches`` their gradients are averaged (the sharded reference)."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        for b in batches:
            method.step(model, dict(b), Backward(lambda loss: (loss / len(batches)).backward(), no_sync=no_sync))
        opt.step()
    return model


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    full = combined_batch()
    per = full["labels"].shape[0] // world
    batch = {k: v[rank * per : (rank + 1) * per] for k, v in full.items()}
    for case in CASES:
        torch.manual_seed(0)
        method, model = build(case)
        calls = [0]
        ddp = DDP(model)
        ddp.register_comm_hook(calls, counting_hook)
        train(method, ddp, [batch], no_sync=ddp.no_sync)
        extra = {}
        if case == "tat":  # the epoch end sums the processes' error tallies (a collective: every rank calls it)
            method.on_epoch_end(1)
            extra["tally_table"] = method.tally.table.clone()
        if rank == 0:
            params = {k: v.detach().clone() for k, v in ddp.module.named_parameters()}
            out = {"params": params, "allreduce_calls": calls[0], **extra}
            torch.save(out, os.path.join(out_dir, f"{case}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
