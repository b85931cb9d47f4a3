"""What ``fssbench run`` knows and writes while an engine runs its cells, whichever engine it is.

:class:`RunLedger` is the run job's :class:`~benchmark.engines.base.CellHooks`: it claims a cell
under its lock (not when another process finished it, or failed it during this invocation;
``--force`` deletes the cell's earlier runs), opens an in-process cell's run before it runs (so
an interrupted cell is marked KILLED), and records every answer (:meth:`RunLedger.record`)
through :class:`benchmark.records.cells.CellRecords`, with the rows of ``cells.csv``. Variants
that resolve to the same cell key ("twins") run once: the others get rows pointing at its run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from benchmark.engines.base import CellDone, CellHooks, CellJob
from benchmark.errors import FssBenchError
from benchmark.plan import Cell
from benchmark.records.cells import CellOutcome, CellRecords
from benchmark.records.table import CellTable
from benchmark.workspace import Workspace

KILLED_TEXT = "interrupted (SIGINT/SIGTERM); rerun to resume"


class RunLedger(CellHooks):
    """The claims, runs and rows of one invocation (module docstring). ``twins``: cell key -> the
    cells with that key (the first is the one that runs); ``weights``: cell key -> weight ids;
    ``remote``: the engine's name when its cells run elsewhere (their runs are tagged
    ``fss.engine``, opened when the answer comes), else None."""

    def __init__(
        self,
        workspace: Workspace,
        records: CellRecords,
        table: CellTable,
        twins: dict[str, list[Cell]],
        weights: dict[str, dict[str, str]],
        force: bool,
        fail_fast: bool,
        remote: str | None,
        log: Callable[[str], None],
        started_ms: int,
    ):
        self.workspace, self.records, self.table = workspace, records, table
        self.twins, self.weights = twins, weights
        self.force, self.fail_fast, self.remote, self.log = force, fail_fast, remote, log
        self.started_ms = started_ms  # runs that ended after this are this invocation's
        self.ran: set[str] = set()  # keys this invocation claimed or recorded
        self.open_runs: dict[str, str] = {}  # key -> the run of an in-process cell in hand

    @property
    def tracker(self) -> Any:
        return self.records.tracker

    def cell_lock(self, key: str) -> Any:
        """The cell's lock for a claim or a record: an in-process engine holds it already while it
        claims, runs and answers (:class:`~benchmark.engines.local.LocalEngine`); for a remote
        engine's answers, which come long after the claim, the ledger takes it."""
        return self.workspace.cell_lock(key) if self.remote is not None else contextlib.nullcontext()

    # --------------------------------------------------------------------------------- the hooks
    def claim(self, job: CellJob) -> bool:
        """Under the cell's lock: False (with rows for its cells) when the cell finished (by another
        process, or, with --force, since this invocation started) or failed during this invocation;
        else the cell is this invocation's (--force: its earlier runs go)."""
        key, cells = job.key, self.twins[job.key]
        with self.cell_lock(key):
            runs = self.tracker.cell_runs(self.records.exp, key)
            done = next((r for r in runs if r.info.status == "FINISHED"), None)
            mine = key in self.ran
            if done is not None and (not self.force or mine or (done.info.end_time or 0) >= self.started_ms):
                how = "skipped (done)" if mine else "skipped (done by another process)"
                for c in cells:
                    self.table.skipped(c, key, done, how)
                return False
            failed = [r for r in runs if r.info.status == "FAILED" and r.info.start_time >= self.started_ms]
            if failed:  # failed just now, in another process: not again
                for c in cells:
                    self.table.failed_meanwhile(c, key, failed[0], here=mine)
                return False
            self._clear_for_force(key)
            return True

    def begin(self, job: CellJob) -> None:
        """An in-process cell's run, opened RUNNING before it runs."""
        self.open_runs[job.key] = self.records.open(self.twins[job.key][0], job.key, self.weights[job.key])

    def started(self, job: CellJob, done: int, total: int) -> None:
        if done:
            self.log(f"resuming {job.name} at episode {done} of {total}")

    def interrupted(self) -> None:
        """Ctrl-C or SIGTERM: the runs of the cells in hand are marked KILLED."""
        for rid in self.open_runs.values():
            with contextlib.suppress(Exception):
                self.records.record(rid, CellOutcome.failed(KILLED_TEXT, status="KILLED"))
        self.open_runs.clear()

    # ------------------------------------------------------------------------------- the answers
    def record(self, done: CellDone) -> None:
        """An engine's answer as the cell's run (under its lock) and rows for its cells; a failure
        stops the job with --fail-fast."""
        if done.ok:
            self._record_finished(done)
            return
        self._record_failed(done)
        if self.fail_fast:
            first = (done.error.splitlines() or [""])[0]
            raise FssBenchError(f"{done.job.name} failed (--fail-fast): {first}")

    def _record_finished(self, done: CellDone) -> None:
        key = done.job.key
        cells, rid = self.twins[key], self.open_runs.pop(key, None)
        with self.cell_lock(key):
            if rid is None and not self.force and self._finished_elsewhere(key):
                return
            try:
                self._clear_for_force(key)
                if rid is None:
                    rid = self.records.open(cells[0], key, self.weights[key], self._tags(done))
                outcome = CellOutcome.finished(done.metrics, done.artifacts, done.peak_mem_kind)
                self.records.record(rid, outcome)
            except KeyboardInterrupt:
                if rid is not None:
                    with contextlib.suppress(Exception):
                        text = "interrupted while logging; rerun to run it again"
                        self.records.record(rid, CellOutcome.failed(text, status="KILLED"))
                raise
            except Exception as e:  # nothing is left half-logged or RUNNING
                line = str(e).splitlines()[0][:300] if str(e) else ""
                text = f"logging the result failed ({type(e).__name__}: {line})"
                if rid is not None:
                    with contextlib.suppress(Exception):
                        self.records.record(rid, CellOutcome.failed(text))
                self._failed_rows(cells, key, rid, text)
                return
        self.table.ran(cells[0], key, rid, done.summary, **done.stats)
        if len(cells) > 1:
            run = self.tracker.client.get_run(rid)
            for c in cells[1:]:
                self.table.skipped(c, key, run)

    def _record_failed(self, done: CellDone) -> None:
        """A FAILED run with the error (once, under the cell's lock) and a failed row per cell."""
        key = done.job.key
        cells, rid = self.twins[key], self.open_runs.pop(key, None)
        error = done.error + ("\n" + done.traceback if done.traceback else "")
        with self.cell_lock(key):
            try:
                self._clear_for_force(key)
                if rid is None:
                    rid = self.records.record_failure(
                        cells[0], key, self.weights[key], error, self._tags(done)
                    )
                else:
                    self.records.record(rid, CellOutcome.failed(error))
            except Exception as e:  # the store is failing too: the failure stays in the results
                self.log(f"could not record the failure of {cells[0].name} in MLflow ({type(e).__name__})")
        self._failed_rows(cells, key, rid, done.error)

    # ------------------------------------------------------------------------------------ helpers
    def _tags(self, done: CellDone) -> dict[str, str]:
        """A remote engine's tags: the engine, and the worker that ran a finished cell."""
        if self.remote is None:
            return {}
        return {"fss.engine": self.remote} | ({"fss.worker": done.worker} if done.ok else {})

    def _finished_elsewhere(self, key: str) -> bool:
        """Whether another process finished the cell since it was claimed (then skipped rows)."""
        run = self.tracker.finished_cell(self.records.exp, key)
        if run is None:
            return False
        for c in self.twins[key]:
            self.table.skipped(c, key, run, "skipped (done by another process)")
        return True

    def _clear_for_force(self, key: str) -> None:
        """--force: the cell's earlier runs go, finished ones included, once per invocation."""
        if self.force and key not in self.ran:
            self.records.delete_runs(key)
        self.ran.add(key)

    def _failed_rows(self, cells: list[Cell], key: str, rid: str | None, text: str) -> None:
        """One failure (a log line) for the cell and a failed row for each twin."""
        self.table.failure(cells[0], key, rid, text)
        for c in cells[1:]:
            self.table.failed(c, key, rid, text)


def now_ms() -> int:
    """Milliseconds since the epoch (MLflow's run times)."""
    return int(time.time() * 1000)
