"""``advtune bench --executor ray`` on a local Ray with two CPUs: same metrics as the in-process grid, two
cells at a time, a cell whose worker is killed is rerun (and costs only that cell), finished cells skipped.

One Ray session for the module (starting Ray costs seconds). The train functions defined here are shipped
to the workers by value (``register_pickle_by_value``): the workers cannot import this test module.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from advtune import runs  # noqa: E402
from advtune.bench.executors import RayExecutor  # noqa: E402
from advtune.bench.runner import build_grid, default_train_fn, run_grid  # noqa: E402
from advtune.bench.suites import Suite, TaskSpec  # noqa: E402

pytestmark = pytest.mark.ray

POS = ["good", "great", "fun", "best", "love", "nice"]
NEG = ["bad", "awful", "boring", "dull", "worst", "hate"]
FILL = ["the", "movie", "film", "plot", "was", "is", "this", "very"]


@pytest.fixture(scope="module")
def ray_session():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory) -> Suite:
    """Two methods x two seeds of tiny-model SST-2 runs on toy data written as SST-2 TSV files."""
    from advtune.testing import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    tiny_model(num_labels=2, seed=0).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    (root / "data" / "sst2").mkdir(parents=True)
    for split, n in (("train", 32), ("dev", 16)):
        rows = [f"{FILL[i % 8]} {FILL[(i * 3) % 8]} {(POS if i % 2 else NEG)[i % 6]}\t{i % 2}" for i in range(n)]
        (root / "data" / "sst2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return Suite(
        name="ray-tiny",
        description="ray executor test",
        methods=("standard", "fgm"),
        seeds=(1, 2),
        model=str(root / "model"),
        tasks=(TaskSpec("sst2", "sst2-toy", {"max_length": 16, "data_dir": str(root / "data")}, "toy"),),
        training={"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                  "save_strategy": "no", "use_cpu": True, "disable_tqdm": True},
    )  # fmt: skip


def spanned_train(**kwargs):
    """The real training, its process id and wall-clock span written beside the results folder."""
    start = time.time()
    out = default_train_fn(**kwargs)
    span = {"pid": os.getpid(), "start": start, "end": time.time()}
    spans = Path(kwargs["output_dir"]).parents[2].parent / "spans"
    spans.mkdir(exist_ok=True)
    runs.write_json_atomic(spans / f"{kwargs['method']}-{kwargs['seed']}.json", span)
    return out


def _results(out: Path) -> dict[str, object]:
    """Every cell's validation metrics and predictions (probabilities to 6 digits), timings left out."""
    found = {}
    for metrics in sorted(out.glob("*/*/seed*/metrics.json")):
        run = metrics.parent
        splits = json.loads(metrics.read_text())["splits"]
        preds = sorted(run.glob("eval/*/predictions.jsonl"))
        found[str(run.relative_to(out))] = (splits, [p.read_text() for p in preds])
    return found


def test_ray_grid_runs_two_cells_at_a_time_with_the_local_metrics(ray_session, tiny_suite, tmp_path):
    local_cells, _ = build_grid(tiny_suite, tmp_path / "local", registered=["standard", "fgm"], attack=False)
    ray_cells, _ = build_grid(tiny_suite, tmp_path / "ray" / "out", registered=["standard", "fgm"], attack=False)
    assert len(ray_cells) == 4
    local = run_grid(local_cells, progress=False, stop_on_error=True)
    executor = RayExecutor(max_retries=0, threads=torch.get_num_threads())  # the local grid's thread count
    remote = run_grid(ray_cells, train_fn=spanned_train, progress=False, executor=executor)
    assert remote.failed == [] and sorted(remote.trained) == sorted(local.trained) and len(local.trained) == 4
    got, want = _results(tmp_path / "ray" / "out"), _results(tmp_path / "local")
    assert len(want) == 4 and all(preds for _, preds in want.values())
    for name in want:
        splits = want[name][0]
        assert got[name][0] == splits, name  # accuracy, loss, ... equal to the last digit
        assert got[name][1] == want[name][1], name  # every prediction's probabilities too
    spans = [json.loads(p.read_text()) for p in (tmp_path / "ray" / "spans").glob("*.json")]
    assert len(spans) == 4 and len({s["pid"] for s in spans}) >= 2 and os.getpid() not in {s["pid"] for s in spans}
    most = max(sum(s["start"] <= t["start"] < s["end"] for s in spans) for t in spans)
    assert most == 2  # two cells ran at the same time, never three (2 CPUs, 1 per cell)


def kill_once_train(**kwargs):
    """A fake trainer: cell fgm/seed2 kills its own worker process mid-run the first time, standard/seed1 raises."""
    out = Path(kwargs["output_dir"])
    log = out.parents[2].parent / "attempts.txt"
    with open(log, "a") as fh:
        fh.write(f"{kwargs['method']}-{kwargs['seed']}\n")
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json_atomic(out / runs.RUN_CONFIG, {"task": {"name": kwargs["task"]}, "method": {}})
    if kwargs["method"] == "fgm" and kwargs["seed"] == 2 and not (log.parent / "killed").exists():
        (out / "partial-weights.bin").write_bytes(b"x")
        (log.parent / "killed").write_text("once")
        os.kill(os.getpid(), signal.SIGKILL)
    if kwargs["method"] == "standard" and kwargs["seed"] == 1 and not (log.parent / "raised").exists():
        (log.parent / "raised").write_text("once")
        raise ValueError("flaky once")
    runs.write_json_atomic(out / runs.METRICS, {"task": kwargs["task"], "splits": {"validation": {"accuracy": 1}}})
    return out


def _attempts(tmp_path: Path) -> list[str]:
    return sorted((tmp_path / "attempts.txt").read_text().split())


def test_killed_worker_is_retried_and_the_grid_finishes(ray_session, tiny_suite, tmp_path):
    cells, _ = build_grid(tiny_suite, tmp_path / "out", registered=["standard", "fgm"], attack=False)
    result = run_grid(cells, train_fn=kill_once_train, progress=False, executor=RayExecutor(max_retries=1))
    assert result.failed == [] and len(result.trained) == 4 and all(c.is_done() for c in cells)
    assert (tmp_path / "killed").exists() and (tmp_path / "raised").exists()
    assert _attempts(tmp_path) == ["fgm-1", "fgm-2", "fgm-2", "standard-1", "standard-1", "standard-2"]  # only those
    assert not (cells[3].run_dir / "partial-weights.bin").exists()  # the retry started from an empty folder


def test_without_retries_the_killed_cell_alone_fails_then_a_rerun_redoes_only_it(ray_session, tiny_suite, tmp_path):
    cells, _ = build_grid(tiny_suite, tmp_path / "out", registered=["standard", "fgm"], attack=False)
    logged: list[str] = []
    result = run_grid(cells, train_fn=kill_once_train, progress=False, log=logged.append,
                      executor=RayExecutor(max_retries=0))  # fmt: skip
    failed = dict(result.failed)
    assert sorted(failed) == ["sst2-toy/fgm/seed2", "sst2-toy/standard/seed1"] and len(result.trained) == 2
    assert failed["sst2-toy/standard/seed1"] == "ValueError: flaky once"  # the cell's own error, not Ray's wrapper
    assert "Worker" in failed["sst2-toy/fgm/seed2"] and sum(line.startswith("FAILED") for line in logged) == 2
    stamps = {c.name: (c.run_dir / runs.METRICS).stat().st_mtime_ns for c in cells if c.is_trained()}

    rerun = run_grid(cells, train_fn=kill_once_train, progress=False, executor=RayExecutor(max_retries=0))
    assert sorted(rerun.trained) == sorted(failed) and sorted(rerun.skipped) == sorted(stamps) and not rerun.failed
    assert _attempts(tmp_path) == ["fgm-1", "fgm-2", "fgm-2", "standard-1", "standard-1", "standard-2"]
    assert all((tmp_path / "out" / n / runs.METRICS).stat().st_mtime_ns == t for n, t in stamps.items())

    def must_not_train(**kwargs):
        raise AssertionError("a finished cell was trained again")

    third = run_grid(cells, train_fn=must_not_train, progress=False, executor=RayExecutor(max_retries=0))
    assert len(third.skipped) == 4 and not third.trained and not third.failed


def test_bench_cli_runs_a_grid_on_ray(ray_session, tiny_suite, tmp_path, monkeypatch, capsys):
    """``advtune bench --executor ray`` end to end (the demo suite cut to one tiny cell), then a rerun."""
    from advtune.cli import main

    data = tiny_suite.tasks[0].args["data_dir"]
    argv = ["bench", "--suite", "demo", "--tasks", "sst2", "--methods", "standard", "--seeds", "1", "--no-attack",
            "--model", tiny_suite.model, "--out", str(tmp_path / "out"), "--no-report", "--executor", "ray",
            "--cpus-per-cell", "1", "--max-retries", "0", "--set", f"data_dir={data}", "--set", "use_cpu=true",
            "--set", "max_train_samples=16", "--set", "max_eval_samples=8", "--set", "max_length=16",
            "--set", "num_train_epochs=1"]  # fmt: skip
    assert main(argv) == 0
    assert "1 trained, 0 attacked, 0 already done, 0 failed" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 trained, 0 attacked, 1 already done, 0 failed" in capsys.readouterr().out
    assert main([*argv, "--gpus-per-cell", "1"]) == 0  # nothing left to run: no GPU is asked of this machine


def usage_error_cell(cell):
    with open(cell, "a") as fh:
        fh.write("attempt\n")
    from advtune.errors import UsageError

    raise UsageError("--set max_length=0: must be positive")


def test_a_usage_error_is_reported_as_itself_and_not_retried(ray_session, tmp_path):
    attempts = tmp_path / "attempts.txt"
    [(cell, outcome)] = list(RayExecutor(max_retries=2).map([str(attempts)], usage_error_cell))
    assert type(outcome).__name__ == "UsageError" and str(outcome) == "--set max_length=0: must be positive"
    assert attempts.read_text() == "attempt\n"  # it would fail the same way again
