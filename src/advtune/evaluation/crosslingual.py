"""Cross-lingual zero-shot evaluation in the layout of TAT Table 3: accuracy per language and the average.

Protocol (TAT section 3.4, after Conneau et al. 2019): fine-tune on one language's NLI data, evaluate
on every language's test set with no target-language training. ``advtune eval --run R --task xnli``
writes, next to the overall accuracy, one ``accuracy.<lang>`` entry per language and
``accuracy.avg``, the unweighted mean over languages (TAT's "Avg." column; with XNLI's equal-size
test sets it equals the pooled accuracy, with user files of unequal sizes it does not).

This module computes from predictions only; :func:`advtune.bench.crosslingual.evaluate_crosslingual`
drives a run's evaluation (the pipeline calls this module, so this module cannot call the pipeline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..tasks.xnli import XNLI_LANGUAGES

AVG = "avg"


def language_order(languages: Iterable[str]) -> list[str]:
    """The languages present, in TAT Table 3 order first, then any others alphabetically."""
    present = set(languages)
    return [lang for lang in XNLI_LANGUAGES if lang in present] + sorted(present - set(XNLI_LANGUAGES))


def per_language_metrics(rows: Sequence[Mapping[str, Any]], languages: Sequence[str]) -> dict[str, float]:
    """``{"accuracy.<lang>": acc, ..., "accuracy.avg": mean}`` from prediction rows (``gold`` / ``pred``)."""
    if len(rows) != len(languages):
        raise ValueError(f"{len(rows)} predictions but {len(languages)} language tags")
    gold = np.asarray([r["gold"] for r in rows])
    pred = np.asarray([r["pred"] for r in rows])
    langs = np.asarray(list(languages))
    out: dict[str, float] = {}
    for lang in language_order(languages):
        sel = langs == lang
        out[f"accuracy.{lang}"] = float((gold[sel] == pred[sel]).mean())
    out[f"accuracy.{AVG}"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


def language_scores(metrics: Mapping[str, float]) -> dict[str, float]:
    """``{lang: acc, ..., "avg": mean}`` from a metrics dict written by the evaluation."""
    return {k.split(".", 1)[1]: float(v) for k, v in metrics.items() if k.startswith("accuracy.")}


def crosslingual_table(results: Mapping[str, Mapping[str, float]], percent: bool = True) -> str:
    """A markdown table, one row per run (``{row label: metrics}``), columns = languages + Avg., as TAT Table 3."""
    scores = {name: language_scores(m) for name, m in results.items()}
    langs = language_order({lang for s in scores.values() for lang in s if lang != AVG})
    head = "| Model | " + " | ".join(langs) + " | Avg. |"
    sep = "|---|" + "---:|" * (len(langs) + 1)
    lines = [head, sep]
    scale = 100.0 if percent else 1.0
    for name, s in scores.items():
        cells = [f"{s[lang] * scale:.1f}" if lang in s else "–" for lang in langs]
        avg = f"{s[AVG] * scale:.1f}" if AVG in s else "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg} |")
    return "\n".join(lines)


__all__ = ["crosslingual_table", "language_order", "language_scores", "per_language_metrics"]
