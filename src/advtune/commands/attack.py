"""``advtune attack --run R [--task T] [--n 500] [--attack textfooler] [--budget textdefender-v1] [--out DIR]``.

Word-substitution attack (TextFooler manner) on a finished run: ACC, AUA, AVG, attack success rate,
words changed, queries; writes ``R/attack/<task>.<split>/adversarial.jsonl`` and ``metrics.json``.
For sentence pairs the second text (hypothesis / question / sentence2) is attacked unless
``--attack-first``. Rows are written as they are made: run the same command again after an
interruption and it continues at the first missing example (``--overwrite`` starts over).
"""

from __future__ import annotations

import sys

from .. import devices
from ..threads import HELP as THREADS_HELP
from ..threads import apply as apply_threads
from . import ArgumentParser


def main(argv: list[str]) -> int:
    from ..attacks.run import attack_run
    from ..attacks.substitution import ATTACKS, BUDGETS

    parser = ArgumentParser(prog="advtune attack", description=__doc__.split("\n\n")[1])
    parser.add_argument("--run", required=True, help="run folder written by advtune train")
    parser.add_argument("--task", help="task (default: the run's own); same label names as the run's")
    parser.add_argument("--split", help="split (default: the task's first evaluation split)")
    parser.add_argument("--n", type=int, default=500, help="attack the first N labelled examples (default 500)")
    parser.add_argument(
        "--sample-seed", type=int,
        help="attack a seeded random sample of N instead of the first N (the same examples for every run with the "
        "same seed): for splits sorted by label, such as the intent test sets",
    )  # fmt: skip
    parser.add_argument(
        "--attack",
        default="textfooler",
        help=f"attack: {', '.join(ATTACKS)}, or textattack:<recipe> (textfooler, pwws, bae, ...) when TextAttack "
        "is installed; every attack is re-checked against --budget",
    )
    parser.add_argument(
        "--budget",
        default="textdefender-v1",
        help=f"named, versioned budget preset ({', '.join(BUDGETS)}; default: TextDefender's)",
    )
    parser.add_argument("--out", help="output folder (default: RUN/attack/<task>.<split>)")
    parser.add_argument("--data-dir", help="data folder (default: $ADVTUNE_DATA_DIR)")
    parser.add_argument("--data-file", help="read the split from this file (task's own format)")
    parser.add_argument("--synonyms", help="synonym file: 'a b' pairs or 'word syn1 syn2 ...' lines (default: PPDB)")
    parser.add_argument("--word-vectors", help="word-vector text file; candidates = neighbours with cosine >= 0.5")
    parser.add_argument("--similarity-model", default="minilm", help="sentence encoder (default: packaged MiniLM)")
    parser.add_argument("--attack-first", action="store_true", help="pairs: attack the first text, not the second")
    parser.add_argument("--no-pos", action="store_true", help="skip the part-of-speech check even if NLTK is present")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier attack in the output folder (else it is continued)",
    )
    parser.add_argument("--threads", help=THREADS_HELP)
    parser.add_argument("--device", help=devices.HELP)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    devices.choose(args.device)

    metrics = attack_run(
        args.run,
        task=args.task,
        split=args.split,
        n=args.n,
        attack=args.attack,
        budget=args.budget,
        out=args.out,
        data_dir=args.data_dir,
        data_file=args.data_file,
        synonyms=args.synonyms,
        word_vectors=args.word_vectors,
        similarity_model=args.similarity_model,
        attack_first=args.attack_first,
        pos=not args.no_pos,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        sample_seed=args.sample_seed,
    )
    _print(metrics, args.attack)
    return 0


def _print(metrics: dict, attack: str) -> None:
    """The summary table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{attack} ({metrics['budget']['name']}) on {metrics['task']}.{metrics['split']}")
    for col in ("n", "ACC", "AUA", "AVG", "success", "words changed", "queries", "s / example", "violations"):
        table.add_column(col, justify="right")
    table.add_row(
        str(metrics["n"]),
        f"{100 * metrics['acc']:.2f}",
        f"{100 * metrics['aua']:.2f}",
        f"{100 * metrics['avg']:.2f}",
        f"{100 * metrics['attack_success_rate']:.1f}%",
        f"{100 * metrics['mean_words_changed_fraction']:.1f}%",
        f"{metrics['mean_queries']:.1f}",
        f"{metrics['wall_time_per_example_s']:.2f}",
        str(metrics["num_violations"]),
    )
    console = Console(file=sys.stdout)
    console.print(table)
    if not metrics["pos_check"]:
        console.print("part-of-speech check skipped (NLTK tagger not available)")
    console.print(f"written to {metrics['out_dir']}")
