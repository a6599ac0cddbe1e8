"""Labels of users' files: nothing a classifier cannot learn from gets in silently."""

from __future__ import annotations

import pytest

from advtune.errors import UsageError
from advtune.tasks.base import Task
from advtune.tasks.files import load_file_task


def _load(tmp_path, body, name="f.csv", **kwargs):
    path = tmp_path / name
    path.write_text(body)
    return load_file_task(path, ["t"], "y", **kwargs)


@pytest.mark.parametrize(
    "body,message",
    [
        ("t,y\na,0.5\nb,1\nc,nan\n", "nan or inf in row 3"),
        ("t,y\na,1\nb,inf\nc,-inf\nd,0\n", "nan or inf in rows 2, 3"),
        ("t,y\na,NaN\nb,pos\n", "nan or inf in row 1"),
        ("t,y\na,pos\nb,neg\nc,2\nd,pos\n", "the numbers are in row 3 (e.g. '2')"),
        ("t,y\na,1\nb,0\nc,1\nd,neg\ne,0\n", "the names are in row 4 (e.g. 'neg')"),
    ],
)
def test_unusable_labels_are_refused_with_row_numbers(tmp_path, body, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(tmp_path, body)


def test_jsonl_nan_and_infinity_labels(tmp_path):
    with pytest.raises(UsageError, match="row 2: missing label"):  # JSON's NaN reads as a missing value
        _load(tmp_path, '{"t": "a", "y": 1}\n{"t": "b", "y": NaN}\n', name="f.jsonl")
    with pytest.raises(UsageError, match="nan or inf in row 1"):
        _load(tmp_path, '{"t": "a", "y": Infinity}\n{"t": "b", "y": 0}\n', name="f.jsonl")


def test_fractional_labels_are_regression_by_default_and_refused_as_classes(tmp_path):
    task, ds = _load(tmp_path, "t,y\na,0.5\nb,3\nc,1.25\n")
    assert task.is_regression and list(ds["label"]) == [0.5, 3.0, 1.25]
    with pytest.raises(UsageError, match=r"rows 1, 3 .*--task-type regression"):
        _load(tmp_path, "t,y\na,0.5\nb,3\nc,1.25\n", regression=False)


def test_whole_numbers_are_classes_unless_regression_is_asked(tmp_path):
    task, ds = _load(tmp_path, "t,y\na,0\nb,2\nc,1\n")
    assert task.label_names == ("0", "1", "2") and list(ds["label"]) == [0, 2, 1]
    task, ds = _load(tmp_path, "t,y\na,0\nb,2\nc,1\n", regression=True)
    assert task.is_regression and list(ds["label"]) == [0.0, 2.0, 1.0]


def test_a_fixed_label_set_still_accepts_ids_and_names(tmp_path):
    task, ds = _load(tmp_path, "t,y\na,positive\nb,0\n", label_names=["negative", "positive"])
    assert list(ds["label"]) == [1, 0]


def test_regression_task_refuses_a_nan_score():
    task = Task(name="scores", label_names=None, metric="pearson_spearman", pair=False, text_fields=("t",))
    assert task.label_id("2.5") == 2.5
    with pytest.raises(UsageError, match="not a finite number"):
        task.label_id("nan")


def test_single_class_training_file_is_refused(tmp_path, capsys):
    from advtune.cli import main
    from advtune.testing import tiny_model, tiny_tokenizer

    tiny_model().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    (tmp_path / "one.csv").write_text("t,y\na,pos\nb,pos\n")
    capsys.readouterr()
    argv = f"train --train-file {tmp_path}/one.csv --text-fields t --label-field y --model {tmp_path}/tiny"
    code = main([*argv.split(), "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "has the label 'pos'; a classifier needs at least two classes" in err, err
    assert not (tmp_path / "run").exists()
