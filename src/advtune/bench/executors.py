"""Where a grid's unfinished cells are computed: in this process, or as Ray tasks on a cluster.

:func:`advtune.bench.runner.run_grid` decides which cells are still to run (the run-folder contract:
a folder with ``metrics.json`` is finished) and hands them, with a per-cell function, to an executor.
The executor only decides where and when each call happens; it yields ``(cell, outcome)`` pairs in
completion order, the outcome being what the function returned or the exception that ended the cell,
so the grid's bookkeeping (progress bar, failures, summary) is the same whatever runs the cells.

* :class:`LocalExecutor`: this process, one cell after another in grid order (the default).
* :class:`RayExecutor`: every cell is one Ray task with declared CPUs and GPUs, on a running cluster
  (``address="auto"`` or ``"host:port"``) or on a local Ray started for the call. A cell is its whole
  pipeline (train, transfer evaluations, attack), so the attack and transfer steps of a cell are
  scheduled like its training; a cell that is trained but not attacked is a task that only attacks.
  The per-cell function is idempotent on the run folder, so Ray may rerun a cell whose worker died
  (``max_retries``): only that cell is redone, the others go on.

Results do not depend on the executor: the per-cell function seeds everything from the cell's seed, and
each Ray task sets torch's thread count (the cell's CPUs unless ``threads``) before it runs; a local grid
run on the same number of threads computes the same numbers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import UsageError

CellFn = Callable[[Any], Any]
ENV_PREFIXES = ("ADVTUNE_", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "TRANSFORMERS_", "TOKENIZERS_")
"""Driver environment variables every Ray task gets (data folder, offline mode), so that a worker on
another node reads the same data the same way. Tokens are never copied."""


class Executor(Protocol):
    def map(self, cells: Sequence[Any], cell_fn: CellFn) -> Iterator[tuple[Any, Any]]:
        """Call ``cell_fn(cell)`` for every cell; yield ``(cell, result or exception)`` as each ends."""
        ...


@dataclass
class LocalExecutor:
    """In this process, in grid order; a cell that raises is run again up to ``max_retries`` more times."""

    max_retries: int = 0

    def map(self, cells: Sequence[Any], cell_fn: CellFn) -> Iterator[tuple[Any, Any]]:
        for cell in cells:
            yield cell, _call_with_retries(cell_fn, cell, self.max_retries)


def _call_with_retries(cell_fn: CellFn, cell: Any, retries: int) -> Any:
    """The function's result, or its last exception (``KeyboardInterrupt`` is never caught).

    A :class:`UsageError` (a bad setting of the cell) is not retried: it would fail the same way again."""
    for attempt in range(retries + 1):
        try:
            return cell_fn(cell)
        except UsageError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - handed to the grid, which reports it
            if attempt == retries:
                return exc
    raise AssertionError("unreachable")


@dataclass
class RayExecutor:
    """Every cell one Ray task: ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs (fractions below 1 allowed).

    ``address``: ``None`` starts a local Ray for the call (``num_cpus``: its CPUs, default all) and stops
    it after; ``"auto"`` or an address joins a running cluster. An already initialised Ray (a test, a
    notebook) is used as it is. A task whose worker dies or that raises is rerun up to ``max_retries``
    times; after that its cell is reported failed and the grid goes on.
    """

    address: str | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    max_retries: int = 2
    threads: int | None = None
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        check_resources(self.cpus_per_cell, self.gpus_per_cell, self.max_retries)
        import_ray()

    def map(self, cells: Sequence[Any], cell_fn: CellFn) -> Iterator[tuple[Any, Any]]:
        if not cells:  # nothing left to run: no cluster is started or joined
            return
        ray = import_ray()
        started = self._connect(ray)
        try:
            _check_fits(ray, self.cpus_per_cell, self.gpus_per_cell, strict=started)
            yield from self._run(ray, cells, cell_fn)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join or start Ray; ``True`` when this call started it (and must stop it)."""
        if ray.is_initialized():
            return False
        options = {"log_to_driver": False, "logging_level": "WARNING"}  # the grid's bar is the progress report
        if self.address:
            try:
                ray.init(address=self.address, **options)
            except ConnectionError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UsageError(f"--ray-address {self.address}: {reason}") from None
            return True  # disconnects this driver only; the cluster goes on
        ray.init(num_cpus=self.num_cpus, include_dashboard=False, **options)
        return True

    def _run(self, ray: Any, cells: Sequence[Any], cell_fn: CellFn) -> Iterator[tuple[Any, Any]]:
        task = ray.remote(_run_in_worker).options(
            num_cpus=self.cpus_per_cell,
            num_gpus=self.gpus_per_cell,
            max_retries=self.max_retries,
            retry_exceptions=self.max_retries > 0,
        )
        fn_ref = ray.put(cell_fn)  # shipped to the object store once, not once per cell
        threads = self.threads or max(1, int(self.cpus_per_cell))
        env = worker_env()
        pending = {task.remote(fn_ref, _absolute(cell), threads, env): cell for cell in cells}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(done[0])
                yield cell, _outcome(ray, done[0], cell)
        finally:  # stopped early (Ctrl-C, --stop-on-error): running cells are killed and redone next time
            for ref in pending:
                ray.cancel(ref, force=True)


def _run_in_worker(cell_fn: CellFn, cell: Any, threads: int, env: dict[str, str]) -> Any:
    """One cell in a Ray worker: the driver's data settings and the cell's thread count, then the cell."""
    import torch

    os.environ.update(env)
    torch.set_num_threads(threads)
    try:
        return cell_fn(cell)
    except UsageError as exc:  # returned, not raised: Ray would retry it, and it would fail the same way again
        return exc


def _outcome(ray: Any, ref: Any, cell: Any) -> Any:
    """The task's result; else the cell's own exception (not Ray's wrapper), or Ray's error (worker died)."""
    try:
        result = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        return exc.cause if isinstance(exc.cause, Exception) else exc
    except ray.exceptions.RayError as exc:
        return exc
    if isinstance(result, Exception):
        return result
    if hasattr(cell, "is_trained") and not cell.is_trained():
        return RuntimeError(
            f"{cell.name} finished on a Ray worker but {cell.run_dir} is not finished as seen from here: "
            "the results folder must be on storage every node sees"
        )
    return result


def _absolute(cell: Any) -> Any:
    """The cell with an absolute run folder: a worker's working folder is not the driver's on a cluster."""
    if dataclasses.is_dataclass(cell) and hasattr(cell, "run_dir"):
        return dataclasses.replace(cell, run_dir=Path(cell.run_dir).absolute())
    return cell


def worker_env() -> dict[str, str]:
    """The driver's variables of :data:`ENV_PREFIXES` (no ``*TOKEN*`` variable ever leaves the driver)."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES) and "TOKEN" not in k}


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'advtune[ray]'") from None
    return ray


def check_resources(cpus: float, gpus: float, max_retries: int) -> None:
    """Refuse what Ray would refuse later, or wait on forever: negative or fractional-above-one amounts."""
    for flag, value in (("--cpus-per-cell", cpus), ("--gpus-per-cell", gpus)):
        if value < 0 or (value > 1 and value != int(value)):
            raise UsageError(f"{flag} must be a fraction up to 1 or a whole number, got {value:g}")
    if cpus == 0 and gpus == 0:
        raise UsageError("a cell needs some resource: --cpus-per-cell or --gpus-per-cell above 0")
    if max_retries < 0:
        raise UsageError(f"--max-retries must be 0 or more, got {max_retries}")


def _check_fits(ray: Any, cpus: float, gpus: float, strict: bool) -> None:
    """A cell no node can hold waits forever: refuse it on a Ray started here, warn on a cluster (it may grow)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    have = "; ".join(f"{r.get('CPU', 0):g} CPUs, {r.get('GPU', 0):g} GPUs" for r in nodes) or "no node"
    message = f"no Ray node has {cpus:g} CPUs and {gpus:g} GPUs for one cell (nodes: {have})"
    if strict:
        raise UsageError(message)
    print(f"warning: {message}; cells wait until the cluster has such a node")
