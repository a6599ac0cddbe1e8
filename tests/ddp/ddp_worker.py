"""Worker for test_ddp.py: ``torchrun --standalone --nproc_per_node 2 ddp_worker.py OUT_DIR``.

Each rank trains the tiny model with every embedding-space method for a few steps on its half of
a fixed batch (gloo, CPU, dropout off, zero initial δ so every rank's δ is the one the combined
batch would get), counting the gradient all-reduces with a DDP communication hook. Rank 0 saves
the final parameters and the counts to ``OUT_DIR/<method>.pt``. A second run with ``no_sync``
disabled shows the counter would see the extra all-reduces.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP

from advtune.methods import Backward, get_method
from advtune.testing import tiny_model, tiny_tokenizer

METHODS = {  # zero initial δ: a random start could not match the single-process draws
    "standard": {},
    "freelb": {"adv_steps": 3, "adv_init": "zero", "adv_step_size": 0.1, "adv_epsilon": 0.3},
    "fgm": {},
    "pgd": {"adv_steps": 2, "adv_init": "zero", "adv_step_size": 0.1, "adv_epsilon": 0.3},
    "freeat": {"adv_replays": 2, "adv_step_size": 0.1, "adv_epsilon": 0.3},
    "yopo": {"adv_steps": 3, "adv_inner_steps": 2, "adv_init": "zero", "adv_step_size": 0.1, "adv_epsilon": 0.3},
}
STEPS = 3
LR = 0.5
TEXTS = [
    "the movie was very good", "an awful boring plot", "great acting and a fun story", "i hate this dull film",
    "the best film", "bad", "not good but not bad", "wonderful actors love it",
    "the worst story", "it was fine", "terrible terrible acting", "what a nice movie",
    "sad and boring", "happy fun great", "the plot is ok", "poor film and dull actors",
]  # fmt: skip
LABELS = [1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0]


def combined_batch() -> dict[str, torch.Tensor]:
    """The full batch of 16 (each rank takes one contiguous half), padded to one length."""
    enc = tiny_tokenizer()(TEXTS, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    return {**dict(enc), "labels": torch.tensor(LABELS)}


def train(name: str, model: torch.nn.Module, batch: dict, no_sync=None) -> torch.nn.Module:
    """``STEPS`` optimizer steps of ``name`` (FreeAT: every step is one replay of the batch)."""
    method = get_method(name, **METHODS[name])
    backward = Backward(lambda loss: loss.backward(), no_sync=no_sync or contextlib.nullcontext)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        method.step(model, dict(batch), backward)
        opt.step()
    return model


def counting_hook(calls: list[int], bucket):
    """The default all-reduce, counted (one call per gradient bucket per synchronised backward)."""
    calls[0] += 1
    return allreduce_hook(None, bucket)


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    full = combined_batch()
    per = len(LABELS) // world
    batch = {k: v[rank * per : (rank + 1) * per] for k, v in full.items()}
    for name in METHODS:
        for sync_inner in (False, True):
            calls = [0]
            ddp = DDP(tiny_model(dropout=0.0, seed=0))
            ddp.register_comm_hook(calls, counting_hook)
            train(name, ddp, batch, no_sync=contextlib.nullcontext if sync_inner else ddp.no_sync)
            if rank == 0:
                params = {k: v.detach().clone() for k, v in ddp.module.named_parameters()}
                suffix = "-sync_inner" if sync_inner else ""
                torch.save(
                    {"params": params, "allreduce_calls": calls[0], "steps": STEPS},
                    os.path.join(out_dir, f"{name}{suffix}.pt"),
                )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
