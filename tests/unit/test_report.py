"""The report: tables carry the numbers of the metrics files (parsed back), the PNGs are real images."""

from __future__ import annotations

import json
import random
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

from advtune import runs
from advtune.records import collect_runs, primary_metric
from advtune.report import build_report

LABELS = ["negative", "positive"]


def fabricate_run(
    root: Path,
    task_label: str,
    method: str,
    seed: int,
    acc: float,
    aua: float | None = None,
    *,
    task: str = "sst2",
    method_config: dict | None = None,
    epochs: float = 3,
    step_s: float = 0.5,
    label: str | None = None,
    n: int = 200,
    regression: bool = False,
) -> Path:
    """A finished run folder in the documented layout with predictions consistent with ``acc``."""
    run = root / task_label / (label or method) / f"seed{seed}"
    rng = random.Random(hash((task_label, method, seed, label)) % 1000)
    split = "validation"
    if regression:
        rows = [
            {"idx": i, "gold": g, "pred": g + rng.uniform(-1, 1), "probs": None}
            for i, g in enumerate(rng.uniform(0, 5) for _ in range(n))
        ]
        metrics = {"pearson": acc, "spearman": acc - 0.01}
    else:
        n_right = round(acc * n)
        rows = []
        for i in range(n):
            gold = i % 2
            pred = gold if i < n_right else 1 - gold
            rows.append({"idx": i, "gold": gold, "pred": pred, "probs": [0.5, 0.5]})
        acc = n_right / n
        metrics = {"accuracy": acc}
    runs.write_json_atomic(
        run / runs.RUN_CONFIG,
        {
            "task": {
                "name": task,
                "metric": "pearson_spearman" if regression else "accuracy",
                "max_length": 64,
                "max_train_samples": 100,
            },
            "model": {"model": "minilm"},
            "method": {"name": method, "config": method_config or {}},
            "training": {"seed": seed, "num_train_epochs": epochs},
            "label_names": None if regression else LABELS,
            "num_train_examples": 100,
            "versions": {"torch": "x"},
        },
    )
    runs.write_jsonl_atomic(runs.eval_dir(run, task, split) / "predictions.jsonl", rows)
    runs.write_json_atomic(runs.eval_dir(run, task, split) / "metrics.json", {"task": task, "split": split, **metrics})
    runs.write_json_atomic(run / "train_stats.json", {"step_time_median_s": step_s, "train_runtime": 10 * step_s})
    key = "pearson" if regression else "accuracy"
    runs.write_json_atomic(
        run / "log_history.json",
        [
            {"loss": 0.7, "epoch": 0.5, "step": 5},
            *(
                {"epoch": float(e), f"eval_{key}": metrics[key] * (0.9 + 0.1 * e / epochs)}
                for e in range(1, int(epochs) + 1)
            ),
        ],
    )
    if aua is not None:
        runs.write_json_atomic(
            run / "attack" / f"{task}.{split}" / "metrics.json",
            {
                "task": task,
                "split": split,
                "n": 50,
                "acc": acc,
                "aua": aua,
                "avg": (acc + aua) / 2,
                "attack_success_rate": 1 - aua / acc,
                "mean_queries": 80.0,
                "budget": {"name": "b"},
            },
        )
    runs.write_json_atomic(run / runs.METRICS, {"task": task, "method": method, "splits": {split: metrics}})
    runs.write_json_atomic(
        run / "cell.json",
        {  # as advtune bench writes it
            "task_label": task_label,
            "method_label": label or method,
            "data_note": f"100 {task} train examples (test)",
        },
    )
    return run


@pytest.fixture
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    accs = {"standard": (0.80, 0.83, 0.785), "freelb": (0.845, 0.86, 0.815), "cat": (0.84, 0.87, 0.85)}
    auas = {"standard": 0.20, "freelb": 0.31, "cat": 0.27}
    for method, vals in accs.items():
        for seed, acc in zip((1, 2, 3), vals):
            fabricate_run(
                root,
                "sst2-small",
                method,
                seed,
                acc,
                auas[method] + 0.01 * seed,
                step_s={"standard": 0.5, "freelb": 1.5, "cat": 1.1}[method],
            )
        fabricate_run(
            root,
            "stsb-small",
            method,
            1,
            {"standard": 0.6, "freelb": 0.65, "cat": 0.62}[method],
            task="stsb",
            regression=True,
        )
    for lam, a in ((0.0, 0.10), (0.5, 0.25), (1.0, 0.33)):  # PEAFT Figure 2a: AUA vs λ
        fabricate_run(
            root,
            "sst2-small",
            "peaft",
            1,
            0.8 - 0.05 * lam,
            a,
            method_config={"adv_lambda": lam},
            label=f"peaft-lam{lam}",
        )
    for ep, a in ((1, 0.30), (5, 0.36)):  # the same method's epoch sweep at the default λ = 1
        fabricate_run(
            root, "sst2-small", "peaft", 1, 0.75, a, method_config={"adv_lambda": 1.0}, epochs=ep, label=f"peaft-e{ep}"
        )
    for ep, a in ((1, 0.22), (2, 0.26), (4, 0.30)):  # PEAFT Figure 2b: AUA vs epochs
        fabricate_run(root, "sst2-ep", "rose", 1, 0.8, a, epochs=ep, label=f"rose-e{ep}")
    runs.write_json_atomic(
        root / "overhead.json",
        {
            "rows": [
                {"method": "standard", "step_time_ratio": 1.0, "memory_ratio": 1.0},
                {"method": "freelb", "step_time_ratio": 2.9, "memory_ratio": 1.2},
                {"method": "cat", "step_time_ratio": 2.1, "memory_ratio": 1.4},
            ],
            "environment": {"cpu": "test cpu"},
        },
    )
    # an unfinished run must be ignored
    runs.write_json_atomic(root / "sst2-small" / "freelb" / "seed9" / runs.RUN_CONFIG, {"task": {"name": "sst2"}})
    return root


def _table(md: str, heading: str) -> list[list[str]]:
    block = md.split(heading, 1)[1].split("\n\n", 2)[1]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _png_ok(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > 8000, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 150 and img.shape[1] > 150
    flat = img[..., :3].reshape(-1, 3)
    assert flat.std() > 0.05 and len(np.unique(flat.round(2), axis=0)) > 20, f"{path} looks blank"


def test_report_tables_carry_the_metrics_files_numbers(results):
    report = build_report(results)
    md = report.read_text()
    records = collect_runs(results)
    assert len(records) == 3 * 4 + 3 + 2 + 3  # the unfinished seed9 folder is not a run
    # every run's number, parsed back from the "All runs" table, equals its metrics file
    table = _table(md, "## All runs")
    assert len(table) == len(records)
    for row in table:
        task_label, split, method, seed, metric, value, aua, *_, run = row
        metrics = json.loads((results / run / runs.METRICS).read_text())["splits"][split]
        assert metric == primary_metric(None, metrics) or metric in metrics
        assert float(value) == pytest.approx(metrics[metric] * 100, abs=0.005)
        attack = sorted((results / run / "attack").glob("*/metrics.json"))
        if attack:
            assert float(aua) == pytest.approx(json.loads(attack[0].read_text())["aua"] * 100, abs=0.005)
        else:
            assert aua == "–"
    # the summary over seeds: median and sample standard deviation of the files' values
    main = {r[0]: r for r in _table(md, "## Clean results (evaluation split 1")}
    std_vals = [
        json.loads((results / f"sst2-small/standard/seed{s}/metrics.json").read_text())["splits"]["validation"][
            "accuracy"
        ]
        for s in (1, 2, 3)
    ]
    m = re.match(r"([\d.]+)\*? ± ([\d.]+) \((\d)\)", main["standard"][1 + _col(md, "sst2-small")])
    assert m and float(m[1]) == pytest.approx(statistics.median(std_vals) * 100, abs=0.005)
    assert float(m[2]) == pytest.approx(statistics.stdev(std_vals) * 100, abs=0.005) and m[3] == "3"
    # average over the two tasks and Δ vs standard
    fl = main["freelb"]
    med = {
        t: statistics.median(
            [
                json.loads(p.read_text())["splits"]["validation"][k]
                for p in (results / t / "freelb").glob("seed*/metrics.json")
            ]
        )
        for t, k in (("sst2-small", "accuracy"), ("stsb-small", "pearson"))
    }
    std_med = {"sst2-small": statistics.median(std_vals), "stsb-small": 0.6}
    assert float(fl[-2]) == pytest.approx(statistics.mean(med.values()) * 100, abs=0.005)
    assert float(fl[-1]) == pytest.approx(
        (statistics.mean(med.values()) - statistics.mean(std_med.values())) * 100, abs=0.01
    )
    assert main["standard"][-1] == "–"
    # significance marks (McNemar on the shared examples, seed by seed): freelb is right on 6-9 more examples
    # than standard in every seed and never worse (p <= 0.031); peaft λ=0.5 differs on 5 examples (p = 0.0625)
    col = 1 + _col(md, "sst2-small")
    assert main["freelb"][col].split(" ")[0].endswith("*") and main["cat"][col].split(" ")[0].endswith("*")
    assert "*" not in main["standard"][col] and "*" not in main["peaft-lam0.5"][col]
    # attack table and step-time ratio
    attack_rows = {(r[0], r[2]): r for r in _table(md, "## Accuracy under the word-substitution attack")}
    assert attack_rows[("sst2-small", "freelb")][3] == "3"
    summary = {(r[0], r[1]): r for r in _table(md, "## Summary")}
    assert summary[("sst2-small", "standard")][3:6] == [
        "accuracy (validation)",
        main["standard"][col],
        "22.00 ± 1.00 (3)",
    ]
    assert summary[("sst2-small", "freelb")][-1] == "3.00" and summary[("sst2-small", "standard")][-1] == "1.00"
    # stated setup
    assert "cpu: test cpu" in md and "Seeds: 1, 2, 3" in md and "minilm" in md  # hardware as recorded
    assert "step_time_ratio" in md and "2.9" in md  # overhead table


def _col(md: str, task_label: str) -> int:
    header = md.split("## Clean results (evaluation split 1", 1)[1].split("\n\n", 2)[1].splitlines()[0]
    cols = [c.strip() for c in header.strip("|").split("|")]
    return next(i for i, c in enumerate(cols) if c.startswith(task_label)) - 1


def test_a_zero_score_is_reported_as_zero_not_as_missing(tmp_path):
    """A constant predictor has MCC 0 (CoLA at the majority class): 0.00 in every table, never nan."""
    fabricate_run(tmp_path, "sst2-small", "standard", 1, 0.0)
    fabricate_run(tmp_path, "sst2-small", "standard", 2, 0.5)
    md = build_report(tmp_path, plots=False).read_text()
    values = sorted(row[5] for row in _table(md, "## All runs"))
    assert values == ["0.00", "50.00"]
    assert "nan" not in md.split("## All runs", 1)[1]


def test_report_figures_are_real_images(results, tmp_path):
    out = tmp_path / "elsewhere" / "REPORT.md"
    build_report(results, out)
    figs = out.parent / "figures"
    names = sorted(p.name for p in figs.glob("*.png"))
    assert "confusion_sst2-small.png" in names and "confusion_stsb-small.png" not in names  # no matrix for regression
    assert "sweep_sst2-small_adv_lambda.png" in names  # PEAFT Fig. 2a
    assert "sweep_sst2-ep_epochs.png" in names and "sweep_sst2-small_epochs.png" in names  # PEAFT Fig. 2b
    assert "epochs_sst2-small.png" in names and "overhead_0.png" in names
    for name in names:
        _png_ok(figs / name)
    md = out.read_text()
    for name in names:
        assert f"(figures/{name})" in md


def test_sweeps_separate_lambda_and_epochs(results):
    from advtune.plots import sweep_points

    pts = sweep_points(collect_runs(results))
    lam = pts[("sst2-small", "adv_lambda")]["peaft"]
    assert [(x, round(a, 4)) for x, _, a in lam] == [(0.0, 0.10), (0.5, 0.25), (1.0, 0.33)]
    ep = pts[("sst2-small", "epochs")]["peaft"]
    assert [(x, round(a, 4)) for x, _, a in ep] == [(1.0, 0.30), (3.0, 0.33), (5.0, 0.36)]
    assert [x for x, _, _ in pts[("sst2-ep", "epochs")]["rose"]] == [1.0, 2.0, 4.0]
    assert ("sst2-small", "epochs") in pts and "standard" not in pts[("sst2-small", "epochs")]  # no sweep there


def test_report_cli_and_errors(results, tmp_path, capsys):
    from advtune.cli import main

    assert main(["report", str(results), "--no-plots"]) == 0
    assert (results / "REPORT.md").is_file() and not (results / "figures").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_transfer_table_reads_the_other_task_evaluations(tmp_path):
    accs = {"standard": (0.70, 0.74, 0.72), "tat": (0.78, 0.76, 0.80)}
    for method, values in accs.items():
        for seed, acc in zip((1, 2, 3), values):
            run = fabricate_run(tmp_path, "sst2-2k", method, seed, 0.8)
            for domain, shift in (("books", 0.0), ("kitchen", 0.05)):
                runs.write_json_atomic(
                    runs.eval_dir(run, domain, "test") / "metrics.json",
                    {"task": domain, "split": "test", "n": 1000, "accuracy": acc + shift},
                )
    md = build_report(tmp_path, plots=False).read_text()
    rows = {r[0]: r for r in _table(md, "## Zero-shot transfer")}
    header = md.split("## Zero-shot transfer", 1)[1].split("\n\n", 2)[1].splitlines()[0]
    assert "sst2-2k → books.test (accuracy, n=1000)" in header and "kitchen" in header
    assert rows["tat"][1].startswith("78.00 ± 2.00 (3)") and rows["standard"][2].startswith("77.00")
    assert float(rows["tat"][-2]) == pytest.approx((0.78 + 0.83) / 2 * 100, abs=0.005)
    assert float(rows["tat"][-1]) == pytest.approx(((0.78 + 0.83) - (0.72 + 0.77)) / 2 * 100, abs=0.01)


def test_a_damaged_run_is_skipped_with_one_warning_line_naming_it(tmp_path, capsys):
    from advtune.cli import main

    good = fabricate_run(tmp_path, "sst2-small", "standard", 1, 0.8, 0.2)
    damaged = {
        "metrics.json": fabricate_run(tmp_path, "sst2-small", "standard", 2, 0.7),
        "run_config.json": fabricate_run(tmp_path, "sst2-small", "standard", 3, 0.7),
        "predictions.jsonl": fabricate_run(tmp_path, "sst2-small", "freelb", 1, 0.9),
        "attack": fabricate_run(tmp_path, "sst2-small", "freelb", 2, 0.9, 0.3),
        "robustness": fabricate_run(tmp_path, "sst2-small", "cat", 1, 0.9),
        "splits": fabricate_run(tmp_path, "sst2-small", "cat", 2, 0.9),
    }
    (damaged["metrics.json"] / runs.METRICS).write_text('{"task": ', encoding="utf-8")  # cut short
    (damaged["run_config.json"] / runs.RUN_CONFIG).write_text("[1, 2]\n", encoding="utf-8")
    preds = runs.eval_dir(damaged["predictions.jsonl"], "sst2", "validation") / "predictions.jsonl"
    preds.write_text(preds.read_text() + "{not json\n", encoding="utf-8")
    (damaged["attack"] / "attack" / "sst2.validation" / "metrics.json").write_bytes(b"\xff\xfe")
    runs.write_json_atomic(damaged["splits"] / runs.METRICS, {"task": "sst2", "splits": {"validation": 0.9}})
    (damaged["robustness"] / "robustness").mkdir()
    (damaged["robustness"] / "robustness" / "sst2.validation.json").write_text("", encoding="utf-8")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    assert [r.path for r in collect_runs(tmp_path)] == [good]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 6 and all(line.startswith("advtune: warning: skipping damaged run ") for line in lines)
    expected = {
        "metrics.json": "metrics.json: Expecting value: line 1 column 10",
        "run_config.json": "run_config.json: expected a JSON object, found list",
        "predictions.jsonl": "eval/sst2.validation/predictions.jsonl: line 201 is not a JSON object",
        "attack": "attack/sst2.validation/metrics.json: 'utf-8' codec can't decode",
        "robustness": "robustness/sst2.validation.json: Expecting value: line 1 column 1",
        "splits": "metrics.json: 'splits' is not a mapping of split to metrics",
    }
    for what, run in damaged.items():
        assert sum(f"run {run}: {expected[what]}" in line for line in lines) == 1, (what, lines)

    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert err.count("skipping damaged run") == 6 and "Traceback" not in err
    md = (tmp_path / "REPORT.md").read_text()
    assert [row[2:4] for row in _table(md, "## All runs")] == [["standard", "1"]]
    assert all(p.read_bytes() == data for p, data in before.items())  # the report repairs nothing
