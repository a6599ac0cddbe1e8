"""Collectives for methods whose loss couples the examples of a batch (CAT), so that a step on W
processes equals one step on the combined batch.

Every function is the identity when ``torch.distributed`` is not initialised or has one process, so
methods call them unconditionally. Under DDP each process computes its loss on its own shard and the
parameter gradients are averaged; a term that depends on the *whole* batch therefore needs the other
shards' values first:

* :func:`all_gather_with_grad`: the representations of every shard, differentiable. When every
  process computes the same loss from the gathered tensor, the backward of the gather sums the W
  identical gradients of a process's own slice, and DDP's average divides by W: the result is the
  gradient of the combined-batch loss (SimCLR's cross-device negatives).
* :func:`sum_rows`: the union of sparse rows (token id, gradient) over processes, summed per id: the
  batch gradient of the embedding matrix without a dense vocabulary-sized all-reduce.
* :func:`same_choice`: a random decision made once, on rank 0, and shared.
* :func:`all_reduce_sum`: a tensor summed over processes (TAT's error tally at the epoch end).

Tensors travel on the backend's device (CUDA for NCCL) and come back on the caller's device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes of the default group (1 without ``torch.distributed``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def shutdown(*, wait: bool = True) -> None:
    """End the default process group, if this process opened one: with ``wait`` every rank first meets
    at a barrier, then the group is destroyed. Called once, when a launched command exits: a process
    that exits with its gloo group still open can abort in the C++ teardown ("terminate called without
    an active exception", exit -6) while the other rank is still leaving, which fails the whole launch.
    A command that failed passes ``wait=False``: the other ranks may never reach the barrier."""
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def _comm_device(t: torch.Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """``cat`` over processes (rank order) of ``t`` along dim 0, with gradients flowing back to each
    process's slice; shards may differ in their first dimension."""
    if world_size() == 1:
        return t
    return _GatherRows.apply(t)


class _GatherRows(torch.autograd.Function):
    """Forward: all-gather (padded to the largest shard). Backward: the gradient of the whole gathered
    tensor is summed over processes (each computed its loss from it) and each keeps its own slice."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        sizes = _all_sizes(t.shape[0], t.device)
        dev, n = _comm_device(t), max(sizes)
        parts = [torch.empty((n, *t.shape[1:]), dtype=t.dtype, device=dev) for _ in sizes]
        dist.all_gather(parts, _pad_rows(t, n).contiguous().to(dev))
        rank = dist.get_rank()
        ctx.span = (sum(sizes[:rank]), sizes[rank])
        return torch.cat([p[:k] for p, k in zip(parts, sizes)]).to(t.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        start, n = ctx.span
        total = grad.contiguous().to(_comm_device(grad))
        dist.all_reduce(total)
        return total[start : start + n].to(grad.device)


def sum_rows(ids: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse rows summed over processes: ``(sorted unique ids, summed rows)`` of the union.

    Args:
        ids (`torch.Tensor`): ``(U,)`` token ids of this process (unique).
        rows (`torch.Tensor`): ``(U, H)`` their rows (e.g. gradients of the embedding matrix).
    """
    if world_size() == 1:
        return ids, rows
    sizes = _all_sizes(ids.numel(), ids.device)
    dev, n = _comm_device(ids), max(sizes)
    id_parts = [torch.empty(n, dtype=ids.dtype, device=dev) for _ in sizes]
    row_parts = [torch.empty(n, rows.shape[1], dtype=rows.dtype, device=dev) for _ in sizes]
    dist.all_gather(id_parts, _pad_rows(ids, n).to(dev))
    dist.all_gather(row_parts, _pad_rows(rows, n).to(dev))
    all_ids = torch.cat([p[:k] for p, k in zip(id_parts, sizes)]).to(ids.device)
    all_rows = torch.cat([p[:k] for p, k in zip(row_parts, sizes)]).to(rows.device)
    union, inverse = torch.unique(all_ids, sorted=True, return_inverse=True)
    summed = all_rows.new_zeros(union.numel(), rows.shape[1]).index_add_(0, inverse, all_rows)
    return union, summed


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over processes, as a new tensor on ``t``'s device (``t`` itself with one process)."""
    if world_size() == 1:
        return t
    total = t.detach().clone().to(_comm_device(t))
    dist.all_reduce(total)
    return total.to(t.device)


def same_choice(p: float = 0.5) -> bool:
    """``True`` with probability ``p``, drawn on rank 0 and the same on every process."""
    flag = torch.tensor([float(torch.rand(()) < p)])
    if world_size() > 1:
        flag = flag.to(_comm_device(flag))
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def _all_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], dtype=torch.long, device=device)
    dev = _comm_device(size)
    out = [torch.empty(1, dtype=torch.long, device=dev) for _ in range(world_size())]
    dist.all_gather(out, size.to(dev))
    return [int(s.item()) for s in out]


def _pad_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    if t.shape[0] == n:
        return t
    pad = t.new_zeros((n - t.shape[0], *t.shape[1:]))
    return torch.cat([t, pad])
