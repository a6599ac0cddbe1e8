"""``advtune export RESULTS DEST``: a results tree's records without its models (:mod:`advtune.bench.export`)."""

from __future__ import annotations

from . import ArgumentParser


def main(argv: list[str]) -> int:
    from ..bench.export import LEFT_OUT

    parser = ArgumentParser(
        prog="advtune export",
        description="Copy the finished runs of a results folder without model weights, tokenizers, adversarial "
        "texts and logs: what `advtune report` reads and what lets `advtune bench --out DEST` skip finished "
        f"cells. Left out: {', '.join(LEFT_OUT)}. Absolute paths in JSON files are made relative. Running it "
        "again adds the runs finished since.",
    )
    parser.add_argument("results", help="results folder (advtune bench --out) or a folder of run folders")
    parser.add_argument("dest", help="records folder: new, empty, or one advtune wrote")
    args = parser.parse_args(argv)

    from ..bench.export import export_results

    summary = export_results(args.results, args.dest)
    print(
        f"exported {len(summary.runs)} finished run(s), {summary.files} files, {summary.bytes / 1e6:.1f} MB "
        f"to {args.dest}"
    )
    for name in summary.unfinished:
        print(f"  left out (unfinished): {name}")
    return 0
