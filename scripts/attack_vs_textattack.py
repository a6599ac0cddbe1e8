"""Side by side: advtune's word-substitution attack against the equivalent TextAttack 0.3.11 attack.

Both attack the same victim (a finished advtune run) on the same first ``--n`` labelled examples of a
split, with the same PPDB candidate table, the same stop words, the same word budget (advtune's
``textdefender-v1``: at most max(1, floor(0.3 n)) of the n words) and the same MiniLM similarity
(>= 0.84, plus advtune's float margin). The runs alternate (advtune orders, then TextAttack, then the
other way round) so that a change in the machine's load hits both; each run gets fresh caches. For
every run the script reports process CPU time (not only wall time: the machine may be shared),
success rate, real victim forward rows per attacked example, encoder rows, and the violations of
advtune's post-hoc re-check, which both attacks go through (candidate membership included).

TextAttack pieces used (``docs/attack.md``): ``Attack``, ``GreedyWordSwapWIR(wir_method="delete")``,
``UntargetedClassification`` (its model cache on, batch size = advtune's), ``RepeatModification``,
``StopwordModification`` (advtune's stop words), ``ModelWrapper`` (over advtune's batched victim, its
cache off), and three small custom pieces: a ``WordSwap`` that reads the PPDB table, a ``Constraint``
for the word budget and a ``Constraint`` for the MiniLM similarity (batched; it sets the
``similarity_score`` the greedy search uses to choose among label flips).

Usage (TextAttack in its own environment; without it, ``--no-textattack`` times advtune alone)::

    python scripts/attack_vs_textattack.py --run RUN --n 200 --pairs 3 --out attack_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from typing import Any

import numpy as np
import torch

from advtune.attacks.substitution import (
    SIM_MARGIN,
    WORD,
    SentenceEncoder,
    TextFooler,
    Victim,
    get_budget,
    match_case,
    recheck,
    summarize,
    word_spans,
)
from advtune.attacks.synonyms import STOP_WORDS, is_stop_word, load_candidates

TEXTATTACK = ("textattack", "textattack-unbatched")  # similarity checked in batches / one text at a time
ADVTUNE_DEFAULT = "default"  # the TextFooler constructor's default order (also works on older advtune versions)
BEFORE = "before-length-batching"
"""advtune's default order as it was before length-sorted batches: 16 searches side by side, forwards padded
to their longest text, similarity asked four candidates at a time (same choices, more padding and encoder rows)."""


def import_textattack() -> Any:
    """TextAttack 0.3.11, importable next to transformers 5.

    TextAttack imports ``flair`` at module level only for flair part-of-speech tagging, which this
    attack does not use, and flair cannot be imported with transformers >= 5 (which advtune needs).
    When flair is missing, a placeholder with the three names TextAttack's modules touch at import is
    registered; calling any flair feature would fail loudly.
    """
    try:
        import flair  # noqa: F401
    except ImportError:
        flair = types.ModuleType("flair")
        flair.data = types.ModuleType("flair.data")
        flair.models = types.ModuleType("flair.models")
        flair.data.Tokenizer = type("Tokenizer", (), {})
        flair.data.Sentence = flair.models.SequenceTagger = None
        sys.modules.update({"flair": flair, "flair.data": flair.data, "flair.models": flair.models})
    _nltk_stopwords()
    import textattack

    return textattack


def _nltk_stopwords() -> None:
    """NLTK's stop-word corpus, which ``textattack.augmentation`` loads at import time (offline here).

    When NLTK cannot find it, a corpus holding advtune's stop words is written to a temporary NLTK
    data folder. The attack below passes its stop words explicitly, so this only lets the import run.
    """
    import tempfile

    import nltk

    try:
        nltk.corpus.stopwords.words("english")
    except LookupError:
        root = tempfile.mkdtemp(prefix="nltk_data_")
        os.makedirs(os.path.join(root, "corpora", "stopwords"))
        with open(os.path.join(root, "corpora", "stopwords", "english"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(sorted(STOP_WORDS)) + "\n")
        nltk.data.path.insert(0, root)


def build_textattack(
    textattack: Any, victim: Victim, table: Any, encoder: SentenceEncoder, budget: Any, batched: bool = True
) -> Any:
    """The TextAttack ``Attack`` equivalent to advtune's TextFooler on this victim and budget.

    ``batched=False`` checks the similarity one candidate at a time (a constraint that implements only
    TextAttack's abstract ``_check_constraint``), to show what an unbatched custom constraint costs.
    """
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification
    from textattack.goal_functions import UntargetedClassification
    from textattack.models.wrappers import ModelWrapper
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import WordSwap

    class VictimWrapper(ModelWrapper):
        def __init__(self) -> None:
            self.model = victim.model

        def __call__(self, texts: list[str]) -> np.ndarray:
            return victim.probs(list(texts))

    class TableSwap(WordSwap):
        """advtune's candidates: the table's synonyms of a word, capitalised like it, single words only."""

        def _get_replacement_words(self, word: str) -> list[str]:
            if not WORD.fullmatch(word) or is_stop_word(word):
                return []
            cands = (match_case(c, word) for c in table.candidates(word, budget.max_candidates))
            return [c for c in cands if WORD.fullmatch(c)]

    stop_words = {v for w in STOP_WORDS for v in (w, w.capitalize(), w.upper())}  # TextAttack compares as written
    word_budget, similarity = budget_constraints(encoder, budget, batched)
    constraints = [RepeatModification(), StopwordModification(stopwords=stop_words), word_budget, similarity]
    goal = UntargetedClassification(VictimWrapper(), model_batch_size=victim.batch_size)
    return textattack.Attack(goal, constraints, TableSwap(), GreedyWordSwapWIR(wir_method="delete"))


def budget_constraints(encoder: SentenceEncoder, budget: Any, batched: bool) -> tuple[Any, Any]:
    """TextAttack constraints for advtune's word budget and similarity threshold."""
    from textattack.constraints import Constraint

    class WordBudget(Constraint):
        """At most ``budget.max_changes(n)`` of the original's n words (advtune's word count)."""

        def _check_constraint(self, transformed_text: Any, reference_text: Any) -> bool:
            limit = budget.max_changes(len(word_spans(reference_text.text)))
            return len(transformed_text.all_words_diff(reference_text)) <= limit

    class Similarity(Constraint):
        """MiniLM cosine to the original >= the budget's threshold (+ advtune's margin), batched."""

        def _check_constraint_many(self, transformed_texts: list[Any], reference_text: Any) -> list[Any]:
            if not batched:
                return super()._check_constraint_many(transformed_texts, reference_text)
            if not transformed_texts:
                return []
            sims = encoder(reference_text.text, [t.text for t in transformed_texts])
            for t, s in zip(transformed_texts, sims):
                t.attack_attrs["similarity_score"] = float(s)
            return [t for t, s in zip(transformed_texts, sims) if s >= budget.min_similarity + SIM_MARGIN]

        def _check_constraint(self, transformed_text: Any, reference_text: Any) -> bool:
            sim = float(encoder(reference_text.text, [transformed_text.text])[0])
            transformed_text.attack_attrs["similarity_score"] = sim
            return sim >= budget.min_similarity + SIM_MARGIN

    return WordBudget(compare_against_original=True), Similarity(compare_against_original=True)


def textattack_fooler(
    textattack: Any, victim: Victim, table: Any, encoder: SentenceEncoder, budget: Any, batched: bool = True
) -> Any:
    """The TextAttack attack behind advtune's per-example interface (its results become ``AttackResult``s)."""
    from advtune.attacks.textattack_adapter import TextAttackRecipe

    class Equivalent(TextAttackRecipe):
        check_candidates = True  # same candidate table: the re-check also verifies membership

        def __init__(self) -> None:
            TextFooler.__init__(self, victim, table, encoder, budget)
            self.textattack, self.recipe = textattack, "equivalent"
            self.attack_obj = build_textattack(textattack, victim, table, encoder, budget, batched)

        def attack(self, idx: int, text: str, label: int, fixed: str | None = None, attack_b: bool = True) -> Any:
            q0 = victim.queries
            res = super().attack(idx, text, label, fixed, attack_b)
            res.ta_queries = res.queries  # TextAttack's own count (cached texts included)
            res.queries = victim.queries - q0  # real forward rows, as advtune counts them
            return res

    return Equivalent()


def make_attack(
    kind: str, loaded: Any, table: Any, budget: Any, textattack: Any, batch_size: int, width: int = 16
) -> Any:
    """A fresh attack (fresh victim, encoder and caches): ``textattack`` or an advtune candidate order."""
    device = next(loaded.model.parameters()).device
    if kind in TEXTATTACK:
        victim = Victim(loaded.model, loaded.tokenizer, loaded.max_length, batch_size, cache=False)
        encoder = SentenceEncoder("minilm", batch_size, device)
        return textattack_fooler(textattack, victim, table, encoder, budget, batched=kind == "textattack")
    if kind == BEFORE:
        victim = Victim(loaded.model, loaded.tokenizer, loaded.max_length, batch_size, max_padding=float("inf"))
        encoder = SentenceEncoder("minilm", batch_size, device, max_padding=float("inf"))
        fooler = TextFooler(victim, table, encoder, budget, width=16)
        fooler.similarity_chunk = 4
        return fooler
    victim = Victim(loaded.model, loaded.tokenizer, loaded.max_length, batch_size)
    kwargs = {} if kind == ADVTUNE_DEFAULT else {"order": kind, "width": width}
    return TextFooler(victim, table, SentenceEncoder("minilm", batch_size, device), budget, **kwargs)


def timed_run(fooler: Any, examples: list[tuple[int, str, int]]) -> dict[str, Any]:
    """Attack every example; CPU and wall time of the attack alone, then the re-check and the summary."""
    encoder = fooler.similarity
    fooler.victim.queries = fooler.victim.forwards = 0
    rows0, calls0, load0 = getattr(encoder, "rows", 0), getattr(encoder, "calls", 0), os.getloadavg()[0]
    cpu, wall = time.process_time(), time.perf_counter()
    if hasattr(fooler, "attack_many"):  # advtune interleaves examples (the TextAttack bridge runs one at a time)
        results = list(fooler.attack_many((idx, text, label, None) for idx, text, label in examples))
    else:
        results = [fooler.attack(idx, text, label) for idx, text, label in examples]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    encoder_rows = getattr(encoder, "rows", 0) - rows0
    calls = fooler.victim.forwards + getattr(encoder, "calls", 0) - calls0
    violations = recheck(results, fooler, [None] * len(results), attack_b=True)
    metrics = summarize(results, wall, violations)
    attacked = max(1, metrics["num_attacked"])
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "load_1min_before": load0,
        "load_1min_after": os.getloadavg()[0],
        "success_rate": metrics["attack_success_rate"],
        "num_success": metrics["num_success"],
        "num_attacked": metrics["num_attacked"],
        "acc": metrics["acc"],
        "aua": metrics["aua"],
        "queries_per_example": metrics["mean_queries"],
        "cache_hits_per_example": metrics.get("mean_cache_hits", 0.0),
        "encoder_rows_per_example": encoder_rows / attacked,
        "model_calls_per_example": calls / attacked,
        "textattack_queries_per_example": float(np.mean([getattr(r, "ta_queries", np.nan) for r in results])),
        "num_violations": metrics["num_violations"],
        "violations": metrics["violations"],
        "perturbed": {r.idx: r.perturbed for r in results if r.status == "success"},
    }


def load_examples(task_name: str, split: str, n: int, data_dir: str | None) -> list[tuple[int, str, int]]:
    """The first ``n`` labelled examples of the split, exactly as ``advtune attack`` selects them."""
    from advtune.tasks import get_task, resolve_data_dir

    task = get_task(task_name)
    ds = task.load(task.canonical_split(split), data_dir=resolve_data_dir(data_dir))
    ds = ds.filter(lambda y: y >= 0, input_columns="label").select(range(n))
    ids = ds["idx"] if "idx" in ds.column_names else range(len(ds))
    return [(int(i), t, int(y)) for i, t, y in zip(ids, ds["text_a"], ds["label"])]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished advtune run (the victim)")
    p.add_argument("--task", default="sst2")
    p.add_argument("--split", default="validation")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--pairs", type=int, default=3, help="alternating rounds (the order flips every round)")
    p.add_argument("--orders", default=f"victim-first,constraint-first,{BEFORE}", help="advtune variants to time")
    p.add_argument("--no-textattack", action="store_true", help="time advtune only")
    p.add_argument("--textattack", default="textattack", help="TextAttack variants: textattack, textattack-unbatched")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="where both attacks run their models (cpu, cuda, ...)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=16, help="examples advtune attacks side by side")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="write every run's numbers to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from advtune.pipeline import load_run

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    kinds = [k for k in args.orders.split(",") if k] + ([] if args.no_textattack else args.textattack.split(","))
    textattack = None if args.no_textattack else import_textattack()
    loaded = load_run(args.run, device=args.device)
    examples = load_examples(args.task, args.split, args.n, args.data_dir)
    table, budget = load_candidates(data_dir=args.data_dir), get_budget("textdefender-v1")
    runs = []
    for round_ in range(args.pairs):
        for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
            attack = make_attack(kind, loaded, table, budget, textattack, args.batch_size, args.width)
            out = timed_run(attack, examples)
            runs.append({"round": round_, "kind": kind, **out})
            shown = {k: v for k, v in out.items() if k not in ("perturbed", "violations")}
            print(json.dumps({"round": round_, "kind": kind, **shown}), flush=True)
    summary = summarize_rounds(runs, kinds)
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "threads": torch.get_num_threads(), "runs": runs, **summary}, fh, indent=1)
    return 0


def summarize_rounds(runs: list[dict[str, Any]], kinds: list[str]) -> dict[str, Any]:
    """Per kind: mean CPU time and success; per round: CPU- and wall-time ratios of TextAttack to each advtune
    variant (on a GPU, CPU time is mostly the host waiting: read the wall-time ratio there)."""
    out: dict[str, Any] = {"mean": {}}
    for kind in kinds:
        mine = [r for r in runs if r["kind"] == kind]
        keys = ("cpu_s", "wall_s", "success_rate", "queries_per_example", "encoder_rows_per_example")
        keys += ("model_calls_per_example",)
        out["mean"][kind] = {k: float(np.mean([r[k] for r in mine])) for k in keys}
        out["mean"][kind]["violations"] = sum(r["num_violations"] for r in mine)
    advtune = [k for k in kinds if k not in TEXTATTACK]
    for measure in ("cpu", "wall"):
        ratios_of = out.setdefault(f"{measure}_ratio_textattack_over", {})
        for ta_kind in (k for k in kinds if k in TEXTATTACK):
            for kind in advtune:
                ratios = [
                    ta[f"{measure}_s"] / mine[f"{measure}_s"]
                    for ta in runs
                    if ta["kind"] == ta_kind
                    for mine in runs
                    if mine["kind"] == kind and mine["round"] == ta["round"]
                ]
                ratios_of[f"{ta_kind}/{kind}"] = {"per_round": ratios, "mean": float(np.mean(ratios))}
    by_kind = {k: [r["perturbed"] for r in runs if r["kind"] == k] for k in kinds}
    out["identical_texts_across_rounds"] = {k: all(p == v[0] for p in v) for k, v in by_kind.items()}
    out["identical_texts_across_orders"] = all(by_kind[k][0] == by_kind[advtune[0]][0] for k in advtune)
    return out


if __name__ == "__main__":
    sys.exit(main())
