"""Executors without a cluster: the local executor's bounded retries, and the checks of the executor flags
(``advtune bench --executor ray ...``) that refuse bad input with one line and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from advtune import runs
from advtune.bench.executors import LocalExecutor, _check_fits, check_resources, worker_env
from advtune.bench.runner import build_grid, run_grid
from advtune.bench.suites import Suite, TaskSpec
from advtune.errors import UsageError

SUITE = Suite(
    name="toy",
    description="test grid",
    tasks=(TaskSpec("sst2", "sst2-tiny", {"max_train_samples": 8}, "8 examples"),),
    methods=("standard", "fgm"),
    seeds=(1, 2),
    training={"num_train_epochs": 1},
)


class FailFirst:
    """A train function whose first ``fails`` calls leave a partial folder and raise."""

    def __init__(self, fails: int) -> None:
        self.fails, self.calls = fails, []

    def __call__(self, *, output_dir, task, seed, method, **kwargs):
        out = Path(output_dir)
        self.calls.append(f"{method}/seed{seed}")
        out.mkdir(parents=True, exist_ok=True)
        if len(self.calls) <= self.fails:
            (out / "partial.bin").write_bytes(b"x")
            raise OSError("disk hiccup")
        runs.write_json_atomic(out / runs.METRICS, {"task": task, "splits": {}})
        return out


def test_local_executor_retries_a_failed_cell_from_an_empty_folder(tmp_path):
    cells, _ = build_grid(SUITE, tmp_path, registered=["standard", "fgm"], attack=False)
    train = FailFirst(fails=2)
    result = run_grid(cells, train_fn=train, progress=False, executor=LocalExecutor(max_retries=2))
    assert result.failed == [] and len(result.trained) == 4
    assert train.calls == ["standard/seed1"] * 3 + ["standard/seed2", "fgm/seed1", "fgm/seed2"]
    assert not (cells[0].run_dir / "partial.bin").exists()

    cells, _ = build_grid(SUITE, tmp_path / "no-retry", registered=["standard", "fgm"], attack=False)
    train = FailFirst(fails=1)
    result = run_grid(cells, train_fn=train, progress=False, log=lambda s: None)  # the default: no retry
    assert result.failed == [("sst2-tiny/standard/seed1", "OSError: disk hiccup")] and len(train.calls) == 4


def test_a_usage_error_of_a_cell_is_not_retried():
    calls = []

    def bad_setting(cell):
        calls.append(cell)
        raise UsageError("--set max_length=0: must be positive")

    [(cell, outcome)] = list(LocalExecutor(max_retries=3).map(["cell"], bad_setting))
    assert isinstance(outcome, UsageError) and str(outcome) == "--set max_length=0: must be positive"
    assert calls == ["cell"]


def test_local_executor_never_swallows_a_keyboard_interrupt():
    def interrupted(cell):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(LocalExecutor(max_retries=3).map(["cell"], interrupted))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cpus-per-cell", "2"], "--cpus-per-cell only apply to --executor ray"),
        (["--ray-address", "auto", "--gpus-per-cell", "1"], "--ray-address, --gpus-per-cell only apply to --executor"),
        (["--executor", "ray", "--gpus-per-cell", "1.5"], "--gpus-per-cell must be a fraction up to 1 or a whole"),
        (["--executor", "ray", "--cpus-per-cell", "-1"], "--cpus-per-cell must be a fraction up to 1 or a whole"),
        (["--executor", "ray", "--cpus-per-cell", "0"], "a cell needs some resource"),
        (["--max-retries", "-1"], "--max-retries must be 0 or more, got -1"),
    ],
)
def test_bad_executor_flags_are_one_line_and_exit_2(flags, message, tmp_path, capsys):
    from advtune.cli import main

    assert main(["bench", "--suite", "demo", "--out", str(tmp_path), "--dry-run", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from advtune.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["bench", "--suite", "demo", "--out", str(tmp_path), "--dry-run", "--executor", "ray"]) == 2
    assert "--executor ray needs Ray: pip install 'advtune[ray]'" in capsys.readouterr().err
    assert main(["bench", "--suite", "overhead", "--dry-run", "--executor", "ray"]) == 2


class FakeRay:
    def __init__(self, *resources: dict) -> None:
        self.resources = resources

    def nodes(self):
        return [{"Alive": True, "Resources": r} for r in self.resources] + [{"Alive": False, "Resources": {"GPU": 8}}]


def test_a_cell_no_node_can_hold_is_refused_on_a_local_ray_and_warned_about_on_a_cluster(capsys):
    ray = FakeRay({"CPU": 16.0}, {"CPU": 8.0, "GPU": 1.0})
    _check_fits(ray, 4, 0.5, strict=True)  # fits the second node
    with pytest.raises(UsageError, match=r"no Ray node has 4 CPUs and 2 GPUs .*16 CPUs, 0 GPUs; 8 CPUs, 1 GPUs"):
        _check_fits(ray, 4, 2, strict=True)  # the dead 8-GPU node does not count
    _check_fits(ray, 4, 2, strict=False)
    assert capsys.readouterr().out.startswith("warning: no Ray node has 4 CPUs and 2 GPUs")
    check_resources(0.25, 0.5, 0)
    check_resources(2, 4, 3)


def test_workers_get_the_data_settings_but_no_token(monkeypatch):
    monkeypatch.setenv("ADVTUNE_DATA_DIR", "/data")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "secret")
    monkeypatch.setenv("ADVTUNE_HF_TOKEN", "secret")
    env = worker_env()
    assert env["ADVTUNE_DATA_DIR"] == "/data" and env["HF_HUB_OFFLINE"] == "1"
    assert "HF_TOKEN" not in env and "ADVTUNE_HF_TOKEN" not in env and "PATH" not in env


def test_an_unreachable_cluster_is_one_line(monkeypatch):
    """``--ray-address auto`` with no cluster running: Ray's ConnectionError becomes a usage error."""
    from advtune.bench import executors

    class NoCluster:
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            raise ConnectionError("Could not find any running Ray instance.\nPlease specify ...")

    monkeypatch.setattr(executors, "import_ray", lambda: NoCluster())
    ex = executors.RayExecutor(address="auto")
    with pytest.raises(UsageError, match=r"^--ray-address auto: Could not find any running Ray instance\.$"):
        list(ex.map(["cell"], lambda cell: None))
