#!/usr/bin/env python
"""GPU check: everything advtune should show on a CUDA machine, in minutes, into one results folder.

Development happens on CPU-only machines, so the GPU paths (mixed precision, CUDA memory figures, real
step times) are exercised only when a GPU is lent. This script makes one such loan enough:

1. ``tests/gpu`` (every method under bf16 and fp16 autocast, the fp16 overflow test);
2. the overhead suite in bf16 for every registered method: median step time, ``torch.cuda.max_memory_allocated``
   (peak minus the memory before the first step) and their ratios to ``standard``; on a GPU the absolute
   step times mean something too;
3. ``standard`` and ``freelb`` trained one epoch on the full SST-2 train set with MiniLM (bf16), dev accuracy
   and wall time of each.

Everything lands in ``results/gpu-check/<gpu name>/`` (``summary.md``, ``summary.json``, the overhead
rows, the test log, both run folders); ``summary.json`` is rewritten after every step, so a check cut
short by its time limit keeps what it measured. Budget of the whole check: under 8 minutes on one GPU.

``--cpu-dry-run`` runs the same code end to end on CPU with every step shrunk (two overhead steps of a
small batch in CPU bf16 autocast, 64 SST-2 examples, fp32 training; ``tests/gpu`` skipped: no CUDA), so
CI proves the script works before a GPU ever sees it. Exit codes: 0 all passed, 1 a step failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SST2_METHODS = ("standard", "freelb")
SST2_TRAINING = {  # the CPU suites' MiniLM budget (advtune.bench.suites), full data, one epoch
    "num_train_epochs": 1, "per_device_train_batch_size": 32, "per_device_eval_batch_size": 256,
    "learning_rate": 1e-4, "warmup_steps": 0.1, "max_length": 64, "save_strategy": "no", "logging_steps": 200,
    "disable_tqdm": True, "seed": 1, "bf16": True,
}  # fmt: skip
SST2_DRY_RUN = {"max_train_samples": 64, "max_eval_samples": 64, "use_cpu": True, "bf16": False}
OVERHEAD = {"batch_size": 32, "seq_len": 128, "warmup": 3, "steps": 10}  # FreeLB's batch 32 x length 128
OVERHEAD_DRY_RUN = {"batch_size": 4, "seq_len": 16, "warmup": 1, "steps": 2}
ATTACK = {"n": 200}  # the first 200 SST-2 dev examples, as docs/attack.md's CPU side-by-side
ATTACK_DRY_RUN = {"n": 10}


@dataclass
class Plan:
    """What this call measures and where: the full check on a GPU, or its shrunk CPU dry run."""

    out: Path
    gpu: str
    device: str
    model: str
    dry_run: bool
    data_dir: str | None
    dtype: str = "bf16"
    overhead: dict[str, Any] = field(default_factory=dict)
    sst2: dict[str, Any] = field(default_factory=dict)
    attack: dict[str, Any] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n")[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="run every step shrunk, on CPU (CI)")
    p.add_argument("--out", default="results/gpu-check", help="parent of the per-GPU results folder")
    p.add_argument("--model", default="minilm", help="model alias or folder (default: the packaged MiniLM)")
    p.add_argument("--data-dir", help="folder holding sst2/ (default: $ADVTUNE_DATA_DIR)")
    p.add_argument("--skip-tests", action="store_true", help="do not run tests/gpu")
    return p


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan for this machine; no CUDA device without ``--cpu-dry-run`` is refused (UsageError)."""
    import torch

    from advtune.errors import UsageError

    if args.cpu_dry_run:
        gpu, device = "cpu-dry-run", "cpu"
    elif torch.cuda.is_available():
        gpu, device = torch.cuda.get_device_name(0), "cuda"
    elif shutil.which("nvidia-smi") and torch.version.cuda is None:
        raise UsageError(f"torch {torch.__version__} is a CPU build but nvidia-smi is here: make clean install")
    else:
        raise UsageError("no CUDA device is visible; --cpu-dry-run runs the check shrunk on CPU")
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", gpu).strip("-").lower()
    dry = args.cpu_dry_run
    return Plan(
        out=Path(args.out) / slug, gpu=gpu, device=device, model=args.model, dry_run=dry, data_dir=args.data_dir,
        overhead={**OVERHEAD, **(OVERHEAD_DRY_RUN if dry else {})},
        sst2={**SST2_TRAINING, **(SST2_DRY_RUN if dry else {})},
        attack={**ATTACK, **(ATTACK_DRY_RUN if dry else {})},
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ steps
def run_gpu_tests(plan: Plan) -> dict[str, Any]:
    """``pytest tests/gpu`` in a child process; counts from its JUnit XML, its output in ``gpu-tests.log``."""
    if plan.device != "cuda":
        return {"skipped": "no CUDA device (--cpu-dry-run)"}
    xml = plan.out / "gpu-tests.xml"
    cmd = [sys.executable, "-m", "pytest", str(REPO / "tests" / "gpu"), "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={xml}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    (plan.out / "gpu-tests.log").write_text(proc.stdout + proc.stderr)
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"returncode": proc.returncode, **counts, "passed": passed}


def run_overhead(plan: Plan) -> dict[str, Any]:
    """Every registered method's step time and peak memory against ``standard``, under ``plan.dtype`` autocast."""
    from advtune.bench.overhead import format_table, measure_overhead
    from advtune.methods import METHODS

    rows = measure_overhead(
        list(METHODS), model=plan.model, device=plan.device, dtype=plan.dtype, isolate=False, **plan.overhead
    )
    data = {"dtype": plan.dtype, "device": plan.device, "model": plan.model, **plan.overhead, "rows": rows}
    (plan.out / "overhead.json").write_text(json.dumps(data, indent=2))
    (plan.out / "overhead.md").write_text(format_table(rows) + "\n")
    return {"methods": len(rows), "rows": rows}


def run_sst2(plan: Plan) -> dict[str, Any]:
    """``standard`` and ``freelb`` one epoch on SST-2: dev accuracy, train and total wall time."""
    from advtune.pipeline import train

    found = {}
    for method in SST2_METHODS:
        run_dir = plan.out / "sst2" / method
        extra = {"data_dir": plan.data_dir} if plan.data_dir else {}
        start = time.perf_counter()
        train(task="sst2", method=method, output_dir=run_dir, model=plan.model, overwrite=True, **plan.sst2, **extra)
        wall = time.perf_counter() - start
        metrics = json.loads((run_dir / "metrics.json").read_text())["splits"]["validation"]
        stats = json.loads((run_dir / "train_stats.json").read_text())
        found[method] = {
            "dev_accuracy": metrics["accuracy"], "wall_s": round(wall, 1),
            "train_s": round(stats.get("train_runtime", 0.0), 1), "steps": stats.get("global_step"),
            "train_examples": stats.get("num_train_examples"), "step_ms": _ms(stats.get("step_time_median_s")),
        }  # fmt: skip
    return found


def run_attack(plan: Plan) -> dict[str, Any]:
    """The word-substitution attack on this check's ``standard`` SST-2 run, on the plan's device:
    advtune's default (searches side by side, length-sorted batches) and its earlier form, with the
    equivalent TextAttack attack beside them when ``textattack`` is importable
    (``scripts/attack_vs_textattack.py``, one round). On a GPU a model call costs about the same for 3
    rows as for 300, so the figure to read is wall time against model calls per attacked example."""
    import importlib.util

    import torch

    run_dir = plan.out / "sst2" / "standard"
    if not (run_dir / "metrics.json").is_file():
        return {"skipped": "no standard SST-2 run to attack (the sst2 step failed)"}
    sys.path.insert(0, str(REPO / "scripts"))
    import attack_vs_textattack as side_by_side

    textattack = importlib.util.find_spec("textattack") is not None
    out = plan.out / "attack.json"
    argv = ["--run", str(run_dir), "--n", str(plan.attack["n"]), "--pairs", "1", "--device", plan.device,
            "--orders", f"victim-first,{side_by_side.BEFORE}", "--threads", str(torch.get_num_threads()),
            "--out", str(out)]  # fmt: skip
    argv += ["--data-dir", plan.data_dir] if plan.data_dir else []
    argv += [] if textattack else ["--no-textattack"]
    side_by_side.main(argv)
    data = json.loads(out.read_text())
    keys = ("wall_s", "cpu_s", "num_attacked", "success_rate", "queries_per_example", "encoder_rows_per_example",
            "model_calls_per_example", "num_violations")  # fmt: skip
    runs = {r["kind"]: {k: r[k] for k in keys} for r in data["runs"]}
    return {"textattack": textattack, "runs": runs, "wall_ratio": data["wall_ratio_textattack_over"]}


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 2) if seconds is not None else None


STEPS = (("gpu_tests", run_gpu_tests), ("overhead", run_overhead), ("sst2", run_sst2), ("attack", run_attack))


# ------------------------------------------------------------------------------------------ report
def environment(plan: Plan) -> dict[str, Any]:
    import torch

    from advtune.report import environment as env

    return {**env(), "cuda": torch.version.cuda, "device": plan.device, "dry_run": plan.dry_run}


def failed_steps(results: dict[str, Any]) -> list[str]:
    """Steps that raised, and the GPU tests when pytest did not pass."""
    bad = [name for name, _ in STEPS if "error" in results.get(name, {})]
    tests = results.get("gpu_tests", {})
    if tests.get("returncode") not in (None, 0) and "gpu_tests" not in bad:
        bad.append("gpu_tests")
    return bad


def summary_markdown(results: dict[str, Any]) -> str:
    env, plan = results["environment"], results["plan"]
    lines = [
        f"# advtune GPU check: {plan['gpu']}",
        "",
        f"torch {env['torch']} (CUDA {env['cuda']}), transformers {env.get('transformers')}, {env['cpu']} "
        f"x {env['cpu_count']}; model {plan['model']}; total {results.get('total_wall_s')} s"
        + (" — **CPU dry run: shrunk steps, the figures mean nothing**" if plan["dry_run"] else ""),
        "",
        "## tests/gpu",
        "",
        _tests_line(results.get("gpu_tests", {})),
        *_overhead_lines(results.get("overhead", {}), plan),
        *_sst2_lines(results.get("sst2", {}), plan),
        *_attack_lines(results.get("attack", {}), plan),
    ]
    failed = failed_steps(results)
    lines += ["", f"**failed steps: {', '.join(failed)}**" if failed else "All steps passed."]
    return "\n".join(lines) + "\n"


def _tests_line(tests: dict[str, Any]) -> str:
    if "error" in tests:
        return f"error: {tests['error']}"
    if "returncode" not in tests:
        return f"skipped: {tests.get('skipped')}"
    return (
        f"{tests['tests']} tests: {tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors, "
        f"{tests['skipped']} skipped (pytest exit {tests['returncode']}; log: gpu-tests.log)"
    )


def _overhead_lines(overhead: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    o = plan["overhead"]
    head = [
        "",
        f"## Overhead ({plan['dtype']} autocast, batch {o['batch_size']} x length {o['seq_len']}, "
        f"median of {o['steps']} steps after {o['warmup']})",
        "",
    ]
    if "error" in overhead:
        return [*head, f"error: {overhead['error']}"]
    table = ["| method | passes | step ms | time ratio | time / pass ratio | peak mem MB | mem ratio |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in overhead.get("rows", []):
        cells = [r["method"], r["passes"], _ms(r["step_s"]), r["time_ratio"], r["time_per_pass"], r["mem_mb"],
                 r["mem_ratio"]]  # fmt: skip
        table.append("| " + " | ".join("–" if c is None else str(c) for c in cells) + " |")
    return [*head, *table]


def _sst2_lines(sst2: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    t = plan["sst2"]
    head = [
        "",
        f"## SST-2, one epoch (batch {t['per_device_train_batch_size']}, lr {t['learning_rate']}, "
        f"max length {t['max_length']}, {'bf16' if t.get('bf16') else 'fp32'})",
        "",
    ]
    if "error" in sst2:
        return [*head, f"error: {sst2['error']}"]
    table = ["| method | dev accuracy | train examples | steps | median step ms | train s | wall s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for method, r in sst2.items():
        if isinstance(r, dict):
            acc = f"{r['dev_accuracy'] * 100:.2f}"
            table.append(f"| {method} | {acc} | {r['train_examples']} | {r['steps']} | {r['step_ms']} | "
                         f"{r['train_s']} | {r['wall_s']} |")  # fmt: skip
    return [*head, *table]


def _attack_lines(attack: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    head = ["", f"## Attack (textdefender-v1, first {plan['attack']['n']} SST-2 dev examples, the standard run)", ""]
    if "error" in attack or "skipped" in attack:
        return [*head, attack.get("error") or f"skipped: {attack['skipped']}"]
    table = ["| attack | wall s | CPU s | success | victim rows / ex. | encoder rows / ex. | model calls / ex. |"
             " violations |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for kind, r in attack.get("runs", {}).items():
        cells = [kind, round(r["wall_s"], 1), round(r["cpu_s"], 1), f"{100 * r['success_rate']:.1f}%",
                 round(r["queries_per_example"], 1), round(r["encoder_rows_per_example"], 1),
                 round(r["model_calls_per_example"], 2), r["num_violations"]]  # fmt: skip
        table.append("| " + " | ".join(map(str, cells)) + " |")
    ratios = {k: round(v["mean"], 2) for k, v in attack.get("wall_ratio", {}).items()}
    note = f"wall-time ratio TextAttack / advtune: {ratios}" if ratios else "TextAttack not installed: advtune only"
    return [*head, *table, "", note]


# ------------------------------------------------------------------------------------------ main
def _quiet() -> None:
    """The steps' own lines and the summary on the terminal, not weight-loading reports and per-batch bars."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def run_steps(plan: Plan, skip_tests: bool) -> dict[str, Any]:
    """Each step timed and isolated (a failing step is recorded, the next one still runs)."""
    results: dict[str, Any] = {"plan": {**asdict(plan), "out": str(plan.out)}, "environment": environment(plan)}
    start = time.perf_counter()
    for name, step in STEPS:
        if name == "gpu_tests" and skip_tests:
            results[name] = {"skipped": "--skip-tests"}
            continue
        print(f"gpu check: {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = step(plan)
        except Exception as exc:  # noqa: BLE001 - recorded in the summary; the other steps still run
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        results[name]["step_wall_s"] = round(time.perf_counter() - t0, 1)
        results["total_wall_s"] = round(time.perf_counter() - start, 1)
        (plan.out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def main(argv: list[str] | None = None) -> int:
    from advtune.errors import UsageError

    args = build_parser().parse_args(argv)
    try:
        plan = make_plan(args)
    except UsageError as exc:
        print(f"gpu_check.py: {exc}", file=sys.stderr)
        return 2
    plan.out.mkdir(parents=True, exist_ok=True)
    _quiet()
    results = run_steps(plan, args.skip_tests)
    (plan.out / "summary.md").write_text(summary_markdown(results))
    print(summary_markdown(results))
    print(f"written: {plan.out}/summary.md")
    return 1 if failed_steps(results) else 0


if __name__ == "__main__":
    sys.exit(main())
