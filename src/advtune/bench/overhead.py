"""Training-step overhead of each method relative to ``standard``: median step time and peak memory.

Every method trains the same model on the same fixed random batch (``batch_size`` x ``seq_len``,
no padding) with AdamW; after ``warmup`` steps, ``steps`` steps are timed (forward + backward passes
of ``method.step`` + ``optimizer.step``, device synchronised). Rows are relative to ``standard``,
which is always measured first in the same run.

**Pass count** ("pass-count limit"): the work of a step in units of standard's forward + backward,
with a forward counted as 1/3 and a backward as 2/3: forwards are counted by a forward hook on the
(unwrapped) model, backwards by a hook on each forward's output logits that fires whenever a backward
(``loss.backward()`` or ``torch.autograd.grad``) goes through them. So a forward without autograd
counts 1/3, one that is never backpropagated 1/3, and a second backward through the same graph
(ROSE's KL gradient to the weights before its CE backward) counts its 2/3 again. YOPO's partial f0
passes do not complete a full forward and are not counted. ``time_ratio`` should stay close to ``pass_ratio``
(target: within 1.15x).

**Single-backward methods** (``adv_memory``, :mod:`advtune.methods.paired`): ``--adv-memory joint,sequential``
(``adv_memory=`` here, ``--set adv_memory=...`` in ``advtune bench --suite overhead``) measures each of them in
every given mode, one row ``name[mode]`` each, side by side in the same run.

**Time**: median wall time per step (``step_s``, ``time_ratio``) and, beside it, the ratio of median
process CPU time (``cpu_ratio``, all threads): on a shared machine wall time follows the other
jobs' load, CPU time much less so; compare the two before trusting either.

**Memory** = peak minus the memory in use right before the first step, i.e. gradients, optimizer
state, activations and temporaries, *not* the weights (a stricter ratio than total memory):

* CUDA: ``torch.cuda.max_memory_allocated`` (reset before the first step) minus ``memory_allocated``.
* CPU: there is no allocator peak counter for CPU tensors (``tracemalloc`` does not see them), so
  each method runs in a fresh spawned process (``isolate=True``, the CPU default) and the figure is
  that process's peak resident set size (``ru_maxrss``) minus its RSS before the first step. CPU
  tensors live in glibc's malloc, whose *dynamic* mmap threshold rises after the first large free:
  later tensors of up to 32 MiB then come from the heap, which is not returned to the OS, so the
  peak RSS of a multi-pass method counts freed-and-cached activations of earlier passes (FreeLB-3
  read 1.34-1.36x standard that way, 1.07x with the fix below on the same machine). The spawned
  processes therefore run with a fixed ``MALLOC_MMAP_THRESHOLD_`` (:data:`CPU_MALLOC_ENV`, 128 KiB):
  every tensor above it is mmapped and unmapped when freed, and the peak RSS follows the live tensor
  memory. ``exact_cpu_memory=False`` (``--allocator-cache``) measures with glibc's defaults instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

TIME_TARGET = 1.15
"""A method's time ratio should be at most this multiple of its pass-count ratio."""
MEMORY_TARGET = 1.25
"""FreeLB-K's peak memory should be at most this multiple of standard's (the embedding-family issue)."""
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""``--dtype``: the autocast precision of every measured step (fp32 = no autocast)."""
CPU_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
"""glibc settings of the spawned CPU measurements: peak RSS = peak live memory, not allocator cache."""


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2**20
        except ImportError:
            return None


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _batch(model: Any, batch_size: int, seq_len: int, device: Any, seed: int) -> dict[str, Any]:
    import torch

    from ..wrappers import unwrap

    config = unwrap(model).config
    vocab = int(config.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch_size, seq_len), generator=gen)
    labels = torch.randint(0, max(int(getattr(config, "num_labels", 2)), 2), (batch_size,), generator=gen)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
    }


def _measure_one(
    name: str, model_name: str, batch_size: int, seq_len: int, warmup: int, steps: int, device: str,
    overrides: dict[str, Any], seed: int, threads: int | None = None, peft: str | None = None, dtype: str = "fp32",
) -> dict[str, Any]:  # fmt: skip
    """Train ``warmup + steps`` steps of one method; return its raw timings, passes and memory."""
    import torch

    from .. import adapters
    from ..methods import get_method
    from ..modeling import load_model
    from ..wrappers import unwrap

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    method = get_method(name, **overrides)
    base = adapters.wrap(load_model(model_name, num_labels=2), adapters.AdapterArguments(peft=peft))
    model = method.setup(base).to(dev).train()
    batch = _batch(model, batch_size, seq_len, dev, seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == "fp16")  # as the Trainer does under --fp16
    count = [0.0]
    hook = unwrap(model).register_forward_hook(lambda m, a, o: _count_pass(count, o))
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev) / 2**20 if cuda else _rss_mb()
    times, cpu_times, passes = [], [], []
    for i in range(warmup + steps):
        opt.zero_grad(set_to_none=True)
        count[0] = 0.0
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast(dev.type, dtype=getattr(torch, DTYPES[dtype]), enabled=dtype != "fp32"):
            method.step(model, dict(batch), lambda loss: scaler.scale(loss).backward())
        scaler.step(opt)
        scaler.update()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            passes.append(count[0])
    hook.remove()
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else _peak_rss_mb()
    mem = peak - base if peak is not None and base is not None else None
    trainable = adapters.trainable_parameters(model)
    return {
        "method": name, "times": times, "cpu_times": cpu_times, "passes": statistics.median(passes), "mem_mb": mem,
        "trainable": trainable,
    }  # fmt: skip


def _count_pass(count: list[float], output: Any) -> None:
    """One forward: 1/3 of a pass now, 2/3 more each time a backward goes through its logits."""
    import torch

    count[0] += 1 / 3
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if isinstance(logits, torch.Tensor) and logits.requires_grad:
        logits.register_hook(lambda g: count.__setitem__(0, count[0] + 2 / 3))


def measure_overhead(
    methods: list[str] | tuple[str, ...],
    model: str = "minilm",
    batch_size: int = 32,
    seq_len: int = 128,
    warmup: int = 2,
    steps: int = 5,
    device: str | None = None,
    isolate: bool | None = None,
    method_overrides: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    threads: int | None = None,
    exact_cpu_memory: bool = True,
    peft: str | None = None,
    adv_memory: str | list[str] | tuple[str, ...] | None = None,
    dtype: str = "fp32",
) -> list[dict[str, Any]]:
    """Median step time and peak memory of each method relative to ``standard`` (measured first).

    Args:
        methods: registered method names (``standard`` is added when missing).
        model: model alias, folder or hub id (default: the packaged MiniLM).
        batch_size, seq_len: the fixed batch (paper setting: 32 x 128).
        warmup, steps: untimed and timed training steps per method.
        device: ``cuda`` when available, else ``cpu``.
        isolate: one fresh process per method (default: on CPU, where it is needed for the memory figure).
        method_overrides: per-method hyper-parameters, e.g. ``{"freelb": {"adv_steps": 2}}``.
        threads: CPU threads per measurement (``1`` makes ``cpu_ratio`` robust to other jobs' load:
            no OpenMP spin-waiting is counted as work).
        exact_cpu_memory: run the isolated CPU processes with :data:`CPU_MALLOC_ENV` (see the module
            docstring); ``False`` keeps glibc's caching and reports an upper bound.
        peft: train a ``lora`` / ``ia3`` / ``prompt`` / ``prefix`` adapter (default adapter options) in
            every row, ``standard`` included, so the ratios compare methods on the same adapter.
        adv_memory: ``adv_memory`` modes (a list or ``"joint,sequential"``) to measure for every
            single-backward method, one row ``name[mode]`` each; ``None``: each method's default only.
        dtype: ``fp32``, or autocast in ``bf16`` / ``fp16`` (fp16 with a GradScaler; CUDA only).

    Returns:
        One dict per method: ``method``, ``passes`` (full passes per step), ``pass_ratio``,
        ``step_s`` (median wall time), ``time_ratio``, ``time_per_pass`` (= time_ratio / pass_ratio;
        target <= 1.15), ``cpu_ratio`` (median process CPU time ratio), ``mem_mb``, ``mem_ratio``,
        ``trainable`` (parameters the optimizer updates).
    """
    import torch
    from tqdm.auto import tqdm

    names = _method_names(methods)
    if steps < 1 or warmup < 0 or batch_size < 1 or seq_len < 2:
        from ..errors import UsageError

        raise UsageError("need steps >= 1, warmup >= 0, batch_size >= 1 and seq_len >= 2")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_dtype(dtype, device)
    isolate = (device == "cpu") if isolate is None else isolate
    env = CPU_MALLOC_ENV if exact_cpu_memory and device == "cpu" else {}
    raw = []
    for label, name, extra in tqdm(_jobs(names, method_overrides or {}, adv_memory), desc="overhead", unit="row"):
        args = (name, model, batch_size, seq_len, warmup, steps, device, extra, seed, threads, peft, dtype)
        raw.append({**_measure(isolate, env, *args), "method": label})
    return [_relative_row(r, raw[0]) for r in raw]


def _jobs(
    names: list[str], overrides: dict[str, dict[str, Any]], adv_memory: str | list[str] | tuple[str, ...] | None
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(row label, method, hyper-parameters)`` per row: a single-backward method gets one row per
    requested ``adv_memory`` mode, labelled ``name[mode]``, measured one after the other."""
    from ..errors import UsageError
    from ..methods import METHODS
    from ..methods.base import MEMORY_MODES, AdvMemoryConfig

    if adv_memory is None:
        return [(n, n, overrides.get(n, {})) for n in names]
    modes = [m.strip() for m in adv_memory.split(",")] if isinstance(adv_memory, str) else list(adv_memory)
    bad = [m for m in modes if m not in MEMORY_MODES]
    if bad or not modes:
        raise UsageError(f"invalid adv_memory {','.join(bad)!r}: choose from {', '.join(MEMORY_MODES)}")
    jobs = []
    for n in names:
        extra = overrides.get(n, {})
        if issubclass(METHODS[n].config_class, AdvMemoryConfig):
            jobs += [(f"{n}[{m}]", n, {**extra, "adv_memory": m}) for m in modes]
        else:
            jobs.append((n, n, extra))
    return jobs


def _check_dtype(dtype: str, device: str) -> None:
    """fp16 autocast needs a GPU's GradScaler to train; bf16 autocast exists on CPU too (slow, but it runs)."""
    from ..errors import UsageError

    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "fp16" and not device.startswith("cuda"):
        raise UsageError("--dtype fp16 needs a CUDA device (on CPU use bf16 or fp32)")
    if dtype == "bf16" and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_bf16_supported():
            raise UsageError("--dtype bf16: this GPU has no bfloat16; use fp16")


def _method_names(methods: list[str] | tuple[str, ...]) -> list[str]:
    """``standard`` first (the reference of every ratio), then the others; all must be registered."""
    from ..errors import UsageError
    from ..methods import METHODS

    names = list(dict.fromkeys(["standard", *methods]))
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(unknown)} (choose from: {', '.join(sorted(METHODS))})")
    return names


def _measure(isolate: bool, env: dict[str, str], *args: Any) -> dict[str, Any]:
    """One method's raw measurement, in a fresh spawned process when ``isolate`` (its own peak memory)."""
    if not isolate:
        return _measure_one(*args)
    with _environ(env), ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measure_one, *args).result()


def _relative_row(r: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """A method's row of the overhead table: its medians and their ratios to the reference (``standard``)."""
    ref_time, ref_cpu = statistics.median(ref["times"]), statistics.median(ref["cpu_times"])
    t = statistics.median(r["times"])
    pass_ratio = r["passes"] / ref["passes"] if ref["passes"] else None
    time_ratio = t / ref_time
    cpu_ratio = statistics.median(r["cpu_times"]) / ref_cpu if ref_cpu > 0 else None
    mem_ratio = r["mem_mb"] / ref["mem_mb"] if r["mem_mb"] is not None and ref["mem_mb"] else None
    return {
        "method": r["method"],
        "passes": round(r["passes"], 2),
        "pass_ratio": round(pass_ratio, 2) if pass_ratio else None,
        "step_s": round(t, 4),
        "time_ratio": round(time_ratio, 2),
        "time_per_pass": round(time_ratio / pass_ratio, 2) if pass_ratio else None,
        "cpu_ratio": round(cpu_ratio, 2) if cpu_ratio is not None else None,
        "mem_mb": round(r["mem_mb"], 1) if r["mem_mb"] is not None else None,
        "mem_ratio": round(mem_ratio, 2) if mem_ratio is not None else None,
        "trainable": r.get("trainable"),
    }


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the processes spawned inside the block (restored after)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`measure_overhead`'s rows."""
    keys = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join("–" if r[k] is None else str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m advtune.bench.overhead --methods freelb,pgd --steps 5``: print the overhead table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    p.add_argument("--model", default="minilm")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads per measurement (default: torch's)")
    p.add_argument("--no-isolate", action="store_true", help="measure every method in this process")
    p.add_argument(
        "--allocator-cache", action="store_true", help="CPU: keep glibc's malloc caching (peak RSS = upper bound)"
    )
    p.add_argument("--peft", default=None, help="train an adapter in every row: lora, ia3, prompt or prefix")
    p.add_argument(
        "--adv-memory",
        default=None,
        help="single-backward methods: measure these adv_memory modes (joint, sequential or joint,sequential), "
        "one row name[mode] each (default: each method's default mode)",
    )
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="autocast precision (fp16: CUDA only)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    from ..methods import METHODS

    methods = args.methods.split(",") if args.methods else list(METHODS)
    rows = measure_overhead(
        methods, model=args.model, batch_size=args.batch_size, seq_len=args.seq_len, warmup=args.warmup,
        steps=args.steps, device=args.device, isolate=False if args.no_isolate else None, threads=args.threads,
        exact_cpu_memory=not args.allocator_cache, peft=args.peft, adv_memory=args.adv_memory, dtype=args.dtype,
    )  # fmt: skip
    print(format_table(rows))
    print(
        f"targets: time_per_pass <= {TIME_TARGET}, freelb mem_ratio <= {MEMORY_TARGET}; "
        "mem = peak minus memory before the first step (no weights)"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    from ..errors import UsageError

    try:
        sys.exit(main())
    except UsageError as err:  # bad input: one line, exit code 2, no traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
