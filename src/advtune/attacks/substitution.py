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
from collections import Counter, OrderedDict
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
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
Key = tuple[str, "str | None"]
"""A victim input: the text, or the two texts of a pair (the first, then the second)."""
PAD_RATIO = 1.15
"""On a CPU, a model batch's padded token positions are at most this multiple of its real tokens (texts sorted by
length): a CPU forward costs in proportion to its token positions, padding included. On a GPU a forward costs
about the same for 3 texts as for 300 until the GPU is full, so there batches are only sorted, never split for
padding: fewer calls matter more than fewer padded positions (:func:`padding_limit`)."""


def padding_limit(max_padding: float | None, model: torch.nn.Module) -> float:
    """``max_padding``, or by default :data:`PAD_RATIO` on a CPU and no limit on any other device."""
    if max_padding is not None:
        return max_padding
    return PAD_RATIO if next(model.parameters()).device.type == "cpu" else float("inf")


ORDERS = ("victim-first", "constraint-first")
"""What the attack asks first about a word's candidates: the victim or the similarity constraint."""


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


def match_case(candidate: str, word: str) -> str:
    if word.isupper() and len(word) > 1:
        return candidate.upper()
    return candidate.capitalize() if word[:1].isupper() else candidate


# ------------------------------------------------------------------------------------------ victim
class Victim:
    """Batched probability queries to a classifier, with a score cache.

    ``queries`` counts real forward rows (texts the model scored), ``forwards`` batched model calls and
    ``cache_hits`` texts answered from the cache. The cache is a bounded LRU keyed by the exact input
    (both texts of a pair), so the greedy search never pays twice for a text it has already scored
    (a repeated word's deletion, the clean text, duplicates across examples) while memory stays bounded.
    Texts are scored in batches of similar length (:func:`length_batches`; ``max_padding``: see
    :func:`padding_limit`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        max_length: int = 128,
        batch_size: int = 64,
        cache: bool = True,
        cache_size: int = 2**16,
        max_padding: float | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size, self.max_padding = max_length, batch_size, max_padding
        self.cache: OrderedDict[Key, np.ndarray] | None = OrderedDict() if cache else None
        self.cache_size = cache_size
        self.reset_counts()

    def reset_counts(self) -> None:
        self.queries = self.forwards = self.cache_hits = 0

    @contextmanager
    def uncached(self) -> Iterator[None]:
        """Fresh queries only (the post-hoc re-check must not trust a stored score)."""
        saved, self.cache = self.cache, None
        try:
            yield
        finally:
            self.cache = saved

    def probs(self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None) -> np.ndarray:
        keys = list(zip(texts_a, texts_b if texts_b is not None else [None] * len(texts_a)))
        return self.score_many([keys])[0][0]

    def score_many(self, requests: list[list[Key]]) -> tuple[list[np.ndarray], list[int]]:
        """Probabilities for several requests (lists of ``(text_a, text_b or None)``) in shared forwards.

        Returns the arrays and, per request, the forward rows it caused (a text asked by two requests
        is charged to the first). :meth:`TextFooler.attack_many` makes one call per search step of
        several examples, so they share model calls.
        """
        keys = [k for r in requests for k in r]
        if self.cache is None:
            flat = self._forward(keys)
            bounds = np.cumsum([0, *map(len, requests)])
            return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])], [len(r) for r in requests]
        missing: dict[Key, None] = {}
        charged = []
        for r in requests:
            new = [k for k in dict.fromkeys(r) if k not in self.cache and k not in missing]
            missing.update(dict.fromkeys(new))
            charged.append(len(new))
        self.cache_hits += len(keys) - len(missing)
        if missing:
            self.cache.update(zip(missing, self._forward(list(missing))))
        for k in keys:
            self.cache.move_to_end(k)
        arrays = [np.stack([self.cache[k] for k in r]) if r else np.zeros((0, 0), np.float32) for r in requests]
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return arrays, charged

    @torch.no_grad()
    def _forward(self, keys: list[Key]) -> np.ndarray:
        """Probabilities of ``keys``, in forwards of up to ``batch_size`` texts of similar length."""
        self.model.eval()
        device = next(self.model.parameters()).device
        padding = padding_limit(self.max_padding, self.model)
        args = [[a for a, _ in keys]]
        if keys and keys[0][1] is not None:
            args.append([b for _, b in keys])
        out: np.ndarray | None = None
        for rows, enc in length_batches(self.tokenizer, args, self.max_length, self.batch_size, padding):
            probs = torch.softmax(self.model(**enc.to(device)).logits.float(), dim=-1).cpu().numpy()
            out = np.empty((len(keys), probs.shape[1]), dtype=probs.dtype) if out is None else out
            out[rows] = probs
            self.forwards += 1
            self.queries += len(rows)
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def length_batches(
    tokenizer: Any, args: list[list[str]], max_length: int, batch_size: int, max_padding: float = PAD_RATIO
) -> Iterator[tuple[np.ndarray, Any]]:
    """``(rows, padded batch)`` over the texts of ``args`` (one list, or two for pairs), shortest first.

    Every text is tokenised once. A batch holds at most ``batch_size`` texts of similar length: a text
    starts a new batch when adding it would make the batch's padded size (its length times the batch's
    texts) exceed ``max_padding`` times the batch's real tokens. Requests mix examples of every length
    when several searches share a forward; padded to their longest text, 37% of the victim's token
    positions were padding on SST-2. ``rows`` are the texts' positions in ``args``.
    """
    if not args or not args[0]:
        return
    enc = tokenizer(*args, truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in enc["input_ids"]]

    def padded(batch: list[int]) -> tuple[np.ndarray, Any]:
        return np.array(batch), tokenizer.pad({k: [v[j] for j in batch] for k, v in enc.items()}, return_tensors="pt")

    batch: list[int] = []
    real = 0  # the batch's real tokens
    for i in np.argsort(lengths, kind="stable").tolist():  # shortest first: the newest text is the longest
        if batch and (len(batch) == batch_size or lengths[i] * (len(batch) + 1) > max_padding * (real + lengths[i])):
            yield padded(batch)
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        yield padded(batch)


class SentenceEncoder:
    """Cosine similarity of mean-pooled, L2-normalised sentence embeddings (MiniLM by default)."""

    def __init__(
        self,
        name_or_path: str = "minilm",
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        max_padding: float | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        from ..modeling import resolve_model_path

        path = resolve_model_path(name_or_path)
        self.name = str(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.batch_size, self.max_padding = batch_size, max_padding
        self.rows = self.calls = 0  # texts embedded (real encoder rows), model calls
        self._references: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out: torch.Tensor | None = None
        for rows, enc in length_batches(
            self.tokenizer, [list(texts)], 256, self.batch_size, padding_limit(self.max_padding, self.model)
        ):
            enc = enc.to(device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()
            out = torch.empty(len(texts), pooled.shape[1]) if out is None else out
            out[torch.as_tensor(rows)] = pooled
            self.rows += len(rows)
            self.calls += 1
        return out if out is not None else torch.zeros(0)

    def __call__(self, original: str, candidates: Sequence[str]) -> np.ndarray:
        return self.many([(original, candidates)])[0]

    def many(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        """Similarities for several ``(original, candidates)`` requests, embedded in shared batches.

        An original is embedded once while it stays among the last few hundred (the attack asks about
        the same original once per word), not once per call.
        """
        new = [o for o in dict.fromkeys(o for o, _ in requests) if o not in self._references]
        texts = new + [t for _, cands in requests for t in cands]
        emb = self.embed(texts) if texts else torch.zeros(0)
        self._references.update(zip(new, emb))
        out, pos = [], len(new)
        for original, cands in requests:
            self._references.move_to_end(original)
            rows = emb[pos : pos + len(cands)] if len(cands) else torch.zeros(0, len(self._references[original]))
            out.append((rows @ self._references[original]).numpy())
            pos += len(cands)
        while len(self._references) > 256:
            self._references.popitem(last=False)
        return out


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
    cache_hits: int = 0
    similarity_queries: int = 0
    similarity: float = 1.0
    violations: list[str] = field(default_factory=list)

    @property
    def change_fraction(self) -> float:
        return len(self.changed) / self.num_words if self.num_words else 0.0


@dataclass
class _Example:
    """One example's state while its search runs interleaved with other examples' searches."""

    fixed: str | None
    attack_b: bool
    sims: dict[str, float] = field(default_factory=dict)  # candidate -> similarity to the original
    queries: int = 0
    cache_hits: int = 0
    similarity_queries: int = 0

    def key(self, text: str) -> Key:
        if self.fixed is None:
            return (text, None)
        return (self.fixed, text) if self.attack_b else (text, self.fixed)


Request = tuple[str, _Example, Any]
"""What a search step waits for: ``("victim", example, keys)`` or ``("similarity", example, (original, texts))``."""
Search = Generator[Request, Any, Any]


class TextFooler:
    """The greedy attack. ``similarity`` is any ``fn(original, candidates) -> cosines`` (tests pass a stub).

    ``order`` decides what is asked first about a word's candidates (the choice is the same either way,
    only the cost differs): ``"victim-first"`` (default) scores every candidate with the victim, then
    encodes only the candidates the choice depends on (:meth:`_lazy_similarities`);
    ``"constraint-first"`` encodes every candidate, then asks the victim only about those within the
    similarity threshold (TextAttack's order). With MiniLM as victim and as encoder on SST-2 the
    victim-first order is the cheaper one (``docs/attack.md``). Similarity scores are cached per example.

    Each example's search is a generator that yields its model queries; :meth:`attack_many` runs up to
    ``width`` searches side by side and answers their queries in shared forwards. The searches do not
    depend on each other, so the results are those of one-by-one attacks, in fewer model calls (which
    matters where a call has a fixed cost; on a CPU the per-word batches already fill the kernels).
    """

    similarity_chunk = 1
    """Candidates encoded per request while looking for the best one within the similarity threshold.

    One at a time: most candidates pass the threshold, so the first one asked usually ends the look (4 at
    a time sent 42% more encoder rows on SST-2); with many searches side by side the extra requests still
    share encoder calls."""

    def __init__(
        self,
        victim: Victim,
        candidates: SynonymTable,
        similarity: SimilarityFn,
        budget: Budget,
        pos_tagger: Callable[[list[str]], list[str]] | None = None,
        order: str = "victim-first",
        width: int = 64,
    ) -> None:
        if order not in ORDERS:
            raise UsageError(f"unknown candidate order '{order}' (choose from: {', '.join(ORDERS)})")
        self.victim, self.table, self.similarity, self.budget = victim, candidates, similarity, budget
        self.pos_tagger = pos_tagger if budget.pos_consistency else None
        self.order, self.width = order, max(1, width)
        self.similarity_queries = self.similarity_hits = 0

    def _probs(self, texts: list[str], fixed: str | None, attack_b: bool) -> np.ndarray:
        if fixed is None:
            return self.victim.probs(texts)
        other = [fixed] * len(texts)
        return self.victim.probs(other, texts) if attack_b else self.victim.probs(texts, other)

    def attack(self, idx: int, text: str, label: int, fixed: str | None = None, attack_b: bool = True) -> AttackResult:
        """Attack ``text`` (the second sentence when ``fixed`` holds the first and ``attack_b``)."""
        return next(self.attack_many([(idx, text, label, fixed)], attack_b))

    def attack_many(
        self, items: Iterable[tuple[int, str, int, str | None]], attack_b: bool = True
    ) -> Iterator[AttackResult]:
        """Attack ``(idx, text, label, fixed)`` items, ``width`` at a time; results in input order.

        A subclass that overrides :meth:`attack` (the TextAttack bridge) is run one example at a time.
        """
        if type(self).attack is not TextFooler.attack:
            for idx, text, label, fixed in items:
                yield self.attack(idx, text, label, fixed, attack_b)
            return
        pending, running, done, nxt = iter(enumerate(items)), {}, {}, 0
        while True:
            while len(running) < self.width and (item := next(pending, None)) is not None:
                pos, (idx, text, label, fixed) = item
                self._advance(running, done, pos, self._run(idx, text, label, fixed, attack_b), None)
            while nxt in done:
                yield done.pop(nxt)
                nxt += 1
            if not running:
                return
            order = list(running)
            replies = self._serve([running[pos][1] for pos in order])
            for pos, reply in zip(order, replies):
                self._advance(running, done, pos, running.pop(pos)[0], reply)

    @staticmethod
    def _advance(running: dict, done: dict, pos: int, search: Search, reply: Any) -> None:
        """Resume one search with the answer to its last request, until it asks again or finishes."""
        try:
            running[pos] = (search, search.send(reply))
        except StopIteration as stop:
            done[pos] = stop.value

    def _serve(self, requests: list[Request]) -> list[Any]:
        """Answer the waiting searches' requests: one shared victim call, one shared encoder call."""
        replies: list[Any] = [None] * len(requests)
        asks = [i for i, r in enumerate(requests) if r[0] == "victim"]
        if asks:
            arrays, charged = self.victim.score_many([requests[i][2] for i in asks])
            for i, probs, rows in zip(asks, arrays, charged):
                ex = requests[i][1]
                ex.queries, ex.cache_hits = ex.queries + rows, ex.cache_hits + len(probs) - rows
                replies[i] = probs
        asks = [i for i, r in enumerate(requests) if r[0] == "similarity"]
        if asks:
            many = getattr(self.similarity, "many", None)
            payloads = [requests[i][2] for i in asks]
            values = many(payloads) if many else [self.similarity(o, t) for o, t in payloads]
            for i, v in zip(asks, values):
                replies[i] = np.asarray(v, dtype=np.float64)
        return replies

    def _victim(self, ex: _Example, texts: list[str]) -> Search:
        return (yield ("victim", ex, [ex.key(t) for t in texts]))

    def _similarities(self, ex: _Example, original: str, texts: list[str]) -> Search:
        """Similarity of each text to ``original``; a text is sent to the encoder once per example."""
        missing = [t for t in dict.fromkeys(texts) if t not in ex.sims]
        if missing:
            ex.sims.update(zip(missing, (yield ("similarity", ex, (original, missing)))))
        ex.similarity_queries += len(missing)
        self.similarity_queries += len(missing)
        self.similarity_hits += len(texts) - len(missing)
        return np.array([ex.sims[t] for t in texts], dtype=np.float64)

    def _run(self, idx: int, text: str, label: int, fixed: str | None, attack_b: bool) -> Search:
        """One example's attack, as a generator of model requests; returns its :class:`AttackResult`."""
        ex = _Example(fixed, attack_b)
        p0 = (yield from self._victim(ex, [text]))[0]
        pred0 = int(p0.argmax())
        res = AttackResult(idx, label, text, text, pred0, pred0, "skipped", num_words=len(word_spans(text)))
        if pred0 == label:
            res.status = "failed"
            yield from self._search(ex, res, p0)
        res.queries, res.cache_hits, res.similarity_queries = ex.queries, ex.cache_hits, ex.similarity_queries
        return res

    def _search(self, ex: _Example, res: AttackResult, p0: np.ndarray) -> Search:
        """Greedy replacement, most important word first, until the label flips or the budget is spent."""
        text, label, spans = res.original, res.label, word_spans(res.original)
        words = [text[s:e] for s, e in spans]
        max_changes = self.budget.max_changes(len(words))
        options = self._word_candidates(words) if max_changes else []
        ranked = yield from self._importance_order(ex, text, spans, options, p0, label)
        tags = self.pos_tagger(words) if self.pos_tagger and ranked else None
        current, cur_p = list(words), p0
        for i in ranked:
            if len(res.changed) >= max_changes:
                break
            cands = options[i]
            if tags is not None:
                cands = [c for c in cands if self.pos_tagger(current[:i] + [c] + current[i + 1 :])[i] == tags[i]]
            texts = [render(text, spans, current[:i] + [c] + current[i + 1 :]) for c in cands]
            pick = (yield from self._choose(ex, text, texts, label, cur_p)) if texts else None
            if pick is None:
                continue
            j, cur_p, res.similarity, flipped = pick
            current[i] = cands[j]
            res.changed.append((int(i), words[i], cands[j]))
            res.perturbed = texts[j]
            if flipped:
                res.status, res.pred_perturbed = "success", int(cur_p.argmax())
                break
        res.changed.sort()

    def _word_candidates(self, words: list[str]) -> list[list[str]]:
        """Each word's allowed replacements (none for a stop word), capitalised like the word."""
        out = []
        for w in words:
            cands = [] if is_stop_word(w) else self.table.candidates(w, self.budget.max_candidates)
            out.append([c for c in (match_case(c, w) for c in cands) if WORD.fullmatch(c)])
        return out

    def _importance_order(
        self,
        ex: _Example,
        text: str,
        spans: list[tuple[int, int]],
        options: list[list[str]],
        p0: np.ndarray,
        label: int,
    ) -> Search:
        """Replaceable words, most important first, by deletion importance (TextFooler eq. 2).

        Only words with candidates are deleted and scored: the others can never be replaced, so their
        importance would be queries spent for nothing (the order of the rest is unchanged: stable sort).
        """
        idx = [i for i, cands in enumerate(options) if cands]
        if not idx:
            return []
        pd = yield from self._victim(ex, [delete_word(text, spans, i) for i in idx])  # one batched query
        new = pd.argmax(-1)
        imp = p0[label] - pd[:, label] + (new != label) * (pd[np.arange(len(idx)), new] - p0[new])
        return [idx[k] for k in np.argsort(-imp, kind="stable")]

    def _choose(self, ex: _Example, text: str, texts: list[str], label: int, cur_p: np.ndarray) -> Search:
        """TextFooler's pick among one word's candidates: ``(index, probs, similarity, flipped)`` or ``None``.

        Among candidates within the similarity threshold, the most similar one that flips the label;
        otherwise the one that lowers p(gold) most, if it lowers it.
        """
        probs, sims = yield from self._score(ex, text, texts, label, cur_p)
        ok = sims >= self.budget.min_similarity + SIM_MARGIN
        flip = ok & (probs.argmax(-1) != label)
        if flip.any():
            j = int(np.where(flip, sims, -np.inf).argmax())
        else:
            j = int(np.where(ok, probs[:, label], np.inf).argmin())
            if not ok[j] or probs[j, label] >= cur_p[label]:
                return None
        return j, probs[j], float(sims[j]), bool(flip.any())

    def _score(self, ex: _Example, text: str, texts: list[str], label: int, cur_p: np.ndarray) -> Search:
        """Victim probabilities and similarities of the candidates, in ``self.order``; what is not needed
        for the choice is not computed (similarity ``-inf``, probabilities ``nan``)."""
        if self.order == "victim-first":
            probs = yield from self._victim(ex, texts)
            return probs, (yield from self._lazy_similarities(ex, text, texts, probs, label, cur_p))
        sims = yield from self._similarities(ex, text, texts)
        keep = np.flatnonzero(sims >= self.budget.min_similarity + SIM_MARGIN)
        probs = np.full((len(texts), len(cur_p)), np.nan)
        if len(keep):
            probs[keep] = yield from self._victim(ex, [texts[j] for j in keep])
        return probs, sims

    def _lazy_similarities(
        self, ex: _Example, text: str, texts: list[str], probs: np.ndarray, label: int, cur_p: np.ndarray
    ) -> Search:
        """Only the similarities :meth:`_choose` can use, given the victim's scores.

        If some candidate flips the label, the choice is the most similar flipping one within the
        threshold: only flipping candidates are encoded. Otherwise (or if none is within it) the choice
        is the lowest p(gold) within the threshold: candidates that lower p(gold) are encoded in
        increasing p(gold) (stable, so ties keep ``argmin``'s order), a few at a time, until one passes.
        """
        sims = np.full(len(texts), -np.inf)
        threshold = self.budget.min_similarity + SIM_MARGIN
        flips = np.flatnonzero(probs.argmax(-1) != label)
        if len(flips):
            sims[flips] = yield from self._similarities(ex, text, [texts[j] for j in flips])
            if (sims[flips] >= threshold).any():
                return sims
        lower = [j for j in np.argsort(probs[:, label], kind="stable") if probs[j, label] < cur_p[label]]
        lower = [j for j in lower if sims[j] == -np.inf]
        for start in range(0, len(lower), self.similarity_chunk):
            chunk = lower[start : start + self.similarity_chunk]
            sims[chunk] = yield from self._similarities(ex, text, [texts[j] for j in chunk])
            if (sims[chunk] >= threshold).any():
                break
        return sims


# ------------------------------------------------------------------------------------------ re-check
def recheck(
    results: list[AttackResult],
    attack: TextFooler,
    fixed: Sequence[str | None],
    attack_b: bool,
) -> Counter:
    """Re-verify every successful example against the budget and constraints, from scratch.

    Violating examples get ``status="violation"`` (a failed attack) and their reasons in
    ``violations``. Returns the count per reason. Re-check queries bypass the victim's score cache
    (a fresh forward for every flip) and are not charged to the attack.
    """
    victim = attack.victim
    counts = victim.queries, victim.forwards, victim.cache_hits
    with victim.uncached():
        reasons = _recheck(results, attack, fixed, attack_b)
    victim.queries, victim.forwards, victim.cache_hits = counts
    return reasons


def _recheck(results: list[AttackResult], attack: TextFooler, fixed: Sequence[str | None], attack_b: bool) -> Counter:
    budget, reasons = attack.budget, Counter()
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
    return reasons


def summarize(results: list[AttackResult], seconds: float, violations: Counter) -> dict[str, Any]:
    """ACC, AUA, AVG = (ACC + AUA) / 2 (PEAFT's Tables 1-2), success rate, words changed, queries.

    ``mean_queries`` counts real victim forward rows per attacked example (cache hits apart, in
    ``mean_cache_hits``); ``mean_similarity_queries`` the texts sent to the similarity encoder.
    """
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
        "mean_cache_hits": float(np.mean([r.cache_hits for r in correct])) if correct else 0.0,
        "mean_similarity_queries": float(np.mean([r.similarity_queries for r in correct])) if correct else 0.0,
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
    items, fixed = [], []
    attack.victim.reset_counts()
    start = time.perf_counter()
    for i in range(len(labels)):
        if pair:
            target, other = (texts_b[i], texts_a[i]) if attack_b else (texts_a[i], texts_b[i])
        else:
            target, other = texts_a[i], None
        items.append((int(ids[i]), target, labels[i], other))
        fixed.append(other)
    stream = attack.attack_many(items, attack_b)  # several examples share each forward
    results = list(tqdm(stream, total=len(items), desc="Attacking", disable=not progress))
    seconds = time.perf_counter() - start
    forwards = attack.victim.forwards
    violations = recheck(results, attack, fixed, attack_b)
    metrics = summarize(results, seconds, violations)
    metrics["mean_forwards"] = forwards / len(results) if results else 0.0
    return metrics, [result_row(r, f, attack_b) for r, f in zip(results, fixed)]


# ------------------------------------------------------------------------------------------ on a run folder
ATTACKS = ("textfooler",)
