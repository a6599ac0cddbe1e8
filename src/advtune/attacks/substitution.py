"""A batched word-substitution attack in the manner of TextFooler (Jin et al., AAAI 2020, arXiv 1907.11932).

For each correctly classified example: rank the words of the attacked field by *deletion importance*
(drop in the gold-label probability when the word is removed, plus TextFooler's bonus when the
prediction changes), then, most important first, try every candidate synonym of the word at once
(one batched forward), keep candidates whose sentence similarity to the original field is at least
the budget's threshold (and whose part of speech matches, when a tagger is available), stop at the
first candidate set that flips the label (taking the most similar flipping candidate) and otherwise
keep the candidate that lowers the gold-label probability most. Stop words are never replaced; the
number of changed words never exceeds the budget.

Budgets are named, versioned presets (:data:`BUDGETS`) so numbers are comparable across runs. After
the attack every adversarial example is re-checked from scratch (:func:`recheck`): word budget, stop
words, candidate membership, similarity (recomputed), untouched first field and the flip itself (a
fresh query). A violation turns the example into a failed attack and is reported.

Departures from TextFooler: candidates come from the PPDB synonym pairs (counter-fitted vectors are
not available offline; a word-vector file may be passed instead); similarity is the cosine of
mean-pooled MiniLM sentence embeddings of the whole attacked field (TextFooler: USE on a 15-word
window); POS consistency only with an installed NLTK tagger (skipped otherwise, recorded in the
metrics).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from .synonyms import SynonymTable, is_stop_word

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+")
SIM_MARGIN = 1e-4
"""The attack keeps a candidate only at similarity >= threshold + margin, so that float noise between
batched and single forwards can never make the post-hoc re-check disagree."""

SimilarityFn = Callable[[str, Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Budget:
    """A named attack budget. ``max_changes(n) = max(min_changes, floor(max_change_rate * n))`` words."""

    name: str
    max_change_rate: float
    max_candidates: int
    min_similarity: float
    min_changes: int = 1
    pos_consistency: bool = True

    def max_changes(self, n_words: int) -> int:
        return min(n_words, max(self.min_changes, int(np.floor(self.max_change_rate * n_words + 1e-9))))


#: TextDefender's protocol (Li et al., 2021): <= 30% of words, 50 candidates per word, similarity >= 0.84.
BUDGETS: dict[str, Budget] = {
    "textdefender-v1": Budget("textdefender-v1", max_change_rate=0.3, max_candidates=50, min_similarity=0.84),
}


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise UsageError(f"unknown budget '{name}' (choose from: {', '.join(BUDGETS)})") from None


def word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in WORD.finditer(text)]


def render(text: str, spans: list[tuple[int, int]], words: list[str]) -> str:
    """``text`` with the word at ``spans[i]`` replaced by ``words[i]``."""
    out, last = [], 0
    for (s, e), w in zip(spans, words):
        out += [text[last:s], w]
        last = e
    return "".join(out) + text[last:]


def delete_word(text: str, spans: list[tuple[int, int]], i: int) -> str:
    s, e = spans[i]
    return re.sub(r"\s{2,}", " ", text[:s] + text[e:]).strip()


def _match_case(candidate: str, word: str) -> str:
    if word.isupper() and len(word) > 1:
        return candidate.upper()
    return candidate.capitalize() if word[:1].isupper() else candidate


# ------------------------------------------------------------------------------------------ victim
class Victim:
    """Batched probability queries to a classifier; counts queries (texts) and forwards (batches)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_length: int = 128, batch_size: int = 64) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        self.queries = 0
        self.forwards = 0

    @torch.no_grad()
    def probs(self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None) -> np.ndarray:
        self.model.eval()
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts_a), self.batch_size):
            args = [list(texts_a[start : start + self.batch_size])]
            if texts_b is not None:
                args.append(list(texts_b[start : start + self.batch_size]))
            enc = self.tokenizer(*args, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            out.append(torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu().numpy())
            self.forwards += 1
            self.queries += len(args[0])
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


class SentenceEncoder:
    """Cosine similarity of mean-pooled, L2-normalised sentence embeddings (MiniLM by default)."""

    def __init__(self, name_or_path: str = "minilm", batch_size: int = 64, device: str | torch.device = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        from ..modeling import resolve_model_path

        path = resolve_model_path(name_or_path)
        self.name = str(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        chunks = []
        device = next(self.model.parameters()).device
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            ).to(device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(chunks)

    def __call__(self, original: str, candidates: Sequence[str]) -> np.ndarray:
        emb = self.embed([original, *candidates])
        return (emb[1:] @ emb[0]).numpy()


def nltk_pos_tagger() -> Callable[[list[str]], list[str]] | None:
    """NLTK's perceptron tagger (universal tags) when NLTK and its data are installed, else ``None``."""
    try:
        import nltk

        nltk.pos_tag(["test"], tagset="universal")
    except Exception:  # ImportError or LookupError (tagger data not downloaded)
        return None
    return lambda words: [t for _, t in nltk.pos_tag(words, tagset="universal")]


# ------------------------------------------------------------------------------------------ the attack
@dataclass
class AttackResult:
    idx: int
    label: int
    original: str
    perturbed: str
    pred_original: int
    pred_perturbed: int
    status: str  # "skipped" (already wrong), "failed", "success", "violation"
    num_words: int = 0
    changed: list[tuple[int, str, str]] = field(default_factory=list)
    queries: int = 0
    similarity: float = 1.0
    violations: list[str] = field(default_factory=list)

    @property
    def change_fraction(self) -> float:
        return len(self.changed) / self.num_words if self.num_words else 0.0


class TextFooler:
    """The greedy attack. ``similarity`` is any ``fn(original, candidates) -> cosines`` (tests pass a stub)."""

    def __init__(
        self,
        victim: Victim,
        candidates: SynonymTable,
        similarity: SimilarityFn,
        budget: Budget,
        pos_tagger: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.victim, self.table, self.similarity, self.budget = victim, candidates, similarity, budget
        self.pos_tagger = pos_tagger if budget.pos_consistency else None

    def _probs(self, texts: list[str], fixed: str | None, attack_b: bool) -> np.ndarray:
        if fixed is None:
            return self.victim.probs(texts)
        other = [fixed] * len(texts)
        return self.victim.probs(other, texts) if attack_b else self.victim.probs(texts, other)

    def attack(self, idx: int, text: str, label: int, fixed: str | None = None, attack_b: bool = True) -> AttackResult:
        """Attack ``text`` (the second sentence when ``fixed`` holds the first and ``attack_b``)."""
        q0 = self.victim.queries
        p0 = self._probs([text], fixed, attack_b)[0]
        pred0 = int(p0.argmax())
        spans = word_spans(text)
        res = AttackResult(idx, label, text, text, pred0, pred0, "skipped", num_words=len(spans))
        if pred0 != label:
            res.queries = self.victim.queries - q0
            return res
        res.status = "failed"
        words = [text[s:e] for s, e in spans]
        max_changes = self.budget.max_changes(len(words))
        if not words or max_changes == 0:
            res.queries = self.victim.queries - q0
            return res
        # deletion importance (TextFooler eq. 2), one batched query
        pd = self._probs([delete_word(text, spans, i) for i in range(len(words))], fixed, attack_b)
        new = pd.argmax(-1)
        imp = p0[label] - pd[:, label] + (new != label) * (pd[np.arange(len(words)), new] - p0[new])
        tags = self.pos_tagger(words) if self.pos_tagger else None
        current, cur_p = list(words), p0
        for i in np.argsort(-imp, kind="stable"):
            if len(res.changed) >= max_changes:
                break
            if is_stop_word(words[i]):
                continue
            cands = [_match_case(c, words[i]) for c in self.table.candidates(words[i], self.budget.max_candidates)]
            cands = [c for c in cands if WORD.fullmatch(c)]
            if tags is not None and cands:
                cands = [c for c in cands if self.pos_tagger(current[:i] + [c] + current[i + 1 :])[i] == tags[i]]
            if not cands:
                continue
            texts = [render(text, spans, current[:i] + [c] + current[i + 1 :]) for c in cands]
            probs = self._probs(texts, fixed, attack_b)
            # similarity only where a candidate could be chosen (it flips or lowers p(gold)): saves encoder passes
            useful = np.flatnonzero((probs.argmax(-1) != label) | (probs[:, label] < cur_p[label]))
            if not len(useful):
                continue
            sims = np.full(len(texts), -np.inf)
            sims[useful] = np.asarray(self.similarity(text, [texts[j] for j in useful]), dtype=np.float64)
            ok = sims >= self.budget.min_similarity + SIM_MARGIN
            flip = ok & (probs.argmax(-1) != label)
            if flip.any():
                j = int(np.where(flip, sims, -np.inf).argmax())
            else:
                j = int(np.where(ok, probs[:, label], np.inf).argmin())
                if not ok[j] or probs[j, label] >= cur_p[label]:
                    continue
            current[i] = cands[j]
            res.changed.append((int(i), words[i], cands[j]))
            cur_p, res.perturbed, res.similarity = probs[j], texts[j], float(sims[j])
            if flip.any():
                res.status, res.pred_perturbed = "success", int(probs[j].argmax())
                break
        res.changed.sort()
        res.queries = self.victim.queries - q0
        return res


# ------------------------------------------------------------------------------------------ re-check
def recheck(
    results: list[AttackResult],
    attack: TextFooler,
    fixed: Sequence[str | None],
    attack_b: bool,
) -> Counter:
    """Re-verify every successful example against the budget and constraints, from scratch.

    Violating examples get ``status="violation"`` (a failed attack) and their reasons in
    ``violations``. Returns the count per reason. Re-check queries are not charged to the attack.
    """
    budget, reasons = attack.budget, Counter()
    queries_before = attack.victim.queries
    for res, other in zip(results, fixed):
        if res.status != "success":
            continue
        why = []
        a, b = word_spans(res.original), word_spans(res.perturbed)
        ow = [res.original[s:e] for s, e in a]
        pw = [res.perturbed[s:e] for s, e in b]
        if len(ow) != len(pw) or render(res.original, a, pw) != res.perturbed:
            why.append("word_alignment")
        else:
            diff = [i for i, (x, y) in enumerate(zip(ow, pw)) if x != y]
            if len(diff) > budget.max_changes(len(ow)):
                why.append("word_budget")
            if any(is_stop_word(ow[i]) for i in diff):
                why.append("stop_word")
            if getattr(attack, "check_candidates", True):  # TextAttack recipes bring their own candidates
                allowed = [{c.lower() for c in attack.table.candidates(ow[i], budget.max_candidates)} for i in diff]
                if any(pw[i].lower() not in ok for i, ok in zip(diff, allowed)):
                    why.append("not_a_candidate")
        sim = float(np.asarray(attack.similarity(res.original, [res.perturbed]))[0])
        if sim < budget.min_similarity:
            why.append("similarity")
        probs = attack._probs([res.perturbed], other, attack_b)[0]
        if int(probs.argmax()) == res.label:
            why.append("no_flip")
        if why:
            res.status, res.violations = "violation", why
            reasons.update(why)
    attack.victim.queries = queries_before
    return reasons


def summarize(results: list[AttackResult], seconds: float, violations: Counter) -> dict[str, Any]:
    """ACC, AUA, AVG = (ACC + AUA) / 2 (PEAFT's Tables 1-2), success rate, words changed, queries."""
    n = len(results)
    correct = [r for r in results if r.status != "skipped"]
    success = [r for r in correct if r.status == "success"]
    acc = len(correct) / n if n else 0.0
    aua = (len(correct) - len(success)) / n if n else 0.0
    return {
        "n": n,
        "acc": acc,
        "aua": aua,
        "avg": (acc + aua) / 2,
        "attack_success_rate": len(success) / len(correct) if correct else 0.0,
        "mean_words_changed_fraction": float(np.mean([r.change_fraction for r in success])) if success else 0.0,
        "mean_queries": float(np.mean([r.queries for r in correct])) if correct else 0.0,
        "wall_time_per_example_s": seconds / n if n else 0.0,
        "num_success": len(success),
        "num_attacked": len(correct),
        "num_violations": sum(1 for r in results if r.status == "violation"),
        "violations": dict(violations),
    }


def result_row(r: AttackResult, fixed: str | None, attack_b: bool) -> dict[str, Any]:
    row = dataclasses.asdict(r)
    row["changed"] = [{"position": i, "from": a, "to": b} for i, a, b in r.changed]
    if fixed is not None:
        row["fixed_text"] = fixed
        row["attacked_field"] = "text_b" if attack_b else "text_a"
    return row


def run_attack(
    attack: TextFooler,
    dataset: Any,
    attack_b: bool = True,
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Attack every example of a standard-column dataset; returns ``(metrics, rows)``."""
    from tqdm.auto import tqdm

    pair = "text_b" in dataset.column_names
    labels = [int(x) for x in dataset["label"]]
    ids = list(dataset["idx"]) if "idx" in dataset.column_names else list(range(len(labels)))
    texts_a = list(dataset["text_a"])
    texts_b = list(dataset["text_b"]) if pair else [None] * len(labels)
    results, fixed = [], []
    attack.victim.queries = attack.victim.forwards = 0
    start = time.perf_counter()
    for i in tqdm(range(len(labels)), desc="Attacking", disable=not progress):
        if pair:
            target, other = (texts_b[i], texts_a[i]) if attack_b else (texts_a[i], texts_b[i])
        else:
            target, other = texts_a[i], None
        results.append(attack.attack(int(ids[i]), target, labels[i], other, attack_b))
        fixed.append(other)
    seconds = time.perf_counter() - start
    forwards = attack.victim.forwards
    violations = recheck(results, attack, fixed, attack_b)
    metrics = summarize(results, seconds, violations)
    metrics["mean_forwards"] = forwards / len(results) if results else 0.0
    return metrics, [result_row(r, f, attack_b) for r, f in zip(results, fixed)]


# ------------------------------------------------------------------------------------------ on a run folder
ATTACKS = ("textfooler",)


def attack_run(
    run_dir: str | Any,
    task: str | None = None,
    split: str | None = None,
    n: int | None = 500,
    attack: str = "textfooler",
    budget: str = "textdefender-v1",
    out: str | Any | None = None,
    data_dir: str | None = None,
    data_file: str | None = None,
    synonyms: str | None = None,
    word_vectors: str | None = None,
    similarity_model: str = "minilm",
    attack_first: bool = False,
    pos: bool = True,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Attack the first ``n`` examples of a split with a finished run's model; writes
    ``<run>/attack/<task>.<split>/{adversarial.jsonl, metrics.json}`` (metrics last, atomically)."""
    from pathlib import Path

    from .. import runs
    from ..pipeline import load_run
    from ..tasks import get_task, resolve_data_dir
    from ..threads import MachineProbe
    from .synonyms import load_candidates
    from .textattack_adapter import RECIPES, TextAttackRecipe, check_recipe, recipe_name

    recipe = recipe_name(attack)
    if attack not in ATTACKS and recipe is None:
        choices = [*ATTACKS, *(f"textattack:{r}" for r in RECIPES)]
        raise UsageError(f"unknown attack '{attack}' (choose from: {', '.join(choices)})")
    if recipe is not None:
        check_recipe(recipe)  # before any model is loaded: unknown recipe, TextAttack missing
    if n is not None and n <= 0:
        raise UsageError(f"invalid --n {n}: must be positive")
    plan = get_budget(budget)
    loaded = load_run(run_dir)
    target = get_task(task) if task else loaded.task
    if target.is_regression or not target.label_names:
        raise UsageError(f"the word-substitution attack needs a classification task; '{target.name}' is regression")
    if list(target.label_names) != list(loaded.label_names or []):
        raise UsageError(
            f"task '{target.name}' labels {list(target.label_names)} differ from the run's {loaded.label_names}"
        )
    split = target.canonical_split(split or target.eval_splits[0])
    ddir = resolve_data_dir(data_dir)
    ds = target.load(split, data_dir=ddir, data_file=data_file) if data_file else target.load(split, data_dir=ddir)
    ds = ds.filter(lambda y: y >= 0, input_columns="label")  # unlabelled rows cannot be attacked
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    table = load_candidates(synonyms, word_vectors, ddir)
    tagger = nltk_pos_tagger() if pos else None
    victim = Victim(loaded.model, loaded.tokenizer, loaded.max_length, batch_size)
    encoder = SentenceEncoder(similarity_model, batch_size, device=next(loaded.model.parameters()).device)
    if recipe is None:
        fooler = TextFooler(victim, table, encoder, plan, tagger)
    else:
        fooler = TextAttackRecipe(recipe, victim, table, encoder, plan)
    attack_b = target.pair and not attack_first
    probe = MachineProbe.start()  # threads and load of the attack, recorded beside its timings
    metrics, rows = run_attack(fooler, ds, attack_b=attack_b, progress=progress)
    out_dir = Path(out) if out else Path(loaded.path) / "attack" / f"{target.name}.{split}"
    runs.write_jsonl_atomic(out_dir / "adversarial.jsonl", rows)
    metrics = {
        "task": target.name,
        "split": split,
        "run": str(run_dir),
        "attack": attack,
        "budget": dataclasses.asdict(plan),
        **metrics,
        "attacked_field": ("text_b" if attack_b else "text_a") if target.pair else "text_a",
        "candidates": table.name,
        "similarity_model": encoder.name,
        "pos_check": tagger is not None and plan.pos_consistency and recipe is None,
        "candidate_check": recipe is None,
        "machine": probe.finish(),
    }
    runs.write_json_atomic(out_dir / "metrics.json", metrics)
    metrics["out_dir"] = str(out_dir)
    return metrics
