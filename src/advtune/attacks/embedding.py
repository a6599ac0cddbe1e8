"""Embedding-space robustness: the maximum loss increase ΔL_max of FreeLB (arXiv 1909.11764), eq. 5.

    ΔL_max(X, ε) = max_{‖δ‖_F ≤ ε} L(f_θ(X + δ), y) − L(f_θ(X), y)

X are an example's word embeddings (real tokens only) and ε = c·‖X‖_F is set per example (the paper
uses c = 0.01 and step size α = 5·10⁻³). The inner max is found with the PGD step of eq. 2,
``δ ← Π_ε(δ + α g/‖g‖_F)``, the shared :func:`advtune.perturbation.ascent_step`; δ enters through
the shared embedding hook (:func:`advtune.embeddings.forward_with_delta`), so this is the training
methods' inner loop without the parameter update.

Choices, where the paper leaves room:

* The paper runs 2000 PGD steps and reports that 100 random starts converge to the same value;
  we start from δ = 0 (deterministic, no extra runs) and run ``steps`` steps (100 by default: a CPU
  budget; state the number with the result).
* The value reported is the largest loss seen along the PGD path (δ₀ = 0 included), so
  ΔL_max ≥ 0 holds by construction and a step that overshoots does not lower the estimate.
* Examples whose ε is 0 (``c = 0``) keep δ = 0: ΔL_max(X, 0) = 0 exactly. (The shared ``project``
  reads ε = 0 as "unbounded", the convention of FreeLB's training settings, not of this evaluation.)
* The model is in eval mode (no dropout): the quantity is a property of the trained function.
* Table 5 reports the median over dev examples that *every* compared model classifies correctly
  (:func:`evaluate_robustness` with several runs); for a regression task every example is kept.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..devices import batch_to
from ..embeddings import forward_with_delta, word_embeddings
from ..methods.base import is_regression, task_loss
from ..perturbation import ascent_step, masked_norm


def max_loss_increase(
    model: torch.nn.Module,
    inputs: Mapping[str, torch.Tensor],
    c: float = 0.01,
    steps: int = 100,
    step_size: float = 5e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔL_max and the clean loss of each example of a batch (two ``(B,)`` fp32 tensors).

    Args:
        model (`torch.nn.Module`): a sequence classifier (put in eval mode here).
        inputs (`Mapping[str, torch.Tensor]`): a collated batch with ``labels``.
        c (`float`, *optional*, defaults to `0.01`): ε = c · ‖X‖_F per example (FreeLB §4.3).
        steps (`int`, *optional*, defaults to `100`): PGD steps (the paper: 2000).
        step_size (`float`, *optional*, defaults to `5e-3`): α of eq. 2.
    """
    if c < 0 or steps < 0 or step_size < 0:
        raise ValueError(f"c, steps and step_size must be >= 0, got c={c}, steps={steps}, step_size={step_size}")
    model.eval()
    inputs = batch_to(inputs, model)
    labels = inputs["labels"]
    mask = inputs["attention_mask"]
    regression = is_regression(model)
    with torch.no_grad():
        x = word_embeddings(model, inputs["input_ids"])
        eps = c * masked_norm(x, mask)  # (B,), fp32
        clean = task_loss(forward_with_delta(model, inputs, None).logits, labels, regression, reduction="none").float()
    keep = (eps > 0).float().reshape(-1, 1, 1)  # ε = 0 → δ stays 0 (ascent_step would read 0 as unbounded)
    delta = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    best = clean.clone()
    for t in range(steps + 1):
        delta.requires_grad_(t < steps)
        with torch.enable_grad() if t < steps else torch.no_grad():
            loss = task_loss(forward_with_delta(model, inputs, delta).logits, labels, regression, reduction="none")
            best = torch.maximum(best, loss.detach().float())
            if t == steps:
                break
            (grad,) = torch.autograd.grad(loss.sum(), delta)  # examples are independent in eval mode
        delta = ascent_step(delta, grad, mask, step_size, eps.clamp_min(1e-30), "l2") * keep
    return (best - clean).clamp_min(0.0), clean


@torch.no_grad()
def _correct(model, loader, regression: bool) -> torch.Tensor:
    model.eval()
    out = []
    for batch in loader:
        logits = model(**{k: v for k, v in batch_to(batch, model).items() if k != "labels"}).logits.cpu()
        out.append(torch.ones(len(logits), dtype=torch.bool) if regression else logits.argmax(-1) == batch["labels"])
    return torch.cat(out)


def evaluate_robustness(
    run_dirs: Sequence[str | Path],
    task: str | None = None,
    split: str | None = None,
    n: int = 200,
    c: float = 0.01,
    steps: int = 100,
    step_size: float = 5e-3,
    batch_size: int = 32,
    data_dir: str | None = None,
    write: bool = True,
    sample_seed: int | None = None,
) -> list[dict[str, Any]]:
    """ΔL_max of each run on the first ``n`` examples of a split (with ``sample_seed``: a seeded random sample
    of ``n``, for splits sorted by label) that every run classifies correctly.

    Writes ``<run>/robustness/<task>.<split>.json`` per run (summary + per-example values) unless
    ``write=False``; returns the summaries in the order of ``run_dirs``.
    """
    from ..errors import UsageError
    from ..tasks import resolve_data_dir

    if not run_dirs:
        raise UsageError("give at least one run")
    if c < 0 or steps < 0 or step_size <= 0 or n <= 0:
        raise UsageError(f"need c >= 0, steps >= 0, step size > 0 and n > 0 (got {c}, {steps}, {step_size}, {n})")
    loaded, target = _load_runs_of_one_task(run_dirs, task)
    split = split or target.eval_splits[0]
    ds = target.load(split, data_dir=resolve_data_dir(data_dir))
    ds = (ds.shuffle(seed=sample_seed) if sample_seed is not None else ds).select(range(min(n, len(ds))))
    keep = _correct_in_every_run(loaded, ds, batch_size, target.is_regression)
    if not keep:
        raise UsageError(
            f"no example of the {len(ds)} chosen of {target.name}.{split} is classified correctly by every run"
        )
    sub = ds.select(keep)
    results = []
    for lr in loaded:
        deltas, cleans = _run_loss_increases(lr, sub, batch_size, c=c, steps=steps, step_size=step_size)
        summary = {
            "task": target.name,
            "split": split,
            "run": str(lr.path),
            "c": c,
            "steps": steps,
            "step_size": step_size,
            "n_requested": len(ds),
            "sample_seed": sample_seed,
            "n_examples": len(keep),
            "compared_runs": [str(p) for p in run_dirs],
            "median_delta_loss": statistics.median(deltas),
            "std_delta_loss": statistics.pstdev(deltas),
            "median_clean_loss": statistics.median(cleans),
        }
        if write:
            _write_result(lr.path / "robustness" / f"{target.name}.{split}.json", summary, sub["idx"], deltas, cleans)
        results.append(summary)
    return results


def _load_runs_of_one_task(run_dirs: Sequence[str | Path], task: str | None):
    """The loaded runs and their common task (ΔL_max is a run's loss on the task it was trained for)."""
    from ..errors import UsageError
    from ..pipeline import load_run
    from ..tasks import get_task

    loaded = [load_run(r) for r in run_dirs]
    target = get_task(task) if task else loaded[0].task
    for lr in loaded:
        if lr.task.name != target.name:
            raise UsageError(
                f"run {lr.path} was trained on {lr.task.name}, not {target.name}; ΔL_max needs its own task"
            )
    return loaded, target


def _correct_in_every_run(loaded, ds, batch_size: int, regression: bool) -> list[int]:
    """Positions in ``ds`` of the examples every run classifies correctly (Table 5's common subset)."""
    common = torch.ones(len(ds), dtype=torch.bool)
    for lr in loaded:
        common &= _correct(lr.model, lr.task.eval_loader(ds, lr.tokenizer, lr.max_length, batch_size), regression)
    return torch.nonzero(common).flatten().tolist()


def _run_loss_increases(lr, dataset, batch_size: int, **pgd: Any) -> tuple[list[float], list[float]]:
    """ΔL_max and the clean loss of each example of ``dataset`` for one loaded run."""
    from tqdm.auto import tqdm

    deltas, cleans = [], []
    loader = lr.task.eval_loader(dataset, lr.tokenizer, lr.max_length, batch_size)
    for batch in tqdm(loader, desc=f"ΔL_max {lr.config['method']['name']}", leave=False):
        d, cl = max_loss_increase(lr.model, batch, **pgd)
        deltas += d.tolist()
        cleans += cl.tolist()
    return deltas, cleans


def _write_result(path: Path, summary: dict[str, Any], idx, deltas: list[float], cleans: list[float]) -> None:
    """The summary and the per-example values, in ``<run>/robustness/<task>.<split>.json``."""
    from .. import runs

    per_example = [{"idx": int(i), "delta_loss": d, "clean_loss": cl} for i, d, cl in zip(idx, deltas, cleans)]
    runs.write_json_atomic(path, {**summary, "examples": per_example})
