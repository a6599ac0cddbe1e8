"""Worker for test_launchers.py: ``<launcher> cli_runs_worker.py PLAN.json``.

Runs every command line of the plan (a JSON list of ``{"name", "argv"}``) through ``advtune.cli.main``, one
after the other inside this one launch, and each rank writes the exit status of each to ``<name>.rc.<rank>``
next to the plan. One launch for a dozen runs: the two processes import torch and transformers once, which
was most of the ~9 s each per-run launch took. An exception is recorded, then raised, so the launcher stops
the other rank instead of leaving it waiting in a collective.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from advtune.cli import main as cli_main
from advtune.distributed import shutdown


def main(plan_file: str) -> None:
    plan_path = Path(plan_file)
    rank = int(os.environ.get("RANK", "0"))
    for entry in json.loads(plan_path.read_text()):
        status = plan_path.with_name(f"{entry['name']}.rc.{rank}")
        try:
            code = cli_main(entry["argv"])
        except BaseException:
            status.write_text(traceback.format_exc())
            raise
        status.write_text(str(code))
    shutdown()  # what the console entry point does when a launched command exits


if __name__ == "__main__":
    main(sys.argv[1])
