"""``advtune report RESULTS_DIR [--out REPORT.md] [--no-plots]``: tables and PNG plots from run folders."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from . import ArgumentParser

REPORT_HEADER = "# Results: "  # the first line of every REPORT.md that advtune report writes


def main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="advtune report", description="Markdown tables and PNG plots from a folder of finished runs."
    )
    parser.add_argument("results", help="folder holding run folders (any depth), e.g. results/demo")
    parser.add_argument("--out", help="report file (default: RESULTS/REPORT.md); figures go to figures/ next to it")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    _check_out(args.out)
    from ..report import build_report

    path = build_report(args.results, args.out, plots=not args.no_plots)
    print(f"report: {path}")
    return 0


def _check_out(out: str | None) -> None:
    """``--out`` may replace a report advtune wrote, never another file, and it is a file, not a folder."""
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out} is a folder; give the report's file name, e.g. {path / 'REPORT.md'}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--out {out} lies under {parent}, which is a file")
    if path.exists():
        try:
            with open(path, encoding="utf-8") as fh:
                first = fh.readline()
        except (OSError, UnicodeDecodeError):
            first = ""
        if not first.startswith(REPORT_HEADER):
            raise UsageError(f"--out {out} exists and is not a report advtune wrote; refusing to overwrite it")
