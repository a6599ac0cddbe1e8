"""Training-loss surface around a run's final weights (TAT, Pereira et al. NAACL 2021, arXiv 2104.05847, Figure 3).

TAT's Figure 3 compares the training-loss surfaces of standard training and TAT with the method of
Li et al. (2018), "Visualizing the loss landscape of neural nets": two random directions d₁, d₂ in
weight space, each *filter-normalised* (every filter, i.e. every slice along a weight tensor's first
dimension, is rescaled to the norm of the same filter of θ, which removes the scale invariance that
makes unnormalised plots incomparable), and the loss L(θ + α d₁ + β d₂) on a grid of (α, β).

Choices: one-dimensional parameters (biases, LayerNorm) get a zero direction, as Li et al. do for
biases and batch-norm parameters; the loss is the mean over ``batches`` seeded random training
batches with the model in eval mode (no dropout), so every grid point sees the same data and the
same function; the grid spans [-span, span]² (span 1, as in Li et al.). On a CPU keep the grid small
(7 x 7 = 49 evaluations of ``batches`` forward passes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .devices import batch_to


def filter_normalized_direction(model: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction with every filter scaled to the norm of the model's filter (Li et al. 2018)."""
    direction = {}
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            direction[name] = torch.zeros_like(p, dtype=torch.float32)
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device)
        w = p.detach().float()
        d_norm = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        w_norm = w.reshape(w.shape[0], -1).norm(dim=1)
        direction[name] = d * (w_norm / d_norm).reshape((-1,) + (1,) * (d.dim() - 1))
    return direction


@torch.no_grad()
def loss_surface(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    grid: int = 7,
    span: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean loss over ``batches`` at θ + α d₁ + β d₂ for a ``grid`` x ``grid`` lattice of (α, β).

    The weights are restored afterwards. Returns ``{"alphas", "betas", "loss" (grid x grid), "center_loss"}``.
    """
    from tqdm.auto import tqdm

    from .methods.base import is_regression, task_loss

    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")
    batches = [batch_to(b, model) for b in batches]
    model.eval()
    regression = is_regression(model)
    gen = torch.Generator().manual_seed(seed)
    d1 = filter_normalized_direction(model, gen)
    d2 = filter_normalized_direction(model, gen)
    params = dict(model.named_parameters())
    base = {n: p.detach().clone() for n, p in params.items()}
    coords = torch.linspace(-span, span, grid).tolist()

    def mean_loss() -> float:
        total, count = 0.0, 0
        for b in batches:
            logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits
            total += float(task_loss(logits, b["labels"], regression, reduction="sum"))
            count += len(b["labels"])
        return total / max(count, 1)

    loss = [[0.0] * grid for _ in range(grid)]
    try:
        with tqdm(total=grid * grid, desc="loss surface", leave=False) as bar:
            for i, a in enumerate(coords):
                for j, b in enumerate(coords):
                    for n, p in params.items():
                        p.copy_((base[n].float() + a * d1[n] + b * d2[n]).to(p.dtype))
                    loss[i][j] = mean_loss()
                    bar.update(1)
        for n, p in params.items():
            p.copy_(base[n])
        center = mean_loss()
    finally:
        for n, p in params.items():
            p.copy_(base[n])
    return {"alphas": coords, "betas": coords, "loss": loss, "center_loss": center}


def surface_for_run(
    run_dir: str | Path,
    task: str | None = None,
    grid: int = 7,
    batches: int = 2,
    batch_size: int = 32,
    span: float = 1.0,
    seed: int = 0,
    data_dir: str | None = None,
) -> tuple[Path, Path]:
    """Compute a run's training-loss surface; writes ``surface/<task>.train.{json,png}`` in the run folder."""
    from . import runs
    from .errors import UsageError
    from .pipeline import load_run
    from .plots import plot_surfaces
    from .tasks import get_task, resolve_data_dir

    if batches < 1 or batch_size < 1 or grid < 2 or span <= 0:
        raise UsageError(
            f"need batches >= 1, batch size >= 1, grid >= 2, span > 0 (got {batches}, {batch_size}, {grid}, {span})"
        )
    loaded = load_run(run_dir)
    target = get_task(task) if task else loaded.task
    ds = target.load(target.train_split, data_dir=resolve_data_dir(data_dir))
    ds = ds.shuffle(seed=seed).select(range(min(len(ds), batches * batch_size)))
    loader = target.eval_loader(ds, loaded.tokenizer, loaded.max_length, batch_size)
    result = loss_surface(loaded.model, loader, grid=grid, span=span, seed=seed)
    result.update(
        {
            "task": target.name,
            "split": target.train_split,
            "examples": len(ds),
            "grid": grid,
            "batch_size": batch_size,
            "seed": seed,
            "method": loaded.config["method"]["name"],
        }
    )
    out = loaded.path / "surface"
    json_path = out / f"{target.name}.{target.train_split}.json"
    runs.write_json_atomic(json_path, result)
    png = plot_surfaces(
        [(result["method"], result)],
        out / f"{target.name}.{target.train_split}.png",
        title=f"Training loss surface, {target.name}",
    )
    return json_path, png
