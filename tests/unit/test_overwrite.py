"""Safe --overwrite: only advtune folders are replaced, and the old one survives any failure of the new run."""

from __future__ import annotations

import pytest

from advtune import runs
from advtune.cli import main
from advtune.errors import UsageError
from tests.conftest import make_tiny_run, toy_sentiment
from tests.unit.test_reliability_corpus import tree_hash


def _old_run(path):
    path.mkdir()
    (path / runs.RUN_CONFIG).write_text('{"task": {"name": "sst2"}}\n')
    (path / runs.METRICS).write_text('{"splits": {}}\n')
    return tree_hash(path)


@pytest.mark.parametrize("error", [UsageError("bad"), RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failing_replacement_restores_the_old_folder(tmp_path, error):
    out = tmp_path / "run"
    before = _old_run(out)
    with pytest.raises(type(error)), runs.replacing(out, replace=True):
        assert not out.exists(), "the old run is moved aside before the new one starts"
        out.mkdir()
        (out / "partial.bin").write_bytes(b"half")
        raise error
    assert tree_hash(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_finished_replacement_removes_the_old_folder(tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    with runs.replacing(out, replace=True):
        out.mkdir()
        (out / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_recover_puts_back_the_old_run_after_a_kill(tmp_path, capsys):
    out = tmp_path / "run"
    before = _old_run(out)
    aside = tmp_path / ".run.replaced"
    out.rename(aside)
    out.mkdir()
    (out / runs.RUN_CONFIG).write_text("{}\n")  # the new run had started, then was killed
    runs.recover(out)
    assert tree_hash(out) == before and not aside.exists()
    assert "restored" in capsys.readouterr().err


def test_recover_keeps_a_new_run_that_finished(tmp_path):
    out = tmp_path / "run"
    _old_run(tmp_path / ".run.replaced")
    after = _old_run(out)
    runs.recover(out)
    assert tree_hash(out) == after and not (tmp_path / ".run.replaced").exists()


@pytest.mark.parametrize(
    "setup,flags,expected",
    [
        ("missing", {}, "new"),
        ("empty", {"overwrite": True}, "new"),
        ("finished", {"overwrite": True}, "replace"),
        ("unfinished", {"resume": True}, "resume"),
    ],
)
def test_check_output_modes(tmp_path, setup, flags, expected):
    out = tmp_path / "run"
    if setup != "missing":
        out.mkdir()
    if setup in ("finished", "unfinished"):
        (out / runs.RUN_CONFIG).write_text("{}\n")
    if setup == "finished":
        (out / runs.METRICS).write_text("{}\n")
    assert runs.check_output(out, **flags) == expected


@pytest.mark.parametrize(
    "setup,flags,message",
    [
        ("user", {"overwrite": True}, "advtune did not write"),
        ("user", {"resume": True}, "advtune did not write"),
        ("file", {"overwrite": True}, "is a file"),
        ("finished", {}, "pass --overwrite"),
        ("damaged", {}, "pass --resume"),  # a corrupt metrics.json does not finish a run
    ],
)
def test_check_output_refusals(tmp_path, setup, flags, message):
    out = tmp_path / "run"
    if setup == "file":
        out.write_text("x")
    else:
        out.mkdir()
        (out / ("notes.txt" if setup == "user" else runs.RUN_CONFIG)).write_text("{}\n")
        if setup in ("finished", "damaged"):
            (out / runs.METRICS).write_text("{}\n" if setup == "finished" else '{"spl')
    with pytest.raises(UsageError, match=message):
        runs.check_output(out, **flags)


@pytest.fixture
def tiny_cli(tmp_path):
    from advtune.testing import tiny_model, tiny_tokenizer

    tiny_model(num_labels=2, dropout=0.0).save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    texts, labels = toy_sentiment(16)
    (tmp_path / "train.csv").write_text("sentence,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels)))
    return (
        f"train --train-file {tmp_path}/train.csv --text-fields sentence --label-field label --model {tmp_path}/tiny "
        f"--num-train-epochs 1 --per-device-train-batch-size 8 --report-to none --disable-tqdm true"
    ).split()


def test_overwrite_that_fails_mid_training_keeps_the_finished_run(tmp_path, tiny_cli, monkeypatch):
    run = make_tiny_run(tmp_path / "run")
    before = tree_hash(run)
    from advtune.trainer import AdversarialTrainer

    def explode(self, *args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(AdversarialTrainer, "train", explode)
    with pytest.raises(RuntimeError, match="out of memory"):
        main([*tiny_cli, "--output-dir", str(run), "--overwrite"])
    assert tree_hash(run) == before
    assert not (tmp_path / ".run.replaced").exists()


def test_overwrite_with_an_optimizer_that_cannot_be_built_keeps_the_finished_run(tmp_path, tiny_cli, capsys):
    try:
        import bitsandbytes  # noqa: F401

        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    run = make_tiny_run(tmp_path / "run")
    before = tree_hash(run)
    capsys.readouterr()
    code = main([*tiny_cli, "--output-dir", str(run), "--overwrite", "--optim", "adamw_bnb_8bit"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [err] and "bitsandbytes" in err, err
    assert tree_hash(run) == before


def test_overwrite_replaces_a_finished_run(tmp_path, tiny_cli):
    run = make_tiny_run(tmp_path / "run")
    assert main([*tiny_cli, "--output-dir", str(run), "--overwrite", "--learning-rate", "1e-3"]) == 0
    config = runs.read_json(run / runs.RUN_CONFIG)
    assert config["training"]["learning_rate"] == 1e-3 and runs.is_finished(run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny", "train.csv"]


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, tiny_cli, monkeypatch):
    from advtune.trainer import AdversarialTrainer

    def explode(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(AdversarialTrainer, "train", explode)
    assert main([*tiny_cli, "--output-dir", str(tmp_path / "new")]) == 130
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()  # an empty folder the user made is kept
    assert main([*tiny_cli, "--output-dir", str(tmp_path / "mine")]) == 130
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_attack_overwrite_killed_midway_gets_the_old_attack_back(tmp_path, capsys):
    from advtune.attacks.run import attack_run

    run = make_tiny_run(tmp_path / "run")
    out = tmp_path / "attack"
    out.mkdir()
    (out / "attack_config.json").write_text('{"settings": "old"}\n')
    (out / runs.METRICS).write_text('{"n": 3}\n')
    before = tree_hash(out)
    out.rename(tmp_path / ".attack.replaced")  # what --overwrite had done when the process was killed
    out.mkdir()
    (out / "adversarial.jsonl").write_text('{"idx": 0}\n')
    with pytest.raises(UsageError, match="data folder not found"):  # the next attack restores the folder first
        attack_run(run, out=out, data_dir=str(tmp_path / "nodata"), n=2)
    assert tree_hash(out) == before and not (tmp_path / ".attack.replaced").exists()
    assert "restored" in capsys.readouterr().err


def test_a_folder_without_write_permission_is_refused_before_anything_runs(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(runs.os, "access", lambda path, mode: os.path.realpath(path) != str(tmp_path.resolve()))
    with pytest.raises(UsageError, match=f"no permission to write in {tmp_path}"):
        runs.check_output(tmp_path / "new" / "run")
    assert runs.check_output(tmp_path.parent / "elsewhere") == "new"
