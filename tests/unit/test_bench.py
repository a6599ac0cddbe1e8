"""The grid runner: resume after an interruption recomputes only unfinished cells; suites; skipped methods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advtune import runs
from advtune.bench.runner import CELL_FILE, build_grid, run_grid
from advtune.bench.suites import SUITES, Suite, TaskSpec, Variant, get_suite
from advtune.errors import UsageError

SUITE = Suite(
    name="toy",
    description="test grid",
    tasks=(TaskSpec("sst2", "sst2-tiny", {"max_train_samples": 8}, "8 examples"),),
    methods=("standard", "fgm", "freelb"),
    seeds=(1, 2),
    training={"num_train_epochs": 1, "learning_rate": 1e-3},
    attack={"n": 5},
)
REGISTERED = ["standard", "fgm", "freelb"]


class FakeTrain:
    """Writes a run folder in the documented layout; optionally dies mid-run on the k-th call."""

    def __init__(self, die_on: int | None = None) -> None:
        self.calls: list[str] = []
        self.die_on = die_on

    def __call__(self, *, task, method, output_dir, seed, **kwargs):
        out = Path(output_dir)
        self.calls.append(f"{out.parent.parent.name}/{method}/seed{seed}")
        out.mkdir(parents=True, exist_ok=True)
        runs.write_json_atomic(out / runs.RUN_CONFIG, {"task": {"name": task}, "method": {"name": method}})
        (out / "partial-weights.bin").write_bytes(b"x")
        if self.die_on is not None and len(self.calls) == self.die_on:
            raise KeyboardInterrupt  # killed after the folder was started, before metrics.json
        runs.write_json_atomic(out / runs.METRICS, {"task": task, "splits": {"validation": {"accuracy": 0.5}}})
        return out


class FakeAttack:
    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, run_dir: Path, task: str, attack: dict) -> None:
        self.calls.append(run_dir)
        runs.write_json_atomic(run_dir / "attack" / f"{task}.validation" / "metrics.json", {"acc": 0.5, "aua": 0.2})


def test_grid_resumes_only_unfinished_cells(tmp_path):
    cells, notes = build_grid(SUITE, tmp_path, registered=REGISTERED)
    assert len(cells) == 6 and not notes
    first = FakeTrain(die_on=3)
    attack = FakeAttack()
    with pytest.raises(KeyboardInterrupt):
        run_grid(cells, train_fn=first, attack_fn=attack, progress=False)
    assert len(first.calls) == 3
    finished = [c for c in cells if c.is_trained()]
    interrupted = cells[2]
    assert len(finished) == 2 and (interrupted.run_dir / "partial-weights.bin").exists()
    assert len(attack.calls) == 2  # the two finished runs were attacked before the kill
    stamp = {c.name: (c.run_dir / runs.METRICS).stat().st_mtime_ns for c in finished}

    second = FakeTrain()
    result = run_grid(cells, train_fn=second, attack_fn=attack, progress=False)
    # exactly the 4 unfinished cells (the interrupted one included) are trained, in grid order
    assert second.calls == [c.name for c in cells[2:]]
    assert sorted(result.trained) == sorted(c.name for c in cells[2:])
    assert sorted(result.skipped) == sorted(c.name for c in finished)
    assert len(attack.calls) == 6  # 2 before + 4 new; finished runs are not attacked again
    for c in finished:  # finished runs untouched
        assert (c.run_dir / runs.METRICS).stat().st_mtime_ns == stamp[c.name]
    # every cell is finished and records its configuration
    for c in cells:
        assert c.is_done()
        rec = json.loads((c.run_dir / CELL_FILE).read_text())
        assert rec["train_kwargs"]["seed"] == c.seed and rec["train_kwargs"]["max_train_samples"] == 8
        assert rec["data_note"] == "8 examples"

    third = FakeTrain()
    result = run_grid(cells, train_fn=third, attack_fn=attack, progress=False)
    assert third.calls == [] and len(result.skipped) == 6 and len(attack.calls) == 6


def test_interrupted_folder_is_deleted_before_rerun(tmp_path):
    cells, _ = build_grid(SUITE, tmp_path, registered=REGISTERED, attack=False)
    cell = cells[0]
    cell.run_dir.mkdir(parents=True)
    (cell.run_dir / "stale-checkpoint.bin").write_bytes(b"old")
    run_grid(cells[:1], train_fn=FakeTrain(), progress=False)
    assert cell.is_trained() and not (cell.run_dir / "stale-checkpoint.bin").exists()


def test_trained_but_unattacked_run_is_only_attacked(tmp_path):
    cells, _ = build_grid(SUITE, tmp_path, registered=REGISTERED)
    train, attack = FakeTrain(), FakeAttack()
    run_grid(
        cells[:1], train_fn=train, attack_fn=lambda *a: (_ for _ in ()).throw(RuntimeError("boom")), progress=False
    )
    assert cells[0].is_trained() and not cells[0].is_attacked()
    run_grid(cells[:1], train_fn=train, attack_fn=attack, progress=False)
    assert len(train.calls) == 1 and len(attack.calls) == 1


def test_transfer_evaluations_run_once_and_resume(tmp_path):
    spec = TaskSpec("sst2", "sst2-tiny", {"max_train_samples": 8}, "8 examples", transfer=("books", "dvd"),
                    transfer_samples=50)  # fmt: skip
    cells, _ = build_grid(SUITE.replace(tasks=(spec,), seeds=(1,)), tmp_path, registered=REGISTERED, attack=False)
    calls: list[tuple[str, str, int | None]] = []

    def fake_eval(run_dir: Path, task: str, n: int | None) -> None:
        calls.append((run_dir.parent.name, task, n))
        if task == "dvd" and len(calls) == 2:
            raise RuntimeError("reader crashed")  # the books result must survive and not be redone
        runs.write_json_atomic(runs.eval_dir(run_dir, task, "test") / "metrics.json", {"task": task, "accuracy": 0.7})

    train = FakeTrain()
    result = run_grid(cells, train_fn=train, eval_fn=fake_eval, progress=False, log=lambda s: None)
    assert len(result.failed) == 1 and not cells[0].is_done() and cells[0].pending_transfer() == ["dvd"]
    run_grid(cells, train_fn=train, eval_fn=fake_eval, progress=False, log=lambda s: None)
    assert all(c.is_done() for c in cells)
    assert len(train.calls) == 3  # trained once per method, never again for the transfer step
    assert [t for _, t, _ in calls] == ["books", "dvd", "books", "dvd", "books", "dvd", "dvd"]
    assert {n for _, _, n in calls} == {50}
    rec = json.loads((cells[0].run_dir / CELL_FILE).read_text())
    assert rec["transfer"] == ["books", "dvd"] and "transfer_wall_s" in rec["timings"]


def test_failing_cell_is_reported_and_grid_goes_on(tmp_path):
    cells, _ = build_grid(SUITE, tmp_path, registered=REGISTERED, attack=False)

    def flaky(**kw):
        if kw["method"] == "fgm":
            raise ValueError("diverged")
        return FakeTrain()(**kw)

    result = run_grid(cells, train_fn=flaky, progress=False, log=lambda s: None)
    assert len(result.failed) == 2 and all("diverged" in why for _, why in result.failed)
    assert len(result.trained) == 4


def test_unregistered_methods_are_skipped_with_a_note(tmp_path):
    cells, notes = build_grid(SUITE, tmp_path, registered=["standard", "freelb"])
    assert {c.method for c in cells} == {"standard", "freelb"}
    assert len(notes) == 1 and "fgm" in notes[0]
    with pytest.raises(UsageError):
        build_grid(SUITE, tmp_path, methods="nope", registered=REGISTERED)


def test_filters_variants_and_budget_precedence(tmp_path):
    suite = SUITE.replace(
        variants={"freelb": (Variant("e2", training={"num_train_epochs": 2}),)},
        method_overrides={"fgm": {"adv_epsilon": 2}},
    )
    cells, _ = build_grid(
        suite,
        tmp_path,
        methods="fgm,freelb",
        seeds="3",
        tasks="sst2",
        registered=REGISTERED,
        training={"learning_rate": 5e-5},
    )
    names = [c.name for c in cells]
    assert names == ["sst2-tiny/fgm/seed3", "sst2-tiny/freelb/seed3", "sst2-tiny/freelb-e2/seed3"]
    kw = {c.name: c.train_kwargs() for c in cells}
    assert kw["sst2-tiny/fgm/seed3"]["method_overrides"] == {"adv_epsilon": 2}
    assert kw["sst2-tiny/freelb-e2/seed3"]["num_train_epochs"] == 2
    assert kw["sst2-tiny/freelb/seed3"]["num_train_epochs"] == 1
    assert all(k["learning_rate"] == 5e-5 and k["seed"] == 3 for k in kw.values())
    assert cells[0].record()["data_note"] == "8 examples"  # the learning rate is not a data change
    cells, _ = build_grid(suite, tmp_path, registered=REGISTERED, training={"max_train_samples": 4})
    assert cells[0].train_kwargs()["max_train_samples"] == 4
    assert cells[0].record()["data_note"] == "8 examples; max_train_samples=4 (overridden)"  # the report says so
    # a per-method learning rate sits between the suite's budget and the variant's / command line's
    per_method = suite.replace(method_training={"fgm": {"learning_rate": 1e-3, "num_train_epochs": 5}})
    cells, _ = build_grid(per_method, tmp_path, methods="fgm,freelb", seeds="1", registered=REGISTERED)
    kw = {c.method_label: c.train_kwargs() for c in cells}
    assert kw["fgm"]["learning_rate"] == 1e-3 and kw["freelb"]["learning_rate"] == suite.training["learning_rate"]
    assert kw["fgm"]["num_train_epochs"] == 5 and kw["freelb-e2"]["num_train_epochs"] == 2
    cells, _ = build_grid(per_method, tmp_path, methods="fgm", registered=REGISTERED, training={"learning_rate": 2e-5})
    assert cells[0].train_kwargs()["learning_rate"] == 2e-5
    cells, _ = build_grid(suite, tmp_path, methods="freelb", seeds="1", registered=REGISTERED, variants="none")
    assert [c.name for c in cells] == ["sst2-tiny/freelb/seed1"]
    cells, _ = build_grid(suite, tmp_path, methods="freelb", seeds="1", registered=REGISTERED, variants="e2")
    assert [c.method_label for c in cells] == ["freelb", "freelb-e2"]
    with pytest.raises(UsageError, match="e2"):
        build_grid(suite, tmp_path, registered=REGISTERED, variants="e9")
    # METHOD-VARIANT picks the variant's cells alone; an unknown variant is a skipped method
    cells, notes = build_grid(suite, tmp_path, methods="fgm,freelb-e2,freelb-e9", seeds="1", registered=REGISTERED)
    assert [c.method_label for c in cells] == ["fgm", "freelb-e2"] and "freelb-e9" in notes[0]
    assert cells[1].train_kwargs()["num_train_epochs"] == 2
    two = suite.replace(tasks=(TaskSpec("sst2", "sst2"), TaskSpec("sst2", "sst2-half")), variants={})
    pick = lambda t: {c.task.label for c in build_grid(two, tmp_path, tasks=t, registered=REGISTERED)[0]}  # noqa: E731
    assert pick("sst2") == {"sst2"} and pick("sst2-half") == {"sst2-half"}  # an exact label wins
    assert {c.task.label for c in build_grid(SUITE, tmp_path, tasks="sst2", registered=REGISTERED)[0]} == {"sst2-tiny"}
    with pytest.raises(UsageError):
        build_grid(suite, tmp_path, tasks="mnli", registered=REGISTERED)
    with pytest.raises(UsageError):
        build_grid(suite, tmp_path, seeds="a,b", registered=REGISTERED)


def test_backbone_per_task_and_a_method_that_leaves_the_adapter_out(tmp_path):
    """A suite comparing backbones lists a task per backbone; a method's own training arguments come after
    the task's (PEAFT drops a task's LoRA adapter); the command line's --model wins over all."""
    suite = SUITE.replace(
        tasks=(
            TaskSpec("sst2", "sst2-a", {"max_train_samples": 8}),
            TaskSpec(
                "sst2",
                "sst2-b-lora",
                {"peft": "lora", "learning_rate": 5e-4},
                model="other-model",
                method_training={"fgm": {"learning_rate": 1e-3}},
            ),
        ),
        method_training={"fgm": {"peft": None, "learning_rate": 3e-3}},
        variants={},
    )
    cells, _ = build_grid(suite, tmp_path, methods="fgm,freelb", seeds="1", registered=REGISTERED)
    kw = {c.name: c.train_kwargs() for c in cells}
    assert kw["sst2-a/freelb/seed1"]["model"] == suite.model and "peft" not in kw["sst2-a/freelb/seed1"]
    assert kw["sst2-b-lora/freelb/seed1"]["model"] == "other-model"
    assert kw["sst2-b-lora/freelb/seed1"]["peft"] == "lora" and kw["sst2-b-lora/freelb/seed1"]["learning_rate"] == 5e-4
    assert kw["sst2-b-lora/fgm/seed1"]["peft"] is None and kw["sst2-b-lora/fgm/seed1"]["learning_rate"] == 1e-3
    assert kw["sst2-a/fgm/seed1"]["learning_rate"] == 3e-3  # the task's own rate for the method stays on its task
    cells, _ = build_grid(suite, tmp_path, methods="freelb", seeds="1", registered=REGISTERED, model="cli-model")
    assert {c.train_kwargs()["model"] for c in cells} == {"cli-model"}


def test_suites_are_declared():
    assert {"demo", "glue-small", "intent", "paper", "overhead"} <= set(SUITES)
    demo = get_suite("demo")
    assert {"standard", "freelb", "cat"} <= set(demo.methods) and demo.attack and demo.attack["n"] > 0
    for suite in SUITES.values():
        for spec in suite.tasks:
            assert spec.note and spec.note != "full data" or suite.name == "paper"
    assert any(t.args.get("train_fraction_per_label") == 0.5 for t in get_suite("intent").tasks)
    assert len(get_suite("glue-small").seeds) == 3
    with pytest.raises(UsageError):
        get_suite("nope")


def test_bench_cli_dry_run(tmp_path, capsys):
    from advtune.cli import main

    assert main(["bench", "--suite", "demo", "--out", str(tmp_path), "--dry-run", "--methods", "standard,nope"]) == 0
    out = capsys.readouterr().out
    assert "sst2-2k/standard/seed1" in out and "to run" in out and "nope" in out
    assert main(["bench", "--suite", "nope"]) == 2


def test_bench_set_values_are_typed_and_checked(capsys):
    """``--set learning_rate=1e-4`` is a float (YAML 1.1 would keep "1e-4" a string and every cell would
    fail inside TrainingArguments); an unknown key is refused before any cell starts."""
    from advtune.cli import main
    from advtune.commands.bench import _parse_set

    got = _parse_set(["learning_rate=1e-4", "num_train_epochs=3", "bf16=true", "report_to=none"])
    assert got == {"learning_rate": 1e-4, "num_train_epochs": 3, "bf16": True, "report_to": "none"}
    assert isinstance(got["learning_rate"], float) and isinstance(got["num_train_epochs"], int)
    assert main(["bench", "--suite", "demo", "--dry-run", "--set", "learnin_rate=1e-4"]) == 2
    assert _parse_set(["peft=lora", "peft_rank=4"]) == {"peft": "lora", "peft_rank": 4}
    assert (
        main(["bench", "--suite", "demo", "--dry-run", "--set", "peft=lora", "--set", "peft_rank=4"]) == 0
    )  # adapter keys
    assert "learnin_rate" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("os").environ.get("ADVTUNE_DATA_DIR"), reason="ADVTUNE_DATA_DIR is not set")
def test_grid_through_the_real_pipeline_then_report(tmp_path):
    """A 2-cell grid of tiny-model SST-2 runs through advtune.pipeline.train, rerun (nothing redone), reported."""
    from advtune.records import collect_runs
    from advtune.report import build_report
    from advtune.testing import tiny_model, tiny_tokenizer

    model_dir = tmp_path / "tiny"
    tiny_model(num_labels=2, seed=0).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    suite = Suite(
        name="tiny",
        description="tiny",
        methods=("standard", "fgm"),
        seeds=(1,),
        model=str(model_dir),
        tasks=(
            TaskSpec(
                "sst2",
                "sst2-32",
                {"max_train_samples": 32, "max_eval_samples": 24, "max_length": 24},
                "32 train examples",
            ),
        ),
        training={
            "num_train_epochs": 1,
            "per_device_train_batch_size": 16,
            "save_strategy": "no",
            "use_cpu": True,
            "disable_tqdm": True,
            "learning_rate": 1e-3,
        },
    )
    cells, _ = build_grid(suite, tmp_path / "out", registered=["standard", "fgm"])
    first = run_grid(cells, progress=False, stop_on_error=True)
    assert len(first.trained) == 2
    second = run_grid(cells, progress=False)
    assert second.trained == [] and len(second.skipped) == 2
    records = collect_runs(tmp_path / "out")
    assert {r.method_label for r in records} == {"standard", "fgm"} and all(r.task_label == "sst2-32" for r in records)
    md = build_report(tmp_path / "out").read_text()
    for r in records:
        assert f"{r.splits['validation']['accuracy'] * 100:.2f}" in md
    assert "32 train examples" in md
