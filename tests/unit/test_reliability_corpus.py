"""A corpus of bad and hostile inputs: each one exit code 2, one or two stderr lines, no traceback, no file changed.

Every case runs in-process through :func:`advtune.cli.main` (fast); a handful (``SUBPROCESS_CASES``) also
through a real subprocess in the process tier (``tests/fault/test_real_process_errors.py``), where
model-loading reports and progress bars would show up before the error if a check came too late. The
world the cases act on (a tiny model, a finished run, damaged copies of it, a user's own folder, bad data
files) is hashed before and after each case: a refused command must
not change, create or delete a single file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from advtune.cli import main
from advtune.testing import tiny_model, tiny_tokenizer
from tests.conftest import make_tiny_run, toy_sentiment

T = "train --model {w}/tiny --data-dir {w}/data --output-dir {w}/new --report-to none"
F = T + " --train-file {w}/good.csv --text-fields sentence --label-field label"

CASES: list[tuple[str, str]] = [
    # ---- train: arguments
    ("train --method nosuch --output-dir {w}/new", "unknown method 'nosuch'"),
    (T + " --task nosuchtask", "nosuchtask"),
    ("train --model {w}/tiny --data-dir {w}/data --task sst2", "--output-dir is required"),
    (T + " --learning-rate abc", "invalid float value: 'abc'"),
    (T + " --learning-rate -1", "learning_rate"),
    (T + " --learning-rate nan", "finite"),
    (T + " --num-train-epochs 0", "num_train_epochs"),
    (T + " --num-train-epochs inf", "finite"),
    (T + " --per-device-train-batch-size 0", "per_device_train_batch_size"),
    (T + " --per-device-eval-batch-size -2", "per_device_eval_batch_size"),
    (T + " --max-length 0", "max_length"),
    (T + " --max-train-samples -5", "max_train_samples"),
    (T + " --max-eval-samples 0", "max_eval_samples"),
    (T + " --train-fraction-per-label 1.5", "train_fraction_per_label"),
    (T + " --warmup-steps -1", "warmup_steps"),
    (T + " --frobnicate 3", "frobnicate"),
    (T + " --method", "expected one argument"),
    (T + " --optim nosuchopt", "nosuchopt"),
    (T + " --method freelb --adv_steps 0", "adv_steps"),
    (T + " --method freelb --adv_steps many", "invalid int value: 'many'"),
    (T + " --config {w}/missing.yaml", "does not exist"),
    (T + " --config {w}/bad.yaml", "not valid YAML"),
    (T + " --config {w}/list.yaml", "mapping"),
    (T + " --config {w}/data", "does not exist"),
    (T + " --task-type bogus", "--task-type"),
    (T + " --config {w}/binary.yaml", "not readable text"),
    (T + " --config {w}/unknown_key.yaml", "frobnicate"),
    (T + " --config {w}/wrong_type.yaml", "invalid float value: 'abc'"),
    (T + " --task sst2 --seed -1", "seed=-1"),
    (T + " --task sst2 --gradient-accumulation-steps 0", "gradient_accumulation_steps"),
    (T + " --task sst2 --max-length 4096", "exceeds the model's 128 positions"),
    (T + " --task sst2 --logging-steps 0", "logging_steps"),
    (T + " --task sst2 --eval-strategy bogus", "invalid choice: 'bogus'"),
    (T + " --task sst2 --method standard --adv_steps 3", "adv_steps"),
    (T + " --task sst2 --eval-splits nosuch", "unknown split 'nosuch'"),
    (T.replace("{w}/data", "{w}/emptydata") + " --task rte", "ADVTUNE_DATA_DIR"),
    # ---- train: output folder
    (T.replace("{w}/new", "{w}/afile.txt") + " --task sst2", "is a file"),
    (T.replace("{w}/new", "{w}/afile.txt/sub") + " --task sst2", "which is a file"),
    (T.replace("{w}/new", "{w}/user") + " --task sst2", "advtune did not write"),
    (T.replace("{w}/new", "{w}/user") + " --task sst2 --overwrite", "--overwrite only replaces advtune folders"),
    (T.replace("{w}/new", "{w}/user") + " --task sst2 --resume", "advtune did not write"),
    (T.replace("{w}/new", "{w}/run") + " --task sst2", "holds a finished run; pass --overwrite"),
    (T.replace("{w}/new", "{w}/tiny") + " --task sst2 --overwrite", "advtune did not write"),  # the model folder
    (T.replace("{w}/new", "{w}/data") + " --task sst2 --overwrite", "advtune did not write"),  # the data folder
    (T.replace("{w}/new", "{w}/damaged_metrics") + " --task sst2", "pass --resume"),
    (T.replace("{w}/new", "{w}/unfinished") + " --task sst2", "pass --resume"),
    # ---- train: model
    (T.replace("{w}/tiny", "{w}/nomodel") + " --task sst2", "does not exist"),
    (T.replace("{w}/tiny", "{w}/user") + " --task sst2", "no config.json"),
    (T.replace("{w}/tiny", "{w}/tiny_damaged") + " --task sst2", "model.safetensors is damaged"),
    # ---- train: data files and labels
    (F.replace("good.csv", "missing.csv"), "data file not found"),
    (F.replace("good.csv", "empty.csv"), "no rows"),
    (F.replace("good.csv", "header_only.csv"), "no rows"),
    (F.replace("good.csv", "binary.csv"), "cannot read"),
    (F.replace("good.csv", "data.xlsx"), "unsupported file type"),
    (F.replace("{w}/good.csv", "{w}/data"), "not found"),
    (F.replace("--text-fields sentence", "--text-fields nosuch"), "no column 'nosuch'"),
    (F.replace("--label-field label", "--label-field nosuch"), "no column 'nosuch'"),
    (F.replace("--text-fields sentence", "--text-fields a,b,c"), "one or two column names"),
    (T + " --train-file {w}/good.csv --label-field label", "needs --text-fields"),
    (F.replace("good.csv", "nan.csv"), "nan or inf in row 3"),
    (F.replace("good.csv", "inf.tsv"), "nan or inf in row 2"),
    (F.replace("good.csv", "mixed.csv"), "mixes numbers and names"),
    (F.replace("good.csv", "frac.csv") + " --task-type classification", "--task-type regression"),
    (F.replace("good.csv", "single.csv"), "at least two classes"),
    (F.replace("good.csv", "bad.jsonl"), "line 2: invalid JSON"),
    (F.replace("good.csv", "empty_text.csv"), "row 2: empty text"),
    (T + " --task sst2 --eval-file {w}/good.csv", "--eval-file needs --train-file"),
    (F + " --eval-file {w}/other_labels.csv", "outside the label set"),
    # ---- eval
    ("eval --run {w}/nonexistent", "does not exist"),
    ("eval --run {w}/user", "not an advtune run folder"),
    ("eval --run {w}/afile.txt", "is a file"),
    ("eval --run {w}/bench_results", "not an advtune run folder"),
    ("eval --run {w}/dangling_link", "does not exist"),
    ("eval --run {w}/unfinished", "has not finished"),
    ("eval --run {w}/damaged_weights", "model.safetensors is damaged"),
    ("eval --run {w}/damaged_metrics", "metrics.json is not readable"),
    ("eval --run {w}/damaged_tokenizer", "tokenizer.json is damaged"),
    ("eval --run {w}/damaged_config", "run_config.json is damaged"),
    ("eval --run {w}/damaged_model_config", "config.json is damaged"),
    ("eval --run {w}/run --split nosuch --data-dir {w}/data", "unknown split 'nosuch'"),
    ("eval --run {w}/run --max-samples x", "invalid int value: 'x'"),
    ("eval --run {w}/run --data-file {w}/good.csv", "needs --text-fields"),
    ("eval", "required: --run"),
    ("eval --run {w}/run --max-samples 0", "--max-samples 0"),
    ("eval --run {w}/run --task nosuch", "nosuch"),
    ("eval --run {w}/run --device tpu", "invalid --device 'tpu' (choose from: auto, cpu, cuda, cuda:N)"),
    # ---- attack
    ("attack --run {w}/run --attack nosuch", "unknown attack 'nosuch'"),
    ("attack --run {w}/run --budget nosuch", "unknown budget 'nosuch'"),
    ("attack --run {w}/run --n 0", "--n 0"),
    ("attack --run {w}/run --n -3", "--n -3"),
    ("attack --run {w}/run --batch-size 0", "--batch-size 0"),
    ("attack --run {w}/run --out {w}/user", "advtune did not write"),
    ("attack --run {w}/run --out {w}/afile.txt", "is a file"),
    ("attack --run {w}/damaged_weights", "model.safetensors is damaged"),
    ("attack --run {w}/user", "not an advtune run folder"),
    ("attack --run {w}/run --split nosuch --data-dir {w}/data", "unknown split 'nosuch'"),
    ("attack --run {w}/run --data-dir {w}/emptydata", "ADVTUNE_DATA_DIR"),
    ("attack --run {w}/run --device cuda:x", "invalid --device 'cuda:x'"),
    # ---- bench
    ("bench --suite nosuch --out {w}/newbench", "nosuch"),
    ("bench --suite demo --out {w}/user", "advtune did not write"),
    ("bench --suite demo --out {w}/afile.txt", "is a file"),
    ("bench --suite demo --out {w}/newbench --set foo", "KEY=VALUE"),
    ("bench --suite demo --out {w}/newbench --set nosuchkey=1", "not a training, task or adapter argument"),
    ("bench --suite demo --out {w}/newbench --seeds a,b", "--seeds must be"),
    ("bench --suite demo --out {w}/newbench --attack-n 0 --model {w}/tiny", "--attack-n"),
    # ---- report, compare, others
    ("report {w}/user --out {w}/newreport.md", "no finished run"),
    ("report {w}/run --out {w}/user/notes.txt", "not a report advtune wrote"),
    ("report {w}/run --out {w}/user", "is a folder"),
    ("compare {w}/run {w}/run --shuffles 0", "--shuffles"),
    ("compare {w}/run {w}/user", "no evaluated split"),
    ("compare {w}/run {w}/nonexistent", "does not exist"),
    ("compare {w}/afile.txt {w}/run", "is a file"),
    ("surface --run {w}/user", "not an advtune run folder"),
    ("surface --run {w}/run --grid abc", "invalid int value: 'abc'"),
    ("robustness --run {w}/user", "not an advtune run folder"),
    ("robustness --run {w}/run --runs {w}/damaged_weights", "model.safetensors is damaged"),
    ("robustness --run {w}/run --c nan", "--c must be a finite number"),
    ("robustness --run {w}/run --split nosuch --data-dir {w}/data", "unknown split 'nosuch'"),
    ("surface --run {w}/run --task nosuch", "nosuch"),
    ("surface --run {w}/run --span inf", "--span must be a finite number"),
    ("surface --run {w}/run --device gpu", "invalid --device 'gpu'"),
    ("robustness --run {w}/run --device mps", "invalid --device 'mps'"),
    ("frobnicate", "unknown command"),
]

SUBPROCESS_CASES = [
    "train --method nosuch --output-dir {w}/new",  # the console module itself, no traceback
    T + " --learning-rate abc",
    T + " --task sst2 --max-length 4096",
    T.replace("{w}/new", "{w}/user") + " --task sst2 --overwrite",
    F.replace("good.csv", "single.csv"),
    "eval --run {w}/damaged_weights",
    "attack --run {w}/run --out {w}/afile.txt",
    "robustness --run {w}/run --split nosuch --data-dir {w}/data",
]


def _tsv(path: Path, n: int, seed: int) -> None:
    texts, labels = toy_sentiment(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))


def _damaged_copy(run: Path, dest: Path, name: str, damage) -> None:
    shutil.copytree(run, dest)
    damage(dest / name)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("world")
    tiny_model(num_labels=2, dropout=0.0).save_pretrained(w / "tiny")
    tiny_tokenizer().save_pretrained(w / "tiny")
    shutil.copytree(w / "tiny", w / "tiny_damaged")
    os.truncate(w / "tiny_damaged" / "model.safetensors", 4000)
    _tsv(w / "data" / "sst2" / "train.tsv", 16, 0)
    _tsv(w / "data" / "sst2" / "dev.tsv", 8, 1)
    (w / "emptydata").mkdir()
    run = make_tiny_run(w / "run")
    files = {
        "good.csv": "sentence,label\ngood movie,pos\nbad movie,neg\nfine film,pos\n",
        "other_labels.csv": "sentence,label\ngood movie,great\nbad movie,neg\n",
        "empty.csv": "",
        "header_only.csv": "sentence,label\n",
        "nan.csv": "sentence,label\ngood,0.5\nbad,1.5\nworse,nan\n",
        "inf.tsv": "sentence\tlabel\ngood\t1\nbad\tinf\n",
        "mixed.csv": "sentence,label\ngood,pos\nbad,neg\nfine,pos\nodd,1\n",
        "frac.csv": "sentence,label\ngood,0.5\nbad,1.25\n",
        "single.csv": "sentence,label\ngood,pos\nbad,pos\nfine,pos\n",
        "bad.jsonl": '{"sentence": "good", "label": "pos"}\n{"sentence": "bad", "label"\n',
        "empty_text.csv": 'sentence,label\ngood,pos\n"",neg\n',
        "data.xlsx": "not a spreadsheet",
        "bad.yaml": "method: [unclosed\n  - x: :\n",
        "list.yaml": "- a\n- b\n",
        "afile.txt": "just a file\n",
        "unknown_key.yaml": "frobnicate: 1\n",
        "wrong_type.yaml": "learning_rate: abc\n",
    }
    for name, text in files.items():
        (w / name).write_text(text)
    (w / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (w / "binary.yaml").write_bytes(b"\x00\xff\xfe\x01" * 16)
    (w / "user").mkdir()
    (w / "user" / "notes.txt").write_text("my own notes\n")
    (w / "bench_results").mkdir()
    (w / "bench_results" / "bench.json").write_text('{"cells": []}\n')
    (w / "unfinished").mkdir()
    (w / "unfinished" / "run_config.json").write_text((run / "run_config.json").read_text())
    os.symlink(w / "nowhere", w / "dangling_link")
    _damaged_copy(run, w / "damaged_weights", "model.safetensors", lambda p: os.truncate(p, 4000))
    _damaged_copy(run, w / "damaged_metrics", "metrics.json", lambda p: p.write_text('{"task": "sst2", "spl'))
    _damaged_copy(run, w / "damaged_tokenizer", "tokenizer.json", lambda p: p.write_bytes(p.read_bytes()[:50]))
    _damaged_copy(run, w / "damaged_config", "run_config.json", lambda p: p.write_text("[]\n"))
    _damaged_copy(run, w / "damaged_model_config", "config.json", lambda p: p.write_text("{\n"))
    return w


def tree_hash(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content (links: their target), hidden files included."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def _argv(case: str, w: Path) -> list[str]:
    return case.replace("{w}", str(w)).split()


def test_corpus_is_large_and_distinct():
    assert len(CASES) >= 50
    assert len({c for c, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("case,words", CASES, ids=[f"{i:02d}-{c.split()[0]}" for i, (c, _) in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, words, world, capsys):
    before = tree_hash(world)
    code = main(_argv(case, world))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    assert 1 <= len(err.splitlines()) <= 2, err
    assert words.lower() in err.lower(), err
    assert tree_hash(world) == before, "a refused command changed files"
