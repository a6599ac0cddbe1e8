"""TextAttack recipes on advtune models: ``advtune attack --run R --attack textattack:textfooler``.

An optional bridge for users who have TextAttack (Morris et al., 2020) installed with its resources
(counter-fitted vectors, the Universal Sentence Encoder, NLTK data...) reachable; advtune never
needs it, and nothing here downloads anything itself.

How it fits the attack command: :class:`TextAttackRecipe` is a drop-in for
:class:`~advtune.attacks.substitution.TextFooler` in :func:`~advtune.attacks.substitution.run_attack`:
the recipe queries our model through a TextAttack ``ModelWrapper`` around the same batched
:class:`~advtune.attacks.substitution.Victim`, each example's result becomes an
:class:`~advtune.attacks.substitution.AttackResult`, and then the **same post-hoc re-check** runs
against the declared advtune budget (words changed, stop words, sentence similarity with our
encoder, the flip itself): a recipe's adversarial example that exceeds the budget counts as a failed
attack and is reported by reason, so ACC / AUA / AVG are comparable with the built-in attack. The
candidate-membership check is skipped (the recipe has its own candidate source).

Pairs: the columns are named ``premise`` / ``hypothesis`` so the recipes' ``InputColumnModification``
constraint leaves the premise alone, and the hypothesis (second text) is attacked, as in advtune's
own attack; attacking the first text is not offered with TextAttack.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError
from .substitution import AttackResult, Budget, SimilarityFn, TextFooler, Victim, word_spans
from .synonyms import SynonymTable

PREFIX = "textattack:"
RECIPES = {
    "textfooler": "TextFoolerJin2019",
    "pwws": "PWWSRen2019",
    "bae": "BAEGarg2019",
    "bert-attack": "BERTAttackLi2020",
    "deepwordbug": "DeepWordBugGao2018",
    "textbugger": "TextBuggerLi2018",
    "pso": "PSOZang2020",
    "a2t": "A2TYoo2021",
}
"""``textattack:<name>`` -> TextAttack recipe class (``textattack.attack_recipes``)."""

_SINGLE, _PAIR = ("text",), ("premise", "hypothesis")


def recipe_name(attack: str) -> str | None:
    """``"textattack:pwws"`` -> ``"pwws"``; ``None`` for advtune's own attacks."""
    return attack[len(PREFIX) :] if attack.startswith(PREFIX) else None


def check_recipe(recipe: str) -> None:
    """Refuse an unknown recipe name or a missing TextAttack with one clear line."""
    if recipe not in RECIPES:
        raise UsageError(f"unknown TextAttack recipe '{recipe}' (choose from: {', '.join(RECIPES)})")
    _import_textattack()


def _import_textattack() -> Any:
    try:
        import textattack
        import textattack.attack_recipes
        import textattack.attack_results
        import textattack.models.wrappers
    except ImportError:
        raise UsageError(
            "TextAttack is not installed: pip install textattack (optional; its recipes load resources such as "
            "counter-fitted vectors and the Universal Sentence Encoder, which must be reachable)"
        ) from None
    return textattack


def _wrapper(victim: Victim, textattack: Any) -> Any:
    """A TextAttack ``ModelWrapper`` over the victim: a list of texts (or of (premise, hypothesis) tuples)
    -> class probabilities, batched and counted by the victim."""

    class VictimWrapper(textattack.models.wrappers.ModelWrapper):
        def __init__(self) -> None:
            self.model = victim.model

        def __call__(self, inputs: Sequence[Any]) -> np.ndarray:
            inputs = list(inputs)
            if inputs and not isinstance(inputs[0], str):
                first, second = zip(*inputs)
                return victim.probs(list(first), list(second))
            return victim.probs(inputs)

    return VictimWrapper()


class TextAttackRecipe(TextFooler):
    """A TextAttack recipe behind :class:`TextFooler`'s interface (``attack`` per example)."""

    check_candidates = False  # the recipe brings its own candidates; the rest of the re-check applies

    def __init__(
        self, recipe: str, victim: Victim, candidates: SynonymTable, similarity: SimilarityFn, budget: Budget
    ) -> None:
        super().__init__(victim, candidates, similarity, budget)
        check_recipe(recipe)
        self.textattack = _import_textattack()
        self.recipe = recipe
        build = getattr(self.textattack.attack_recipes, RECIPES[recipe])
        self.attack_obj = build.build(_wrapper(victim, self.textattack))

    def attack(self, idx: int, text: str, label: int, fixed: str | None = None, attack_b: bool = True) -> AttackResult:
        if fixed is not None and not attack_b:
            raise UsageError("with TextAttack recipes the second text of a pair is attacked (drop --attack-first)")
        q0 = self.victim.queries
        columns = _SINGLE if fixed is None else _PAIR
        example = OrderedDict(zip(columns, (text,) if fixed is None else (fixed, text)))
        result = self.attack_obj.attack(example, int(label))
        results = self.textattack.attack_results
        original = _field(result.original_result.attacked_text, columns[-1], text)
        perturbed = _field(result.perturbed_result.attacked_text, columns[-1], original)
        if isinstance(result, results.SkippedAttackResult):
            status = "skipped"
        elif isinstance(result, results.SuccessfulAttackResult):
            status = "success"
        else:
            status = "failed"
        spans_o, spans_p = word_spans(original), word_spans(perturbed)
        words_o = [original[s:e] for s, e in spans_o]
        words_p = [perturbed[s:e] for s, e in spans_p]
        changed = [(i, a, b) for i, (a, b) in enumerate(zip(words_o, words_p)) if a != b]
        res = AttackResult(
            idx, int(label), original, perturbed if status == "success" else original,
            int(result.original_result.output), int(result.perturbed_result.output), status,
            num_words=len(words_o), changed=changed if status == "success" else [],
        )  # fmt: skip
        if status == "success":
            res.similarity = float(np.asarray(self.similarity(original, [perturbed]))[0])
        res.queries = int(getattr(result.perturbed_result, "num_queries", 0) or (self.victim.queries - q0))
        return res


def _field(attacked_text: Any, column: str, default: str) -> str:
    """The text of one column of a TextAttack ``AttackedText``."""
    inputs = getattr(attacked_text, "_text_input", None)
    if isinstance(inputs, dict) and column in inputs:
        return str(inputs[column])
    return str(getattr(attacked_text, "text", default))
