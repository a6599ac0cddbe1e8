"""Cross-lingual transfer (TAT section 3.4): XNLI layouts, per-language accuracy + average, the full path
on a tiny random XLM-R with a small multilingual tokenizer and files written here."""

from __future__ import annotations

import json
import random

import pytest

from advtune.errors import UsageError
from advtune.evaluation.crosslingual import crosslingual_table, language_order, per_language_metrics
from advtune.tasks import get_task
from advtune.testing import tiny_family_model, tiny_family_tokenizer

# a toy NLI world in three languages: subject verb object; "not" contradicts, another subject is neutral
WORDS = {
    "en": {"subj": ["cat", "dog", "man"], "verb": ["sees", "eats"], "obj": ["fish", "bread"], "not": "not"},
    "fr": {"subj": ["chat", "chien", "homme"], "verb": ["voit", "mange"], "obj": ["poisson", "pain"], "not": "pas"},
    "de": {"subj": ["katze", "hund", "mann"], "verb": ["sieht", "frisst"], "obj": ["fisch", "brot"], "not": "nicht"},
}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
    {w for lang in WORDS.values() for key, v in lang.items() for w in ([v] if isinstance(v, str) else v)}
)


def nli_rows(lang: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    w = WORDS[lang]
    rows = []
    for i in range(n):
        s, v, o = rng.choice(w["subj"]), rng.choice(w["verb"]), rng.choice(w["obj"])
        label = i % 3
        if label == 0:
            hyp = f"{s} {v} {o}"
        elif label == 1:
            hyp = f"{rng.choice([x for x in w['subj'] if x != s])} {v} {o}"
        else:
            hyp = f"{s} {w['not']} {v} {o}"
        rows.append(
            {
                "language": lang,
                "premise": f"{s} {v} {o}",
                "hypothesis": hyp,
                "label": ["entailment", "neutral", "contradiction"][label],
            }
        )
    return rows


def write_jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def xnli_dir(tmp_path):
    root = tmp_path / "data"
    write_jsonl(root / "xnli" / "train.jsonl", nli_rows("en", 48, 0) + nli_rows("fr", 6, 0))
    write_jsonl(root / "xnli" / "validation.jsonl", nli_rows("en", 12, 1))
    write_jsonl(root / "xnli" / "test.jsonl", nli_rows("en", 12, 2) + nli_rows("fr", 9, 2) + nli_rows("de", 6, 2))
    return root


# ------------------------------------------------------------------ loading
def test_language_tasks_filter_and_keep_the_language_column(xnli_dir):
    every = get_task("xnli").load("test", data_dir=xnli_dir)
    assert len(every) == 27 and set(every["language"]) == {"en", "fr", "de"}
    fr = get_task("xnli_fr").load("test", data_dir=xnli_dir)
    assert len(fr) == 9 and set(fr["language"]) == {"fr"}
    en_train = get_task("xnli_en").load("train", data_dir=xnli_dir)
    assert len(en_train) == 48, "training on one language must drop the others"
    assert en_train[0]["label"] == 0 and en_train[2]["label"] == 2  # MNLI label order
    assert get_task("xnli").label_names == get_task("mnli").label_names


def test_original_xnli_tsv_layout(tmp_path):
    folder = tmp_path / "xnli"
    folder.mkdir()
    header = "language\tgold_label\tsentence1_binary_parse\tsentence1\tsentence2\tpairID"
    lines = [
        header,
        "fr\tcontradiction\t( x )\tLe chat dort .\tLe chat ne dort pas .\t1",
        "de\tentailment\t( y )\tDer Hund läuft .\tEin Hund läuft .\t2",
    ]
    (folder / "xnli.dev.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = get_task("xnli").load("validation", data_dir=tmp_path)
    assert ds["language"] == ["fr", "de"] and ds["label"] == [2, 0] and ds[1]["text_a"] == "Der Hund läuft ."


def test_xnli_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="xnli"):
        get_task("xnli").load("test", data_dir=tmp_path)
    write_jsonl(tmp_path / "xnli" / "test.jsonl", nli_rows("en", 3, 0))
    with pytest.raises(UsageError, match="no examples in language"):
        get_task("xnli_sw").load("test", data_dir=tmp_path)
    from advtune.tasks.xnli import xnli_task

    with pytest.raises(UsageError, match="unknown XNLI language"):
        xnli_task(("xx",))


# ------------------------------------------------------------------ metrics and table
def test_per_language_accuracy_and_unweighted_average():
    rows = [{"gold": 0, "pred": 0}] * 3 + [{"gold": 1, "pred": 0}] + [{"gold": 2, "pred": 2}, {"gold": 2, "pred": 1}]
    langs = ["fr", "fr", "fr", "fr", "en", "en"]
    m = per_language_metrics(rows, langs)
    assert list(m) == ["accuracy.en", "accuracy.fr", "accuracy.avg"]  # TAT Table 3 order: en before fr
    assert m["accuracy.fr"] == 0.75 and m["accuracy.en"] == 0.5
    assert m["accuracy.avg"] == pytest.approx(0.625)  # mean over languages, not the pooled 4/6
    assert language_order(["ur", "xx", "en", "de"]) == ["en", "de", "ur", "xx"]


def test_table_has_tat_layout():
    table = crosslingual_table(
        {
            "standard": {"accuracy": 0.6, "accuracy.fr": 0.5, "accuracy.en": 0.7, "accuracy.avg": 0.6},
            "tat": {"accuracy.en": 0.8, "accuracy.avg": 0.8},
        }
    )
    lines = table.splitlines()
    assert lines[0] == "| Model | en | fr | Avg. |"
    assert lines[2] == "| standard | 70.0 | 50.0 | 60.0 |" and lines[3] == "| tat | 80.0 | – | 80.0 |"


# ------------------------------------------------------------------ the whole path
def test_train_on_english_evaluate_every_language(tmp_path, xnli_dir):
    from advtune.bench.crosslingual import evaluate_crosslingual
    from advtune.pipeline import train
    from advtune.runs import read_json, read_jsonl

    model_dir = tmp_path / "tiny-xlmr"
    tok = tiny_family_tokenizer("xlm-roberta", vocab=VOCAB)
    tiny_family_model("xlm-roberta", num_labels=3, vocab_size=len(VOCAB)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    run = train(
        task="xnli_en",
        method="standard",
        output_dir=tmp_path / "run",
        model=str(model_dir),
        data_dir=str(xnli_dir),
        eval_splits="validation",
        max_length=16,
        num_train_epochs=1,
        per_device_train_batch_size=16,
        save_strategy="no",
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    assert read_json(run / "run_config.json")["num_train_examples"] == 48  # English only
    metrics = evaluate_crosslingual(run, task="xnli", split="test", data_dir=str(xnli_dir))
    assert {"accuracy", "accuracy.en", "accuracy.fr", "accuracy.de", "accuracy.avg"} <= set(metrics)
    rows = read_jsonl(run / "eval" / "xnli.test" / "predictions.jsonl")
    langs = ["en"] * 12 + ["fr"] * 9 + ["de"] * 6
    for lang in ("en", "fr", "de"):
        picked = [r for r, lg in zip(rows, langs) if lg == lang]
        assert metrics[f"accuracy.{lang}"] == pytest.approx(sum(r["gold"] == r["pred"] for r in picked) / len(picked))
    avg = sum(metrics[f"accuracy.{lg}"] for lg in ("en", "fr", "de")) / 3
    assert metrics["accuracy.avg"] == pytest.approx(avg)
    on_disk = read_json(run / "eval" / "xnli.test" / "metrics.json")
    assert on_disk["accuracy.fr"] == metrics["accuracy.fr"]
    assert crosslingual_table({"standard": metrics}).splitlines()[0] == "| Model | en | fr | de | Avg. |"
