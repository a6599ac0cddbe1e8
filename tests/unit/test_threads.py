"""--threads sets torch's threads; bad values fail in one line; runs record threads and load; the report
marks a step-time ratio that the machine's load could have made, and only that one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advtune import runs, threads
from advtune.cli import main
from advtune.records import collect_runs
from advtune.report import RATIO_MARK, build_report, step_ratio
from tests.conftest import make_tiny_run, toy_sentiment
from tests.unit.test_report import _table, fabricate_run


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    """Every test starts without an explicit setting and leaves torch's thread count as it found it."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_explicit", None)
    yield
    torch.set_num_threads(before)


def _one_line_exit_2(argv, capsys, needle):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


# ------------------------------------------------------------------------------------------ the setting
def test_apply_sets_torchs_threads_and_keeps_an_explicit_setting(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.apply(2)["threads"] == 2 == torch.get_num_threads()
    state = threads.apply(None)  # a later run of the same process (a bench cell) keeps the explicit setting
    assert state["threads"] == 2 == torch.get_num_threads() and state["threads_source"].startswith("--threads")


def test_default_honours_omp_num_threads_capped_at_the_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.default_threads() == 1
    torch.set_num_threads(2)
    assert threads.apply(None)["threads"] == 1 == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "4096,2")  # OpenMP's nested list: the first entry counts
    assert threads.default_threads() == threads.usable_cpus()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.default_threads() is None
    torch.set_num_threads(2)
    assert threads.apply(None)["threads_source"].startswith("torch default") and torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", " "])
def test_parse_threads(value):
    if not value.strip():
        assert threads.parse_threads(value) is None
        return
    with pytest.raises(threads.UsageError, match=r"invalid --threads .*: must be a positive integer"):
        threads.parse_threads(value)


@pytest.mark.parametrize("command", ["train", "eval", "attack", "bench", "robustness", "surface"])
@pytest.mark.parametrize("value", ["0", "abc"])
def test_bad_threads_exit_2_with_one_line(command, value, capsys, tmp_path):
    argv = {
        "train": ["train", "--task", "sst2", "--output-dir", str(tmp_path / "run")],
        "bench": ["bench", "--suite", "demo", "--out", str(tmp_path / "run")],
    }.get(command, [command, "--run", str(tmp_path / "run")])
    _one_line_exit_2([*argv, "--threads", value], capsys, f"invalid --threads '{value}': must be a positive integer")
    assert not (tmp_path / "run").exists()


def test_a_bad_omp_num_threads_is_one_line_too(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    _one_line_exit_2(["eval", "--run", str(tmp_path)], capsys, "invalid OMP_NUM_THREADS 'lots'")


# ------------------------------------------------------------------------------------------ the records
def _assert_machine(machine: dict, n: int) -> None:
    assert machine["threads"] == n and machine["cpu_count"] >= machine["usable_cpus"] >= 1
    for key in ("load_start", "load_end"):
        assert len(machine[key]) == 3 and all(x >= 0 for x in machine[key])
    assert machine["wall_s"] > 0 and machine["cpu_s"] > 0
    # wall_s and cpu_s are rounded to 0.1 ms, cpu_per_wall is computed before rounding
    tolerance = 1e-4 * (1 + machine["cpu_s"] / machine["wall_s"]) / machine["wall_s"] + 1e-3
    assert machine["cpu_per_wall"] == pytest.approx(machine["cpu_s"] / machine["wall_s"], abs=tolerance)


def test_the_attack_command_sets_threads_and_records_them_with_the_load(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\ngood fun movie\t1\nthe plot was dull\t0\n")
    syn = tmp_path / "syn.txt"
    syn.write_text("good great\nfun funny\nmovie film\ndull boring\n")
    torch.set_num_threads(2)
    argv = ["attack", "--run", str(run), "--data-file", str(data), "--synonyms", str(syn), "--similarity-model"]
    assert main([*argv, str(run), "--n", "2", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    _assert_machine(runs.read_json(run / "attack" / "sst2.validation" / "metrics.json")["machine"], 1)


def test_training_records_threads_load_and_cpu_step_times(tmp_path):
    from advtune.pipeline import train
    from advtune.testing import tiny_model, tiny_tokenizer

    tiny_model(dropout=0.0).save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    texts, labels = toy_sentiment(32)
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"{t},{'pos' if y else 'neg'}\n" for t, y in zip(texts, labels)))
    torch.set_num_threads(2)
    run = train(
        task="file", train_file=str(data), text_fields="text", label_field="label", model=str(tmp_path / "tiny"),
        output_dir=tmp_path / "run", max_length=16, max_steps=4, per_device_train_batch_size=8, save_strategy="no",
        use_cpu=True, disable_tqdm=True, threads=1,
    )  # fmt: skip
    assert torch.get_num_threads() == 1
    stats = json.loads((run / "train_stats.json").read_text())
    _assert_machine(stats["machine"], 1)
    assert stats["step_cpu_time_median_s"] > 0 and stats["step_time_median_s"] > 0
    assert json.loads((run / runs.RUN_CONFIG).read_text())["training"]["threads"] == 1
    record = collect_runs(tmp_path)[0]
    assert record.threads == 1 and record.train_load == pytest.approx(
        (stats["machine"]["load_start"][0] + stats["machine"]["load_end"][0]) / 2
    )


# ------------------------------------------------------------------------------------------ the report
def _with_machine(run: Path, wall: float, cpu: float, load: float, n_threads: int = 2, cores: int = 2) -> None:
    runs.write_json_atomic(
        run / "train_stats.json",
        {
            "step_time_median_s": wall,
            "step_cpu_time_median_s": cpu,
            "train_runtime": 40 * wall,
            "machine": {
                "threads": n_threads,
                "usable_cpus": cores,
                "cpu_count": cores,
                "load_start": [load, 1.0, 1.0],
                "load_end": [load + 0.2, 1.0, 1.0],
                "wall_s": 40 * wall,
                "cpu_s": 40 * cpu,
                "cpu_per_wall": cpu / wall,
            },  # fmt: skip
        },
    )


@pytest.fixture
def grid(tmp_path) -> Path:
    """The demo's case: standard trained on a loaded machine, FreeLB and CAT on quieter ones."""
    root = tmp_path / "results"
    cases = {  # method: (wall s, CPU s, 1-minute load, threads)
        "standard": (1.5, 0.40, 1.0, 2),  # wall inflated by the load, CPU time much less
        "freelb": (1.2, 1.16, 1.3, 2),  # load within 0.25 per core of standard's: trusted
        "cat": (0.9, 0.88, 3.0, 2),  # load 2.0 above standard's on 2 cores: marked
        "fgm": (0.9, 0.80, 1.0, 1),  # same load, other thread count: marked
    }
    for method, (wall, cpu, load, n) in cases.items():
        _with_machine(fabricate_run(root, "sst2-small", method, 1, 0.8), wall, cpu, load, n)
    return root


def test_the_report_uses_cpu_ratios_and_marks_only_the_runs_whose_load_or_threads_differ(grid):
    md = build_report(grid, plots=False).read_text()
    summary = {r[1]: r[-1] for r in _table(md, "## Summary")}
    assert summary == {"standard": "1.00", "freelb": "2.90", "cat": f"2.20{RATIO_MARK}", "fgm": f"2.00{RATIO_MARK}"}
    cost = {r[1]: r for r in _table(md, "## Training cost")}
    assert cost["freelb"][2:5] == ["1.200", "1.160", "2.90"] and cost["cat"][4] == f"2.20{RATIO_MARK}"
    assert "different thread counts or ran under loads differing by more than 0.25 per core" in md
    machine = {r[2]: r[8:11] for r in _table(md, "## All runs")}
    assert machine["standard"] == ["2", "1.00 → 1.20", "0.27"] and machine["fgm"][0] == "1"


def test_runs_without_cpu_times_or_machine_records_keep_the_wall_ratio_unmarked(tmp_path):
    root = tmp_path / "results"
    fabricate_run(root, "t", "standard", 1, 0.8, step_s=0.5)
    fabricate_run(root, "t", "freelb", 1, 0.8, step_s=1.5)
    base, run = sorted(collect_runs(root), key=lambda r: r.method != "standard")
    assert step_ratio(run, base) == (pytest.approx(3.0), True)
    _with_machine(run.path, 1.5, 1.0, 5.0)  # CPU time on one side only: the wall ratio, judged by load alone
    run = [r for r in collect_runs(root) if r.method == "freelb"][0]
    assert step_ratio(run, base) == (pytest.approx(3.0), True)


def test_bench_applies_threads_and_hands_them_to_the_overhead_processes(tmp_path, capsys):
    torch.set_num_threads(2)
    argv = ["bench", "--suite", "overhead", "--methods", "standard", "--out", str(tmp_path), "--dry-run"]
    assert main([*argv, "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1 and "'threads': 1" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
