"""Task registry, local loaders (on small hand-made files in the real layouts), user files, subsampling."""

from __future__ import annotations

import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, Features, Value

from advtune.errors import UsageError
from advtune.tasks import TASKS, get_task, register_task, resolve_data_dir, subsample, subsample_per_label
from advtune.tasks.base import Task
from advtune.tasks.files import load_file_task

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "data"
OWN = [t for t in TASKS.values() if isinstance(t, Task) and not t.name.startswith("advglue")]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def no_hub(monkeypatch, offline):
    """Fail the test if anything reaches for the hub."""
    import datasets

    def boom(*args, **kwargs):
        raise AssertionError("the hub was called")

    monkeypatch.setattr(datasets, "load_dataset", boom)


# ------------------------------------------------------------------ registry
def test_registry_fields():
    assert {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"} <= set(TASKS)
    assert {"banking77", "clinc150", "clinc150_oos", "hwu64", "books", "dvd", "electronics", "kitchen"} <= set(TASKS)
    assert {"snli", "scitail", "hans"} <= set(TASKS)
    stsb = get_task("stsb")
    assert stsb.is_regression and stsb.num_labels == 1 and stsb.metric == "pearson_spearman" and stsb.pair
    assert get_task("cola").metric == "mcc" and get_task("mrpc").metric == "f1_accuracy"
    assert get_task("qqp").metric == "f1_accuracy"
    assert get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("snli").label_names == get_task("mnli").label_names
    assert get_task("banking77").num_labels == 77
    assert get_task("clinc150").num_labels == 150
    assert get_task("clinc150_oos").label_names[-1] == "oos" and get_task("clinc150_oos").num_labels == 151
    assert get_task("hwu64").num_labels == 64
    for name in ("banking77", "clinc150", "hwu64"):
        assert get_task(name).eval_splits == ("test",) and "test-difficult" in get_task(name).splits
    for domain in ("books", "dvd", "electronics", "kitchen"):
        assert get_task(domain).label_names == get_task("sst2").label_names


def test_every_own_task_is_consistent():
    for task in OWN:
        assert task.train_split in task.splits, task.name
        assert set(task.eval_splits) <= set(task.splits), task.name
        assert len(set(task.label_names or ())) == len(task.label_names or ()), task.name


def test_get_task_unknown_lists_names_and_accepts_spellings():
    with pytest.raises(UsageError, match="unknown task 'sst3'.*sst2.*banking77"):
        get_task("sst3")
    assert get_task("SST-2") is TASKS["sst2"]
    assert get_task("clinc150-oos") is TASKS["clinc150_oos"]


def test_register_task(monkeypatch):
    monkeypatch.setattr("advtune.tasks.TASKS", dict(TASKS))
    mine = Task("mytask", ("a", "b"), "accuracy", False, ("text",))
    register_task(mine)
    assert get_task("mytask") is mine
    with pytest.raises(UsageError, match="already registered"):
        register_task(Task("mytask", ("x",), "accuracy", False, ("text",)))


def test_unknown_split_lists_valid_ones():
    with pytest.raises(
        UsageError, match="unknown split 'dev2' for task 'sst2'; valid splits: train, validation, test"
    ):
        get_task("sst2").load("dev2", DATA)


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("ADVTUNE_DATA_DIR", raising=False)
    assert resolve_data_dir(None) is None
    monkeypatch.setenv("ADVTUNE_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert resolve_data_dir(str(DATA)) == DATA  # the argument wins
    with pytest.raises(UsageError, match="data folder not found"):
        resolve_data_dir(tmp_path / "nope")


# ------------------------------------------------------------------ local loaders
def _check_columns(ds, task):
    expected = ["idx", "text_a", "text_b", "label"] if task.pair else ["idx", "text_a", "label"]
    assert ds.column_names[: len(expected)] == expected
    assert ds.features["label"].dtype == ("float32" if task.is_regression else "int64")
    assert all(isinstance(t, str) and t for t in ds["text_a"])


def test_sst2_local(no_hub):
    task = get_task("sst2")
    train = task.load("train", DATA)
    _check_columns(train, task)
    assert train["text_a"][1] == 'the " greatest " movie'  # QUOTE_NONE: quotes are text
    assert train["text_a"][2] == "NA"  # not a missing value
    assert train["label"] == [0, 1, 0, 1, 0, 0]
    assert train["text_a"][5] == '" a mess from start to finish'  # an unbalanced opening quote swallows nothing
    assert task.load("dev", DATA)["text_a"][2] == "null"  # "dev" alias of "validation"
    test = task.load("test", DATA)  # CRLF line ends, labelled
    assert test["label"] == [0, 1] and test["text_a"][1] == "a lovely film ."


def test_cola_without_header(no_hub):
    task = get_task("cola")
    ds = task.load("train", DATA)
    _check_columns(ds, task)
    assert len(ds) == 3 and ds["label"] == [1, 0, 1]
    assert ds["text_a"][1].endswith('crazier they get "')


def test_mrpc_bom_and_unlabelled_test(no_hub):
    task = get_task("mrpc")
    train = task.load("train", DATA)
    _check_columns(train, task)
    assert train["label"] == [1, 0, 1]  # "Quality" found despite the BOM
    assert train["text_b"][2] == "They had published an ad on the Internet ."
    assert task.load("test", DATA)["label"] == [-1, -1]


def test_stsb_regression_floats(no_hub):
    task = get_task("stsb")
    ds = task.load("train", DATA)
    _check_columns(ds, task)
    assert ds["label"] == pytest.approx([5.0, 3.8, 0.5])
    assert ds["idx"] == [0, 1, 2]


@pytest.mark.parametrize(
    ("name", "split", "labels", "first_b"),
    [
        ("rte", "train", [1, 0], "Weapons of Mass Destruction Found in Iraq."),
        ("wnli", "train", [1, 0], "The carrot had a hole."),
        ("qnli", "validation", [0, 1], "As of that day, the new constitution came into force."),
        ("qqp", "train", [0, 1], "Which level of prepration is enough for the exam jlpt5?"),
        ("mnli", "train", [1, 0, 2], "Product and geography are what make cream skimming work."),
        ("mnli", "validation_matched", [1, 2], "Everyone really likes the newest benefits"),
        ("mnli", "dev_mismatched", [2, 0, 0], "Your contributions were of no help."),
    ],
)
def test_glue_pair_tasks(no_hub, name, split, labels, first_b):
    task = get_task(name)
    ds = task.load(split, DATA)
    _check_columns(ds, task)
    assert ds["label"] == labels and ds["text_b"][0] == first_b


def test_intent_csv_and_json(no_hub):
    banking = get_task("banking77")
    ds = banking.load("train", DATA)
    _check_columns(ds, banking)
    names = [banking.label_names[i] for i in ds["label"]]
    assert names[:4] == ["card_arrival", "card_linking", "exchange_rate", "pending_cash_withdrawal"]
    assert ds["text_a"][1] == "How do I link my card, the new one?" and ds["text_a"][3] == 'It says "pending" still'
    hwu = get_task("hwu64")
    assert [hwu.label_names[i] for i in hwu.load("test", DATA)["label"]] == ["alarm_query", "alarm_set"]
    assert len(hwu.load("validation", DATA)) == 1
    clinc = get_task("clinc150")
    train = clinc.load("train", DATA)
    assert len(train) == 3 and "oos" not in clinc.label_names
    assert [clinc.label_names[i] for i in train["label"]] == ["translate", "translate", "balance"]
    oos = get_task("clinc150_oos")
    test = oos.load("test", DATA)
    assert len(test) == 3 and test["label"][-1] == 150


def test_test_difficult_calls_difficult_subset(no_hub, monkeypatch):
    calls = []

    def difficult_subset(train_ds, test_ds, size):
        calls.append((len(train_ds), len(test_ds), size))
        return test_ds.select([0])

    fake = types.ModuleType("advtune.evaluation.difficult")
    fake.difficult_subset = difficult_subset
    monkeypatch.setitem(sys.modules, "advtune.evaluation.difficult", fake)
    assert len(get_task("banking77").load("test-difficult", DATA)) == 1
    get_task("clinc150").load("test-difficult", DATA)
    get_task("hwu64").load("test-difficult", DATA)
    assert calls == [(6, 3, 770), (3, 2, 750), (4, 2, 620)]


def test_sentiment_domain_multiline_quoted(no_hub):
    task = get_task("books")
    ds = task.load("test", DATA)
    _check_columns(ds, task)
    assert len(ds) == 4 and ds["label"] == [0, 1, 1, 0]
    assert ds["text_a"][0].startswith("Horrible book, horrible.\n") and ds["text_a"][0].endswith("money")
    assert ds["text_a"][1] == 'A "classic" for good reason.\n\tLoved every page'
    with pytest.raises(UsageError, match="not on the hub"):
        get_task("dvd").load("test", DATA)


def test_nli_transfer_sets(no_hub):
    snli = get_task("snli").load("validation", DATA)
    assert snli["label"] == [1, 0, 2] and snli["idx"] == [0, 1, 3]  # the "-" pair is dropped
    scitail = get_task("scitail")
    ds = scitail.load("test", DATA)
    assert [scitail.label_names[i] for i in ds["label"]] == ["neutral", "entailment"]
    hans = get_task("hans")
    ds = hans.load("validation", DATA)
    assert ds["label"] == [1, 0] and ds["heuristic"] == ["lexical_overlap", "subsequence"]
    assert hans.label_names == ("entailment", "non-entailment")


def test_data_file_overrides_split_file(no_hub, tmp_path):
    path = tmp_path / "mine.tsv"
    path.write_text("sentence\tlabel\nfine\t1\n", encoding="utf-8")
    ds = get_task("sst2").load("test", None, data_file=path)
    assert ds["text_a"] == ["fine"] and ds["label"] == [1]
    with pytest.raises(UsageError, match="not found"):
        get_task("sst2").load("test", None, data_file=tmp_path / "missing.tsv")


def test_bad_label_in_local_file_names_the_file(no_hub, tmp_path):
    (tmp_path / "rte").mkdir()
    (tmp_path / "rte" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(UsageError, match=r"'maybe' is not in the label set.*rte"):
        get_task("rte").load("validation", tmp_path)


def test_missing_column_in_local_file(no_hub, tmp_path):
    (tmp_path / "rte").mkdir()
    (tmp_path / "rte" / "dev.tsv").write_text("index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(UsageError, match="no column sentence1; columns are index, premise, hypothesis, label"):
        get_task("rte").load("validation", tmp_path)


# ------------------------------------------------------------------ no local data
def test_offline_without_data_is_one_line_usage_error(no_hub):
    with pytest.raises(UsageError) as err:
        get_task("sst2").load("train", None)
    message = str(err.value)
    assert "\n" not in message and "sst2" in message and "ADVTUNE_DATA_DIR" in message and "--data-dir" in message
    assert "hub" in message


def test_offline_with_dir_lacking_the_task_names_expected_file(no_hub, tmp_path):
    with pytest.raises(UsageError, match=r"no local data for task 'mnli'.*mnli[/\\]train\.tsv.*ADVTUNE_DATA_DIR"):
        get_task("mnli").load("train", tmp_path)


def test_offline_read_from_huggingface_hub_constant(monkeypatch):
    """HF_HUB_OFFLINE set through huggingface_hub's constants (not the env) also fails fast."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("hub called"))
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE"):
        get_task("rte").load("train", None)


def test_hub_rows_are_mapped_to_standard_columns(monkeypatch):
    """Online with nothing local: the hub dataset's ClassLabel names are mapped by name."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    seen = []

    def fake_load(path, name=None, split=None):
        seen.append((path, name, split))
        feats = Features(
            {
                "premise": Value("string"),
                "hypothesis": Value("string"),
                "label": ClassLabel(names=["entailment", "neutral", "contradiction"]),
            }
        )
        return Dataset.from_dict(
            {"premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"], "label": [2, -1, 0]}, features=feats
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ds = get_task("snli").load("validation", None)
    assert seen == [("stanfordnlp/snli", None, "validation")]
    assert ds["text_a"] == ["p1", "p3"] and ds["text_b"] == ["h1", "h3"] and ds["label"] == [2, 0]

    def failing_load(*args, **kwargs):
        raise ConnectionError("no route to host\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", failing_load)
    with pytest.raises(UsageError, match=r"could not load task 'rte' \(nyu-mll/glue/rte.*ConnectionError: no route"):
        get_task("rte").load("train", None)


# ------------------------------------------------------------------ user files
def test_file_csv_single_text_inferred_labels(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"good, really",pos\nbad,neg\nok,pos\n', encoding="utf-8")
    task, ds = load_file_task(path, ["text"], "label")
    assert task.label_names == ("neg", "pos") and not task.pair and task.metric == "accuracy"
    assert ds["text_a"][0] == "good, really" and ds["label"] == [1, 0, 1] and ds["idx"] == [0, 1, 2]


def test_file_tsv_pair_with_given_label_names(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("a\tb\ty\nx1\ty1\tentailment\nx2\ty2\t1\n", encoding="utf-8")
    task, ds = load_file_task(path, ["a", "b"], "y", label_names=["entailment", "not_entailment"], name="mine")
    assert task.pair and task.name == "mine" and ds["text_b"] == ["y1", "y2"] and ds["label"] == [0, 1]


def test_file_jsonl_numeric_labels_sorted_numerically(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"t": f"x{i}", "l": v}) for i, v in enumerate([10, 2, 2, 1])) + "\n")
    task, ds = load_file_task(path, ["t"], "l")
    assert task.label_names == ("1", "2", "10") and ds["label"] == [2, 1, 1, 0]


def test_file_regression_inferred_from_fractional_scores(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("s1,s2,score\na,b,4.5\nc,d,1\n")
    task, ds = load_file_task(path, ["s1", "s2"], "score")
    assert task.is_regression and task.metric == "pearson_spearman" and ds["label"] == pytest.approx([4.5, 1.0])


def test_file_missing(tmp_path):
    with pytest.raises(UsageError, match="data file not found"):
        load_file_task(tmp_path / "nope.csv", ["text"], "label")


def test_file_unknown_extension(tmp_path):
    path = tmp_path / "d.xlsx"
    path.write_text("x")
    with pytest.raises(UsageError, match=r"unsupported file type '\.xlsx'.*\.csv, \.tsv or \.jsonl"):
        load_file_task(path, ["text"], "label")


def test_file_unreadable_json(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": oops}\n')
    with pytest.raises(UsageError, match="line 2: invalid JSON"):
        load_file_task(path, ["text"], "label")


def test_file_misnamed_text_column_lists_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,label\na,1\n")
    with pytest.raises(UsageError, match="no column 'text'; columns are sentence, label"):
        load_file_task(path, ["text"], "label")


def test_file_misnamed_label_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,gold\na,1\n")
    with pytest.raises(UsageError, match="no column 'label'; columns are text, gold"):
        load_file_task(path, ["text"], "label")


def test_file_empty_text(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\na,1\n"  ",0\n')
    with pytest.raises(UsageError, match="row 2: empty text in column 'text'"):
        load_file_task(path, ["text"], "label")


def test_file_labels_outside_label_set(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,positive\nb,meh\nc,7\n")
    with pytest.raises(UsageError, match=r"2 label\(s\) outside the label set, e\.g\. '7', 'meh'"):
        load_file_task(path, ["text"], "label", label_names=["negative", "positive"])


def test_file_no_rows(tmp_path):
    header_only = tmp_path / "d.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(UsageError, match="has no rows"):
        load_file_task(header_only, ["text"], "label")
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(UsageError, match="has no rows"):
        load_file_task(empty, ["text"], "label")


def test_file_bad_text_fields(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,label\nx,y,z,1\n")
    with pytest.raises(UsageError, match="one or two column names"):
        load_file_task(path, ["a", "b", "c"], "label")


# ------------------------------------------------------------------ subsampling
def _toy(n=100, labels=(0, 1, 2, 3), weights=(50, 30, 19, 1)):
    ys = [y for y, w in zip(labels, weights) for _ in range(w)][:n]
    return Dataset.from_dict({"idx": list(range(len(ys))), "text_a": [f"t{i}" for i in range(len(ys))], "label": ys})


def test_subsample_is_seeded_and_ordered():
    ds = _toy()
    a, b, c = subsample(ds, 10, seed=1), subsample(ds, 10, seed=1), subsample(ds, 10, seed=2)
    assert len(a) == 10 and a["idx"] == b["idx"] and a["idx"] != c["idx"]
    assert a["idx"] == sorted(a["idx"]) and len(set(a["idx"])) == 10
    assert len(subsample(ds, 1000, seed=1)) == len(ds)
    with pytest.raises(UsageError):
        subsample(ds, 0, seed=1)


def test_subsample_per_label_fraction():
    ds = _toy()
    half = subsample_per_label(ds, 0.5, seed=3)
    counts = Counter(half["label"])
    assert counts == {0: 25, 1: 15, 2: 10, 3: 1}  # 9.5 rounds up; a singleton label keeps its one example
    assert half["idx"] == subsample_per_label(ds, 0.5, seed=3)["idx"]
    assert half["idx"] != subsample_per_label(ds, 0.5, seed=4)["idx"]
    assert len(subsample_per_label(ds, 1.0, seed=3)) == len(ds)
    with pytest.raises(UsageError):
        subsample_per_label(ds, 0.0, seed=3)
    regression = Dataset.from_dict({"text_a": ["a", "b"], "label": [0.5, 1.5]})
    with pytest.raises(UsageError, match="regression"):
        subsample_per_label(regression, 0.5, seed=0)
