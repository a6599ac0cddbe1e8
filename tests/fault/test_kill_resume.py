"""``kill -9`` a real ``advtune`` process at the worst moments; rerunning must end where an uninterrupted run ends.

Kill points come from the ``ADVTUNE_FAULT`` test hook (:mod:`advtune.faults`: the process SIGKILLs
itself at a named point, which a timer could not hit reliably) except the grid, which is killed from
outside once its second cell has started. Every comparison is against an uninterrupted run of the
same seed: evaluation metrics, per-example predictions and the whole-run ``train_loss``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advtune.testing import tiny_model, tiny_tokenizer
from tests.conftest import NEG, POS, toy_sentiment
from tests.fault import environment

pytestmark = pytest.mark.fault

TRAIN = (
    "train --task sst2 --data-dir {w}/data --model {w}/tiny --num-train-epochs 2 --per-device-train-batch-size 8 "
    "--learning-rate 3e-3 --seed 7 --save-strategy steps --save-steps 4 --logging-steps 3 --report-to none "
    "--disable-tqdm true --output-dir {out}"
)
ATTACK = "attack --run {w}/ref --data-dir {w}/data --synonyms {w}/syn.txt --similarity-model {w}/tiny --no-pos --n 40"
PREDICTIONS = "eval/sst2.validation/predictions.jsonl"


def advtune(args: str, w: Path, fault: str | None = None, **fmt) -> subprocess.CompletedProcess:
    env = environment(w)
    if fault:
        env["ADVTUNE_FAULT"] = fault
    argv = args.format(w=w, **fmt).split()
    return subprocess.run([sys.executable, "-m", "advtune.cli", *argv], capture_output=True, text=True, env=env)


def in_process(args: str, w: Path, **fmt) -> None:
    """An uninterrupted reference run, in this process (saves the seconds of a fresh interpreter)."""
    from advtune.cli import main

    old = os.environ.get("ADVTUNE_DATA_DIR")
    os.environ["ADVTUNE_DATA_DIR"] = str(w / "data")
    try:
        assert main(args.format(w=w, **fmt).split()) == 0
    finally:
        if old is None:
            os.environ.pop("ADVTUNE_DATA_DIR")
        else:
            os.environ["ADVTUNE_DATA_DIR"] = old


def killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def read(path: Path):
    return json.loads(path.read_text())


def assert_same_run(run: Path, ref: Path) -> None:
    assert read(run / "metrics.json") == read(ref / "metrics.json")
    assert (run / PREDICTIONS).read_text() == (ref / PREDICTIONS).read_text()
    got, want = read(run / "train_stats.json"), read(ref / "train_stats.json")
    assert got["global_step"] == want["global_step"]
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-9)
    assert not list(run.glob("checkpoint-*")) and not list(run.glob(".partial-*"))


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("fault")
    tiny_model(num_labels=2).save_pretrained(w / "tiny")  # dropout on: the RNG state must be restored too
    tiny_tokenizer().save_pretrained(w / "tiny")
    for name, n, seed in (("train.tsv", 64, 0), ("dev.tsv", 40, 1)):
        texts, labels = toy_sentiment(n, seed)
        (w / "data" / "sst2").mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels))
        (w / "data" / "sst2" / name).write_text("sentence\tlabel\n" + rows)
    (w / "syn.txt").write_text("".join(f"{p} {q}\n" for p, q in zip(POS, NEG)) + "movie film\nplot story\n")
    in_process(TRAIN, w, out=w / "ref")
    return w


def test_killed_mid_epoch_resumes_to_the_same_run(w):
    killed(advtune(TRAIN, w, "step@6", out=w / "mid"))
    assert not (w / "mid" / "metrics.json").exists() and (w / "mid" / "checkpoint-4").is_dir()
    ok(advtune(TRAIN + " --resume", w, out=w / "mid"))
    assert_same_run(w / "mid", w / "ref")
    assert read(w / "mid" / "train_stats.json")["resumed_from_step"] == 4


def test_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(w):
    killed(advtune(TRAIN, w, "checkpoint_weights@3", out=w / "ckpt"))
    partial = w / "ckpt" / "checkpoint-12"
    assert (partial / "model.safetensors").is_file() and not (partial / "optimizer.pt").exists()
    proc = ok(advtune(TRAIN + " --resume", w, out=w / "ckpt"))
    warnings = [line for line in proc.stderr.splitlines() if "advtune: warning" in line]
    assert len(warnings) == 1 and "checkpoint-12 (missing optimizer.pt)" in warnings[0], proc.stderr[-2000:]
    assert "resuming from checkpoint-8" in warnings[0]
    assert_same_run(w / "ckpt", w / "ref")


def test_killed_while_writing_metrics_json_is_not_finished_and_resumes(w):
    killed(advtune(TRAIN, w, "write:metrics.json@2", out=w / "met"))  # @1: the split's, @2: the run's
    assert (w / "met" / "model.safetensors").is_file() and not (w / "met" / "metrics.json").exists()
    assert list((w / "met").glob(".metrics.json.*")), "killed between writing the temporary file and renaming it"
    ok(advtune(TRAIN + " --resume", w, out=w / "met"))
    assert_same_run(w / "met", w / "ref")
    assert not list((w / "met").rglob(".*.json*")), "temporary files of the killed run must not stay behind"


def test_killed_overwrite_loses_nothing(w, capsys):
    shutil.copytree(w / "ref", w / "old")
    before = {p.relative_to(w / "old"): p.read_bytes() for p in (w / "old").rglob("*") if p.is_file()}
    killed(advtune(TRAIN + " --overwrite --learning-rate 1e-3", w, "step@5", out=w / "old"))
    assert (w / ".old.replaced" / "metrics.json").is_file()  # set aside, not deleted
    from advtune.cli import main

    code = main(TRAIN.format(w=w, out=w / "old").split())  # any later run on the folder first puts the old run back
    err = capsys.readouterr().err
    assert code == 2 and "restored" in err and "--overwrite" in err.splitlines()[-1], err
    after = {p.relative_to(w / "old"): p.read_bytes() for p in (w / "old").rglob("*") if p.is_file()}
    assert after == before and not (w / ".old.replaced").exists()


def test_killed_attack_continues_at_the_first_missing_example(w):
    in_process(ATTACK + " --out {w}/att_ref", w)
    killed(advtune(ATTACK + " --out {w}/att", w, "attack_example@15"))
    assert len((w / "att" / "adversarial.jsonl").read_text().splitlines()) == 15
    ok(advtune(ATTACK + " --out {w}/att", w))
    got, want = read(w / "att" / "metrics.json"), read(w / "att_ref" / "metrics.json")
    assert got.pop("resumed_examples") == 15 and want.pop("resumed_examples") == 0
    for key in ("wall_time_per_example_s", "machine"):  # timings and load of this process
        got.pop(key), want.pop(key)
    assert got == want and got["n"] == 40

    def rows(p):
        return [{k: v for k, v in read_line.items() if k != "seconds"} for read_line in map(json.loads, p.open())]

    assert rows(w / "att" / "adversarial.jsonl") == rows(w / "att_ref" / "adversarial.jsonl")


BENCH = (
    "bench --suite demo --model {w}/tiny --methods standard --seeds 1,2 --no-attack --no-report "
    "--set max_train_samples=32 --set max_eval_samples=16 --set per_device_train_batch_size=8 --out {out}"
)


def test_killed_grid_keeps_finished_cells_and_redoes_the_half_done_one(w):
    in_process(BENCH, w, out=w / "grid_ref")
    argv = BENCH.format(w=w, out=w / "grid").split()
    cmd = [sys.executable, "-m", "advtune.cli", *argv]
    proc = subprocess.Popen(cmd, env=environment(w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = w / "grid" / "sst2-2k" / "standard" / "seed2" / "run_config.json"
    deadline = time.time() + 120
    while not second.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = w / "grid" / "sst2-2k" / "standard" / "seed1"
    assert (first / "metrics.json").is_file() and not (second.parent / "metrics.json").exists()
    kept = first.joinpath("model.safetensors").stat().st_mtime_ns
    out = ok(advtune(BENCH, w, out=w / "grid")).stdout
    assert "1 trained" in out and "1 already done" in out, out
    assert first.joinpath("model.safetensors").stat().st_mtime_ns == kept
    for seed in ("seed1", "seed2"):
        run, ref = w / "grid" / "sst2-2k" / "standard" / seed, w / "grid_ref" / "sst2-2k" / "standard" / seed
        assert read(run / "metrics.json") == read(ref / "metrics.json")
        assert (run / PREDICTIONS).read_text() == (ref / PREDICTIONS).read_text()
