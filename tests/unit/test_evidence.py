"""Issue 17 machinery on fabricated run folders: flip rate, cross-seed test, mechanism / evidence / confused
pairs tables, the confusion-difference figure and the two new suites."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from advtune import runs
from advtune.bench.runner import build_grid
from advtune.bench.suites import CPU_ENCODER_RADIUS, SWEEP_RADII, get_suite
from advtune.errors import UsageError
from advtune.evaluation.significance import seed_randomization
from advtune.methods.smoothness import output_shift
from advtune.plots import confusion_differences
from advtune.records import collect_runs, top_confused_pairs
from advtune.report import (
    build_report,
    confused_pairs_tables,
    evidence_table,
    learns,
    mechanism_table,
    versus_table,
)
from tests.unit.test_smart_tat import _diag_step

NAMES = ["card", "cash", "fee"]


def make_run(
    root: Path,
    task_label: str,
    method: str,
    seed: int,
    pairs: list[tuple[int, int]],
    *,
    label: str | None = None,
    diag: list[dict[str, float]] | None = None,
    step_s: float = 0.5,
    aua: float | None = None,
    ood: float | None = None,
    lmax: float | None = None,
) -> Path:
    """A finished 3-class run whose predictions are exactly ``pairs`` of (gold, pred)."""
    run = root / task_label / (label or method) / f"seed{seed}"
    rows = [{"idx": i, "gold": g, "pred": p, "probs": None} for i, (g, p) in enumerate(pairs)]
    acc = sum(g == p for g, p in pairs) / len(pairs)
    config = {
        "task": {"name": "banking77", "metric": "accuracy"},
        "model": {"model": "minilm"},
        "method": {"name": method, "config": {}},
        "training": {"seed": seed, "num_train_epochs": 1},
        "label_names": NAMES,
        "num_train_examples": 100,
    }
    runs.write_json_atomic(run / runs.RUN_CONFIG, config)
    runs.write_jsonl_atomic(runs.eval_dir(run, "banking77", "test") / "predictions.jsonl", rows)
    runs.write_json_atomic(runs.eval_dir(run, "banking77", "test") / "metrics.json", {"accuracy": acc})
    runs.write_json_atomic(run / "train_stats.json", {"step_time_median_s": step_s})
    runs.write_json_atomic(run / "log_history.json", [{"loss": 1.0, "step": 10, **d} for d in diag or []])
    if aua is not None:
        runs.write_json_atomic(run / "attack" / "banking77.test" / "metrics.json", {"acc": acc, "aua": aua})
    if ood is not None:
        runs.write_json_atomic(runs.eval_dir(run, "books", "test") / "metrics.json", {"accuracy": ood})
    if lmax is not None:
        runs.write_json_atomic(run / "robustness" / "banking77.test.json", {"median_delta_loss": lmax})
    runs.write_json_atomic(run / runs.METRICS, {"task": "banking77", "splits": {"test": {"accuracy": acc}}})
    runs.write_json_atomic(run / "cell.json", {"task_label": task_label, "method_label": label or method})
    return run


SLOTS = {(0, 1): 10, (2, 0): 8, (1, 2): 2}
"""Examples of each (gold, confusable label): every run of a task sees the same golds in the same order."""


def predictions(right: int, errors: dict[tuple[int, int], int]) -> list[tuple[int, int]]:
    """``right`` examples per label predicted right, then the :data:`SLOTS` examples, ``errors[pair]`` of
    them predicted as the pair's wrong label and the rest right."""
    out = [(g, g) for g in range(3) for _ in range(right)]
    return out + [(g, p if i < errors.get((g, p), 0) else g) for (g, p), n in SLOTS.items() for i in range(n)]


STANDARD = {(0, 1): 10, (2, 0): 5, (1, 2): 1}


# ------------------------------------------------------------------------------ diag/flip_rate
def test_flip_rate_is_the_share_of_changed_argmax():
    clean = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    shifted = torch.tensor([[0.0, 2.0], [0.0, 2.0], [1.0, 0.5], [0.0, 1.0]])
    assert output_shift(clean, shifted, regression=False)["diag/flip_rate"] == 0.25
    assert "diag/flip_rate" not in output_shift(clean[:, :1], shifted[:, :1], regression=True)


def test_flip_rate_in_a_training_step():
    tiny, *_ = _diag_step("vat", adv_init_scale=0.0, adv_epsilon=1e-12, adv_step_size=1e-12, adv_diagnostics_every=1)
    assert tiny.metrics["diag/flip_rate"] == 0.0
    big, *_ = _diag_step("vat", num_labels=3, adv_init_scale=50.0, adv_epsilon=50.0, adv_diagnostics_every=1)
    assert 0.0 < big.metrics["diag/flip_rate"] <= 1.0


# ------------------------------------------------------------------------------ cross-seed test
def test_seed_randomization_exact_values():
    assert seed_randomization([0.8, 0.8, 0.8], [0.9, 0.91, 0.92]) == 0.25  # 3 seeds: the floor 2/8
    assert seed_randomization([0.0] * 6, [1, 2, 3, 4, 5, 6]) == 2 / 64
    assert seed_randomization([0.5, 0.5], [0.5, 0.5]) == 1.0
    assert seed_randomization([0.0, 0.0, 0.0], [1.0, -1.0, 0.5]) == 1.0  # |mean| 1/6: every pattern >= except 2
    assert seed_randomization([0.0] * 20, [1.0] * 20) == 1 / 10001  # sampled above 16 seeds: (0 + 1) / (n + 1)


def test_seed_randomization_rejects_unpaired_lists():
    with pytest.raises(UsageError, match=r"equally long, non-empty lists, got \(2,\) and \(3,\)"):
        seed_randomization([1, 2], [1, 2, 3])


# ------------------------------------------------------------------------------ records + tables
def test_top_confused_pairs_order_and_no_empty_cells():
    m = [[9, 4, 0], [4, 9, 1], [7, 0, 9]]
    assert top_confused_pairs(m, 2) == [(2, 0), (0, 1)]
    assert top_confused_pairs(m, 10) == [(2, 0), (0, 1), (1, 0), (1, 2)]


def test_mechanism_table_reads_diag_and_gives_a_verdict(tmp_path):
    moved = [{"diag/sym_kl": 0.2, "diag/abs_dlogit": 0.5, "diag/flip_rate": f} for f in (0.0, 0.04, 0.06)]
    still = [{"diag/sym_kl": 1e-9, "diag/abs_dlogit": 1e-5, "diag/flip_rate": 0.0, "diag/target_gain": 1e-6}] * 2
    make_run(tmp_path, "b", "standard", 1, predictions(10, STANDARD))
    make_run(tmp_path, "b", "vat", 1, predictions(10, STANDARD), label="vat-rel1", diag=moved)
    make_run(tmp_path, "b", "tat", 1, predictions(10, STANDARD), diag=[*still, {"diag/flip_rate": math.nan}])
    records = collect_runs(tmp_path)
    assert records[1].diagnostics["diag/flip_rate"] == [0.0, 0.0]  # NaN dropped, non-diag keys ignored
    table = mechanism_table(records).splitlines()
    assert len(table) == 4 and "standard" not in "\n".join(table)
    assert table[2].startswith("| b | tat | 1 | 2 | 1e-09 | 1e-05 | 0 | 1e-06 | no |")
    assert table[3].startswith("| b | vat-rel1 | 1 | 3 | 0.2 | 0.5 | 0.04 | – | yes: flips labels |")


def test_confused_pairs_count_the_errors_each_method_removes(tmp_path):
    for seed in (1, 2):
        make_run(tmp_path, "b", "standard", seed, predictions(10, STANDARD))
        make_run(tmp_path, "b", "tat", seed, predictions(10, {(0, 1): 4, (2, 0): 5 + seed, (1, 2): 1}))
    [(title, table)] = confused_pairs_tables(collect_runs(tmp_path), k=2)
    lines = table.splitlines()
    assert title == "b (test)"
    assert lines[0] == "| gold → predicted | standard errors (2 seeds) | removed by tat (2) |"
    assert lines[2:] == [
        "| card → cash | 10.0 | +6.0 |",
        "| fee → card | 5.0 | -1.5 |",
        "| top-2 total | 15.0 | +4.5 |",
    ]


def test_learns_needs_a_significant_margin_over_the_constant_predictor(tmp_path):
    constant = [(g, 0) for g in (0, 0, 0, 0, 1, 2) * 20]  # always the majority label: accuracy = its share
    make_run(tmp_path, "flat", "standard", 1, constant)
    make_run(tmp_path, "ok", "standard", 1, predictions(30, STANDARD))
    flat, ok = sorted(collect_runs(tmp_path), key=lambda r: r.task_label)
    assert learns([flat]) == (False, "seed 1: acc 66.7 vs constant 66.7, p 1")
    assert learns([ok])[0] is True


def test_learns_on_regression_needs_a_significant_correlation(tmp_path):
    from tests.unit.test_report import fabricate_run

    run = fabricate_run(tmp_path, "stsb", "standard", 1, 0.9, task="stsb", regression=True)  # pred = gold ± 1
    flat = fabricate_run(tmp_path, "stsb-flat", "standard", 1, 0.0, task="stsb", regression=True)
    rows = runs.read_jsonl(runs.eval_dir(flat, "stsb", "validation") / "predictions.jsonl")
    runs.write_jsonl_atomic(runs.eval_dir(flat, "stsb", "validation") / "predictions.jsonl",
                            [{**r, "pred": 2.5} for r in rows])  # fmt: skip
    good, const = sorted(collect_runs(tmp_path), key=lambda r: r.task_label)
    assert good.path == run and learns([good])[0] is True and learns([good])[1].startswith("seed 1: r 0.")
    assert learns([const]) == (False, "seed 1: r 0.00, p 1")


def test_evidence_table_pairs_by_seed_and_drops_tasks_that_do_not_learn(tmp_path):
    for seed in (1, 2, 3):
        make_run(tmp_path, "b", "standard", seed, predictions(30, STANDARD), aua=0.2, ood=0.7, lmax=0.5, step_s=1.0)
        better = predictions(30, {(0, 1): 10 - seed, (2, 0): 5, (1, 2): 1})
        make_run(tmp_path, "b", "tat", seed, better, aua=0.2 + 0.01 * seed, step_s=2.0 + seed)
        make_run(tmp_path, "flat", "standard", seed, [(g, 0) for g in (0, 0, 1) * 30])
        make_run(tmp_path, "flat", "tat", seed, [(g, 0) for g in (0, 0, 1) * 30])
    overhead = {"rows": [{"method": "standard", "mem_ratio": 1.0}, {"method": "tat", "mem_ratio": 1.8}]}
    table, notes = evidence_table(collect_runs(tmp_path), [overhead])
    rows = table.splitlines()[2:]
    # accuracy gains of 1, 2, 3 examples of 110: median 2/110 = +1.82 points; 3 seeds: cross-seed p = 0.25
    assert rows == [
        "| b (accuracy) | tat | +1.82 (3; p 0.25) | +2.00 (3; p 0.25) | – | – | ×4.00 (3) | ×1.80 |"
    ]  # step ratios 3, 4, 5
    assert len(notes) == 1 and notes[0].startswith("flat: left out, `standard` does not learn it (seed 1: acc 66.7")


def test_evidence_step_ratio_is_the_summarys_cpu_ratio_marked_when_the_loads_differed(tmp_path):
    """The evidence table prints the same step-time ratio as the summary: CPU time where both runs have it
    (here wall ratio 2, CPU ratio 3), with the mark when the two runs' machine loads differed."""
    from advtune.report import RATIO_MARK

    def machine(run, cpu_s, load):
        stats = runs.read_json(run / "train_stats.json")
        stats |= {
            "step_cpu_time_median_s": cpu_s,
            "machine": {"threads": 1, "usable_cpus": 2, "load_start": [load] * 3, "load_end": [load] * 3},
        }
        runs.write_json_atomic(run / "train_stats.json", stats)  # fmt: skip

    base = make_run(tmp_path, "b", "standard", 1, predictions(30, STANDARD), step_s=1.0)
    meth = make_run(tmp_path, "b", "tat", 1, predictions(30, STANDARD), step_s=2.0)
    machine(base, 0.5, 1.0)
    machine(meth, 1.5, 1.0)
    assert evidence_table(collect_runs(tmp_path))[0].splitlines()[2].split(" | ")[-2] == "×3.00 (1)"
    machine(meth, 1.5, 3.0)  # one more busy core during the method's run
    assert evidence_table(collect_runs(tmp_path))[0].splitlines()[2].split(" | ")[-2] == f"×3.00{RATIO_MARK} (1)"


def test_tat_against_vat_pairs_runs_of_the_same_settings(tmp_path):
    for seed in (1, 2):
        make_run(tmp_path, "b", "vat", seed, predictions(30, STANDARD))
        make_run(tmp_path, "b", "vat", seed, predictions(30, STANDARD), label="vat-cpu")
        make_run(tmp_path, "b", "tat", seed, predictions(30, STANDARD))  # identical: McNemar p = 1
        make_run(tmp_path, "b", "tat", seed, predictions(30, {(2, 0): 5}), label="tat-cpu")  # 11 fewer errors
    make_run(tmp_path, "b", "tat", 1, predictions(30, STANDARD), label="tat-rel1")  # no vat-rel1: no row
    rows = versus_table(collect_runs(tmp_path)).splitlines()[2:]
    assert rows[0] == "| b | tat vs vat | +0.00 (2; p 1) | seed 1: 1, seed 2: 1 |"
    assert rows[1].startswith(
        "| b | tat-cpu vs vat-cpu | +10.00 (2; p 0.5) | seed 1: 0.00098, seed 2: 0.00098 |"
    )  # 2 · 2^-11
    assert len(rows) == 2


def test_confusion_difference_figure_is_a_png_only_with_a_baseline(tmp_path):
    make_run(tmp_path, "b", "tat", 1, predictions(10, {(0, 1): 4}))
    assert confusion_differences(collect_runs(tmp_path), tmp_path / "fig") == []
    make_run(tmp_path, "b", "standard", 1, predictions(10, STANDARD))
    [(title, path)] = confusion_differences(collect_runs(tmp_path), tmp_path / "fig")
    assert title == "Confusion difference vs standard: b (test)"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_report_has_the_evidence_sections(tmp_path):
    for seed in (1, 2):
        make_run(tmp_path, "b", "standard", seed, predictions(30, STANDARD))
        make_run(tmp_path, "b", "tat", seed, predictions(30, {(0, 1): 2}), diag=[{"diag/flip_rate": 0.2}])
    text = build_report(tmp_path, plots=False).read_text()
    for title in ("## Evidence: change against `standard`", "## Mechanism: did δ change the model's outputs?",
                  "## Most-confused label pairs of `standard` (TAT Figure 1)"):  # fmt: skip
        assert title in text
    # 14 fewer errors of 110 examples in both seeds: exact McNemar p = 2^-13 per seed (*), cross-seed p = 2/4
    assert "| b (accuracy) | tat | +12.73* (2; p 0.5) |" in text


# ------------------------------------------------------------------------------ suites
def test_radius_sweep_and_manyclass_grids(tmp_path):
    sweep, _ = build_grid(get_suite("radius-sweep"), tmp_path)
    labels = sorted({c.method_label for c in sweep})
    assert len(sweep) == 1 + 2 * (1 + len(SWEEP_RADII)) + 4
    vat1 = next(c for c in sweep if c.method_label == "vat-rel1")
    assert vat1.method_overrides == {
        "adv_diagnostics_every": 5, "adv_radius_unit": "relative", "adv_init_scale": 1.0, "adv_epsilon": 1.0,
        "adv_step_size": 100.0,
    }  # fmt: skip
    assert "tat-rel0.001" in labels and "freelb-rel2" in labels
    many, _ = build_grid(get_suite("tat-manyclass"), tmp_path)
    assert {c.task.label for c in many} == {"banking77-len32", "hwu64-len32", "clinc150-len32", "stsb-1k"}
    assert {c.seed for c in many} == {1, 2, 3} and len(many) == 4 * 7 * 3
    tat_cpu = next(c for c in many if c.method_label == "tat-cpu")
    assert tat_cpu.method_overrides["adv_epsilon"] == CPU_ENCODER_RADIUS
    assert tat_cpu.method_overrides["adv_regression_bins"] == 10
    assert all(c.train_kwargs()["max_length"] == 32 for c in many if c.task.task != "stsb")
    assert "chosen by radius-sweep" in get_suite("tat-manyclass").description
    assert tat_cpu.attack == {"n": 200, "sample_seed": 0}  # the intent test sets are sorted by label
