"""Word-substitution attack: stop words, budget, similarity, first flip, constant model, batched queries."""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset

from advtune.attacks.substitution import (
    AttackResult,
    Budget,
    TextFooler,
    Victim,
    recheck,
    run_attack,
    word_spans,
)
from advtune.attacks.synonyms import STOP_WORDS, SynonymTable
from advtune.errors import UsageError
from advtune.testing import tiny_tokenizer

BUDGET = Budget("test-v1", max_change_rate=0.3, max_candidates=50, min_similarity=0.84)


class Bow(torch.nn.Module):
    """Bag-of-words classifier: score = sum of word weights; class 1 iff score > 0 (ties -> class 0)."""

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__()
        vocab = tiny_tokenizer().get_vocab()
        w = torch.zeros(len(vocab))
        for word, s in weights.items():
            w[vocab[word]] = s
        self.register_buffer("w", w)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        s = (self.w[input_ids] * attention_mask).sum(1) + self.dummy
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(s), s], -1))


def _attack(weights, pairs, similarity=None, budget=BUDGET, batch_size=64):
    victim = Victim(Bow(weights), tiny_tokenizer(), max_length=64, batch_size=batch_size)
    sim = similarity or (lambda orig, cands: np.full(len(cands), 0.99))
    return TextFooler(victim, SynonymTable(pairs), sim, budget)


def _ds(texts, labels, texts_b=None):
    data = {"idx": list(range(len(texts))), "text_a": texts, "label": labels}
    if texts_b is not None:
        data["text_b"] = texts_b
    return Dataset.from_dict(data)


def test_stops_at_first_flip_and_counts_batched_queries():
    fooler = _attack({"good": 1, "fun": 1, "bad": -3, "dull": -1}, [("good", "bad"), ("fun", "dull")])
    res = fooler.attack(0, "good fun movie", 1)
    assert res.status == "success" and res.pred_perturbed == 0
    assert res.changed == [(0, "good", "bad")] and res.perturbed == "bad fun movie"  # "fun" left alone
    # 1 clean query + 2 deletions in one batch ("movie" has no candidate: never deleted) + 1 candidate
    assert (fooler.victim.queries, fooler.victim.forwards) == (4, 3) and res.queries == 4
    small = _attack(
        {"good": 1, "fun": 1, "bad": -3}, [("good", "bad"), ("fun", "ok"), ("movie", "film")], batch_size=2
    )
    small.attack(0, "good fun movie", 1)
    assert small.victim.forwards == 4  # clean, the 3 deletions in batches of 2, the candidate "bad"


def test_budget_is_respected_and_reached():
    weights, pairs = {"good": 1}, [("good", "ok")]
    ten = "good good good good movie film plot story acting actor"  # 10 words: at most 3 changes, needs 4
    res = _attack(weights, pairs).attack(0, ten, 1)
    assert res.status == "failed" and len(res.changed) == 3 == BUDGET.max_changes(10)
    fourteen = ten + " movie film plot story"  # 14 words: 4 changes allowed, the 4th flips
    res = _attack(weights, pairs).attack(0, fourteen, 1)
    assert res.status == "success" and len(res.changed) == 4 == BUDGET.max_changes(14)
    assert BUDGET.max_changes(2) == 1 and BUDGET.max_changes(0) == 0


def test_stop_words_are_never_replaced():
    assert {"not", "the", "is", "it"} <= STOP_WORDS
    # replacing the stop word "not" by "hardly" (unknown to the model) would flip the label: it must not happen
    fooler = _attack({"not": 3, "bad": -1, "awful": -1}, [("not", "hardly"), ("bad", "awful")])
    res = fooler.attack(0, "it is not bad", 1)
    assert res.status == "failed" and "not" in res.perturbed.split()
    assert all(orig.lower() not in STOP_WORDS for _, orig, _ in res.changed)


def test_similarity_threshold_blocks_candidates():
    def sim(orig, cands):
        return np.array([0.5 if "bad" in c.split() else 0.9 for c in cands])

    fooler = _attack({"good": 1, "fun": 1, "bad": -3, "dull": -1}, [("good", "bad"), ("fun", "dull")], sim)
    res = fooler.attack(0, "good fun movie", 1)
    assert res.status == "success" and "bad" not in res.perturbed.split()
    assert res.changed == [(1, "fun", "dull")] and res.similarity >= BUDGET.min_similarity


def test_constant_model_gives_aua_equal_acc():
    fooler = _attack({}, [("good", "great"), ("movie", "film")])
    ds = _ds(["good movie", "great film", "good plot", "bad movie"], [0, 1, 0, 1])
    metrics, rows = run_attack(fooler, ds, progress=False)
    assert metrics["acc"] == metrics["aua"] == 0.5 and metrics["avg"] == 0.5
    assert metrics["attack_success_rate"] == 0.0 and metrics["num_violations"] == 0
    assert [r["status"] for r in rows] == ["failed", "skipped", "failed", "skipped"]


def test_run_attack_metrics_and_zero_violations():
    fooler = _attack(
        {"good": 1, "fun": 1, "great": 1, "bad": -3, "dull": -1}, [("good", "bad"), ("fun", "dull"), ("great", "fine")]
    )
    ds = _ds(["good fun movie", "great great great great movie film plot story acting actor", "bad movie"], [1, 1, 1])
    metrics, rows = run_attack(fooler, ds, progress=False)
    assert metrics["n"] == 3 and metrics["acc"] == pytest.approx(2 / 3)
    assert metrics["num_success"] == 1 and metrics["aua"] == pytest.approx(1 / 3)
    assert metrics["avg"] == pytest.approx((2 / 3 + 1 / 3) / 2) and metrics["attack_success_rate"] == 0.5
    assert metrics["mean_words_changed_fraction"] == pytest.approx(1 / 3)
    assert metrics["num_violations"] == 0 and metrics["mean_forwards"] > 0
    assert rows[0]["perturbed"] == "bad fun movie"
    assert rows[0]["changed"] == [{"position": 0, "from": "good", "to": "bad"}]


def test_pairs_attack_the_second_text_only():
    fooler = _attack({"good": 1, "fun": 2, "bad": -4}, [("good", "bad"), ("fun", "bad")])
    ds = _ds(["good fun"], [1], texts_b=["good movie"])
    metrics, rows = run_attack(fooler, ds, attack_b=True, progress=False)
    assert rows[0]["status"] == "success" and rows[0]["fixed_text"] == "good fun"
    assert rows[0]["attacked_field"] == "text_b" and rows[0]["perturbed"] == "bad movie"


def test_recheck_flags_violations():
    fooler = _attack({"good": 1, "not": 3}, [("good", "ok")])
    ok = AttackResult(0, 1, "good movie", "ok movie", 1, 0, "success", num_words=2, changed=[(0, "good", "ok")])
    stop = AttackResult(1, 1, "not good", "hardly good", 1, 0, "success", num_words=2)
    over = AttackResult(2, 1, "good good good", "ok ok ok", 1, 0, "success", num_words=3)
    still = AttackResult(3, 1, "good good", "ok good", 1, 0, "success", num_words=2)
    reasons = recheck([ok, stop, over, still], fooler, [None] * 4, attack_b=True)
    assert ok.status == "success" and not ok.violations
    assert still.status == "violation" and still.violations == ["no_flip"]
    assert "stop_word" in stop.violations and "not_a_candidate" in stop.violations
    assert "word_budget" in over.violations and reasons["word_budget"] == 1


def test_word_spans_and_sst_tokenisation():
    text = "it 's a charming , n't it ?"
    assert [text[s:e] for s, e in word_spans(text)] == ["it", "s", "a", "charming", "n't", "it"]


def test_attack_command_writes_run_folder(tmp_path, capsys):
    from advtune import runs
    from advtune.cli import main
    from tests.conftest import make_tiny_run

    run = make_tiny_run(tmp_path / "run")
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\ngood fun movie\t1\nthe plot was dull\t0\nbad acting\t0\ngreat film\t1\n")
    syn = tmp_path / "syn.txt"
    syn.write_text("good great\nfun funny\nmovie film\ndull boring\nbad awful\nacting actors\n")
    argv = [
        "attack",
        "--run",
        str(run),
        "--n",
        "3",
        "--data-file",
        str(data),
        "--synonyms",
        str(syn),
        "--similarity-model",
        str(run),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    out = run / "attack" / "sst2.validation"
    metrics = runs.read_json(out / "metrics.json")
    rows = runs.read_jsonl(out / "adversarial.jsonl")
    assert metrics["n"] == 3 == len(rows) and metrics["budget"]["name"] == "textdefender-v1"
    assert metrics["avg"] == pytest.approx((metrics["acc"] + metrics["aua"]) / 2)
    assert metrics["num_violations"] == 0 and metrics["candidates"] == "syn.txt" and metrics["device"] == "cpu"
    assert "ACC" in capsys.readouterr().out
    assert main(["attack", "--run", str(run), "--budget", "nope"]) == 2
    assert main(["attack", "--run", str(run), "--n", "0", "--data-file", str(data)]) == 2


def _sim_by_hash(orig, cands):
    """A deterministic stand-in encoder: similarities spread over [0.8, 1.0), about a fifth below 0.84."""
    return np.array([0.8 + 0.2 * (zlib.crc32(c.encode()) % 1000) / 1000 for c in cands])


SENTENCES = [
    "good fun movie",
    "the plot was dull but the actors were great",
    "i love this film it is very good and funny",
    "a boring story with poor acting and a sad ending",
    "good good good movie",
    "what a wonderful and excellent film",
]
PAIRS = [
    ("good", "fine"), ("good", "nice"), ("good", "great"), ("fun", "funny"), ("movie", "film"), ("plot", "story"),
    ("dull", "boring"), ("great", "excellent"), ("love", "like"), ("funny", "fun"), ("sad", "awful"),
    ("poor", "bad"), ("wonderful", "nice"), ("actors", "actor"), ("acting", "plot"), ("story", "plot"),
]  # fmt: skip


def _random_bow(seed=1):
    """A bag-of-words victim with random word weights: it flips on some sentences and not on others."""
    from advtune.testing import TINY_VOCAB

    rng = np.random.default_rng(seed)
    return Bow({word: float(rng.normal()) for word in TINY_VOCAB[5:]})


def test_cache_and_order_do_not_change_the_adversarial_texts():
    victim = Victim(_random_bow(), tiny_tokenizer(), max_length=64, cache=False)
    ds = _ds(SENTENCES, [int(y) for y in victim.probs(SENTENCES).argmax(-1)])  # every sentence is attacked
    runs = {}
    for cache in (True, False):
        for order in ("victim-first", "constraint-first"):
            victim = Victim(_random_bow(), tiny_tokenizer(), max_length=64, cache=cache)
            fooler = TextFooler(victim, SynonymTable(PAIRS), _sim_by_hash, BUDGET, order=order)
            metrics, rows = run_attack(fooler, ds, progress=False)
            runs[cache, order] = metrics, [(r["status"], r["perturbed"], r["changed"]) for r in rows]
    reference = runs[False, "victim-first"][1]
    statuses = [status for status, _, _ in reference]
    assert statuses.count("success") >= 2 and statuses.count("failed") >= 2  # the comparison is not vacuous
    assert all(texts == reference for _, texts in runs.values())
    for (cache, _order), (metrics, _) in runs.items():
        assert metrics["num_violations"] == 0
        assert (metrics["mean_cache_hits"] > 0) == cache  # "good good good movie": repeated deletions
    cached, uncached = runs[True, "victim-first"][0], runs[False, "victim-first"][0]
    assert cached["mean_queries"] + cached["mean_cache_hits"] == pytest.approx(uncached["mean_queries"])


def test_a_repeated_text_is_queried_once():
    victim = Victim(Bow({"good": 1}), tiny_tokenizer(), max_length=64, batch_size=64)
    first = victim.probs(["good movie", "bad movie", "good movie"])
    assert (victim.queries, victim.cache_hits, victim.forwards) == (2, 1, 1)
    again = victim.probs(["bad movie", "good movie"])
    assert (victim.queries, victim.cache_hits, victim.forwards) == (2, 3, 1)  # no forward at all
    np.testing.assert_array_equal(again, first[[1, 0]])
    pair = victim.probs(["good movie"], ["bad movie"])  # the other text is part of the key
    assert victim.queries == 3 and pair.shape == (1, 2)
    fooler = _attack({"good": 1, "fun": 1, "bad": -3}, [("good", "bad")])
    res = fooler.attack(0, "good good fun", 1)  # deleting either "good" gives "good fun": one row
    assert res.status == "success" and res.cache_hits == 1
    assert res.queries == 3  # clean, one deletion, the candidate "bad"


def test_similarity_is_asked_once_per_text_per_example():
    calls = []

    def sim(orig, cands):
        calls.append(list(cands))
        return np.full(len(cands), 0.99)

    fooler = _attack({"good": 1, "bad": -1, "fun": 0.5}, [("good", "bad"), ("good", "ok"), ("fun", "bad")], sim)
    res = fooler.attack(0, "good fun", 1)
    sent = [t for call in calls for t in call]
    assert len(sent) == len(set(sent)) == res.similarity_queries


def test_constraint_first_queries_only_similar_candidates_and_stays_in_budget():
    def sim(orig, cands):
        return np.array([0.5 if "awful" in c.split() else 0.95 for c in cands])

    weights = {"good": 2, "fun": 1, "great": 1, "awful": -9, "bad": -1, "dull": -0.5}
    pairs = [("good", "awful"), ("good", "bad"), ("fun", "dull"), ("great", "fine"), ("great", "fun")]
    texts = ["good fun movie", "great great great great movie film plot story acting actor", "good film"]
    first = _attack(weights, pairs, sim)
    first.order = "constraint-first"
    metrics, rows = run_attack(first, _ds(texts, [1, 1, 1]), progress=False)
    plain = _attack(weights, pairs, sim)
    base, base_rows = run_attack(plain, _ds(texts, [1, 1, 1]), progress=False)
    assert metrics["num_violations"] == 0 and metrics["num_success"] == base["num_success"] >= 1
    assert [r["perturbed"] for r in rows] == [r["perturbed"] for r in base_rows]
    assert all("awful" not in r["perturbed"].split() for r in rows)
    assert all(len(r["changed"]) <= BUDGET.max_changes(r["num_words"]) for r in rows)
    # "awful" (below the threshold) is never shown to the victim in constraint-first order
    assert metrics["mean_queries"] < base["mean_queries"]
    assert metrics["mean_similarity_queries"] > base["mean_similarity_queries"]  # "fun" for "great" (no gain)


def test_recheck_queries_afresh_and_unknown_order_is_refused():
    fooler = _attack({"good": 1, "ok": 1}, [("good", "ok")])  # the model keeps class 1 for "ok movie"
    fooler.victim.cache[("ok movie", None)] = np.array([0.9, 0.1], dtype=np.float32)  # a stale score: "flipped"
    res = AttackResult(0, 1, "good movie", "ok movie", 1, 0, "success", num_words=2, changed=[(0, "good", "ok")])
    recheck([res], fooler, [None], attack_b=True)
    assert res.violations == ["no_flip"]
    assert fooler.victim.queries == 0 and ("ok movie", None) in fooler.victim.cache
    with pytest.raises(UsageError, match="unknown candidate order 'fast' \\(choose from: victim-first, constraint"):
        TextFooler(fooler.victim, SynonymTable(), _sim_by_hash, BUDGET, order="fast")


def test_interleaved_examples_share_forwards_with_the_same_results():
    victim = Victim(_random_bow(), tiny_tokenizer(), max_length=64, cache=False)
    labels = [int(y) for y in victim.probs(SENTENCES).argmax(-1)]
    items = [(i, text, y, None) for i, (text, y) in enumerate(zip(SENTENCES, labels))]
    outcomes = {}
    for width in (1, 4):
        fooler = TextFooler(Victim(_random_bow(), tiny_tokenizer(), max_length=64), SynonymTable(PAIRS), _sim_by_hash,
                            BUDGET, width=width)  # fmt: skip
        results = list(fooler.attack_many(items))
        assert [r.idx for r in results] == list(range(len(SENTENCES)))  # input order
        outcomes[width] = [(r.status, r.perturbed, r.queries, r.similarity_queries) for r in results]
        outcomes[width, "forwards"] = fooler.victim.forwards
        outcomes[width, "rows"] = fooler.victim.queries
    assert outcomes[4] == outcomes[1]  # per-example results and charges do not depend on the neighbours
    assert outcomes[4, "rows"] == outcomes[1, "rows"] == sum(q for _, _, q, _ in outcomes[1])
    assert outcomes[4, "forwards"] < outcomes[1, "forwards"]
    one = TextFooler(Victim(_random_bow(), tiny_tokenizer(), max_length=64), SynonymTable(PAIRS), _sim_by_hash, BUDGET)
    assert (one.attack(*items[1][:3]).status, one.attack(*items[1][:3]).perturbed) == outcomes[1][1][:2]


def test_a_sorted_split_is_sampled_with_a_seed_or_named_on_stderr(capsys):
    """The intent test sets are sorted by label: the first N examples hold one or two labels, which would
    make the accuracy under attack a figure about two intents. ``sample_seed`` draws the same seeded
    sample for every run; without it the attack says on stderr what the first N hold."""
    import os

    import pytest

    from advtune.attacks.run import _attack_set
    from advtune.tasks import get_task, resolve_data_dir

    if not os.environ.get("ADVTUNE_DATA_DIR"):
        pytest.skip("ADVTUNE_DATA_DIR is not set")
    task, ddir = get_task("banking77"), resolve_data_dir(None)
    first = _attack_set(task, "test", ddir, None, 100)
    assert len(set(first["label"])) == 3
    assert "note: the first 100 examples of banking77.test hold 3 of its 77 labels" in capsys.readouterr().err
    a = _attack_set(task, "test", ddir, None, 100, sample_seed=0)
    b = _attack_set(task, "test", ddir, None, 100, sample_seed=0)
    text = a.column_names[0]
    assert a[text] == b[text] and len(a) == 100 and len(set(a["label"])) > 40
    assert "note:" not in capsys.readouterr().err
    assert "note:" not in (_attack_set(get_task("sst2"), "validation", ddir, None, 200), capsys.readouterr().err)[1]
    assert _attack_set(task, "test", ddir, None, 100, sample_seed=1)[text] != a[text]


@pytest.mark.parametrize("family", ["bert", "llama-left"])
def test_length_sorted_batches_give_each_text_its_own_probabilities(family):
    """Texts of one request are sorted by length and cut into batches that are padded at most 15% beyond
    their real tokens; every text comes back once, at its place, with the probabilities of a forward
    of that text alone (right and left padding, single texts and pairs)."""
    from advtune.attacks.substitution import PAD_RATIO, length_batches
    from advtune.testing import tiny_family_model, tiny_family_tokenizer

    tok, model = tiny_family_tokenizer(family), tiny_family_model(family, dropout=0.0).eval()
    texts = [" ".join(SENTENCES[i % len(SENTENCES)].split()[: 1 + (7 * i) % 10]) for i in range(40)]
    others = [SENTENCES[i % 3] for i in range(40)]
    for args in ([texts], [texts, others]):
        seen = []
        for rows, enc in length_batches(tok, args, 64, 8):
            real, padded = int(enc["attention_mask"].sum()), enc["attention_mask"].numel()
            assert len(rows) <= 8 and (len(rows) == 1 or padded <= PAD_RATIO * real)
            seen += list(rows)
        assert sorted(seen) == list(range(40))
        batched = Victim(model, tok, max_length=64, batch_size=8, cache=False).probs(*args)
        alone = np.concatenate([Victim(model, tok, max_length=64).probs(*[[a[i]] for a in args]) for i in range(40)])
        np.testing.assert_allclose(batched, alone, atol=1e-5)
        assert not np.allclose(batched, batched[::-1])  # texts differ: a misplaced row would be caught


def test_batches_are_split_for_padding_on_a_cpu_only():
    """A CPU forward costs per token position; elsewhere a call's fixed cost dominates: sort, do not split."""
    from advtune.attacks.substitution import PAD_RATIO, padding_limit

    assert padding_limit(None, torch.nn.Linear(2, 2)) == PAD_RATIO
    assert padding_limit(None, torch.nn.Linear(2, 2, device="meta")) == float("inf")
    assert padding_limit(2.0, torch.nn.Linear(2, 2, device="meta")) == 2.0
