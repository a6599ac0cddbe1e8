"""``advtune report RESULTS_DIR [--out REPORT.md] [--no-plots]``: tables and PNG plots from run folders."""

from __future__ import annotations

from . import ArgumentParser


def main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="advtune report", description="Markdown tables and PNG plots from a folder of finished runs."
    )
    parser.add_argument("results", help="folder holding run folders (any depth), e.g. results/demo")
    parser.add_argument("--out", help="report file (default: RESULTS/REPORT.md); figures go to figures/ next to it")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    from ..report import build_report

    path = build_report(args.results, args.out, plots=not args.no_plots)
    print(f"report: {path}")
    return 0
