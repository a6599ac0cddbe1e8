"""Bad input: one line on stderr, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import pytest

from advtune.cli import main


def _fails(argv, capsys, tmp_path, needle):
    out_dir = tmp_path / "run"
    code = main([*argv, "--output-dir", str(out_dir)] if argv and argv[0] == "train" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert needle.lower() in err.lower(), err
    assert not out_dir.exists(), "a failed command must not write the run folder"
    return err


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("sentence,label\ngood movie,pos\nbad movie,neg\nfine film,pos\n")
    return path


def test_unknown_command(capsys, tmp_path):
    _fails(["frobnicate"], capsys, tmp_path, "unknown command")


def test_unknown_method(capsys, tmp_path):
    _fails(["train", "--task", "sst2", "--method", "nosuch"], capsys, tmp_path, "unknown method 'nosuch'")


def test_unknown_task(capsys, tmp_path):
    _fails(["train", "--task", "nosuchtask"], capsys, tmp_path, "nosuchtask")


def test_unknown_model_path(capsys, tmp_path, data_file):
    _fails(
        [
            "train",
            "--train-file",
            str(data_file),
            "--text-fields",
            "sentence",
            "--label-field",
            "label",
            "--model",
            str(tmp_path / "no_model_here"),
        ],
        capsys,
        tmp_path,
        "does not exist",
    )


def test_negative_learning_rate(capsys, tmp_path):
    _fails(["train", "--task", "sst2", "--learning-rate", "-1"], capsys, tmp_path, "learning_rate")


def test_zero_epochs(capsys, tmp_path):
    _fails(["train", "--task", "sst2", "--num-train-epochs", "0"], capsys, tmp_path, "num_train_epochs")


def test_unreadable_yaml(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [unclosed\n  - x: :\n")
    _fails(["train", "--config", str(bad)], capsys, tmp_path, "not valid YAML")


def test_missing_yaml(capsys, tmp_path):
    _fails(["train", "--config", str(tmp_path / "nope.yaml")], capsys, tmp_path, "does not exist")


def test_missing_data_file(capsys, tmp_path):
    _fails(
        ["train", "--train-file", str(tmp_path / "nope.csv"), "--text-fields", "a", "--label-field", "b"],
        capsys,
        tmp_path,
        "nope.csv",
    )


def test_misnamed_column(capsys, tmp_path, data_file):
    _fails(
        ["train", "--train-file", str(data_file), "--text-fields", "text", "--label-field", "label"],
        capsys,
        tmp_path,
        "text",
    )


def test_empty_text(capsys, tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('sentence,label\ngood movie,1\n"",0\n')
    _fails(
        ["train", "--train-file", str(path), "--text-fields", "sentence", "--label-field", "label"],
        capsys,
        tmp_path,
        "empty",
    )


def test_missing_local_data(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "data"
    empty.mkdir()
    _fails(["train", "--task", "rte", "--data-dir", str(empty)], capsys, tmp_path, "ADVTUNE_DATA_DIR")


def test_invalid_method_hyperparameter(capsys, tmp_path):
    from advtune.methods import METHODS

    if "freelb" not in METHODS:
        pytest.skip("freelb not registered")
    _fails(["train", "--task", "sst2", "--method", "freelb", "--adv_steps", "0"], capsys, tmp_path, "adv_steps")


def test_eval_not_a_run(capsys, tmp_path):
    code = main(["eval", "--run", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not an advtune run folder" in err and len(err.splitlines()) == 1
