"""``--engine local``: cells run in this process, one after the other, each under its cell lock.

:func:`evaluate_job` is the one place a job becomes a call of the shared cell function
(:func:`benchmark.evaluation.cell.evaluate_cell`) in a :class:`~benchmark.workspace.Workspace`:
its cache, weight pool, shared stages, episode journal and artifacts folder. The local engine and
every Ray worker (:mod:`benchmark.engines.worker`) call it; :func:`failure_of` turns a cell's
error into the answer both give. In this process only, a job may score a model that is already
built (``method``: the training validation's live model) instead of one built from its spec.
"""

from __future__ import annotations

import shutil
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from tqdm import tqdm

from benchmark.engines.base import CellDone, CellHooks, CellJob
from benchmark.errors import USER_ERRORS
from benchmark.evaluation.cell import CellResult, evaluate_cell
from benchmark.methods import FewShotMethod
from benchmark.workspace import Workspace


def evaluate_job(
    job: CellJob,
    workspace: Workspace,
    on_start: Callable[[int, int], None] | None = None,
    on_episode: Callable[[int, int], None] | None = None,
    on_row: Callable[[dict[str, int]], None] | None = None,
    method: FewShotMethod | None = None,
) -> CellResult:
    """Run ``job`` with the cell function in ``workspace`` (resuming from its journal unless the
    job is ``fresh`` or keeps none); the callbacks are :func:`evaluate_cell`'s. ``method``: the
    model to score, already built in this process (else built from the job's spec)."""
    ws = workspace
    if job.fresh:  # --force: the cell's journal and artifacts start over
        shutil.rmtree(ws.cell_dir(job.key), ignore_errors=True)
    return evaluate_cell(
        job.spec,
        ws.cache,
        key=job.key,
        weights=job.weights,
        pool=ws.pool,
        method=method,
        journal_path=ws.journal_path(job.key) if job.journal else None,
        artifacts_dir=ws.artifacts_dir(job.key) if job.artifacts else None,
        qualitative=job.qualitative,
        on_start=on_start,
        on_episode=on_episode,
        on_row=on_row,
        stages=ws.stages,
    )


def answer_of(job: CellJob, result: CellResult, **stats: Any) -> CellDone:
    """The answer for a cell that ran: ``stats`` join the result's run stats."""
    return CellDone(
        job,
        True,
        metrics=result.metrics,
        summary=result.summary,
        artifacts=list(result.artifacts),
        peak_mem_kind=result.peak_memory_kind,
        stats=result.run_stats() | stats,
    )


def error_text(error: BaseException) -> str:
    """The one line(s) a failed cell or trial is recorded with: a user error's own text, else the
    error's type and text."""
    return str(error) if isinstance(error, USER_ERRORS) else f"{type(error).__name__}: {error}"


def describe_failure(error: Exception) -> tuple[str, str]:
    """A cell's error as (text, traceback): a user error's own text and no traceback, else the
    type and the text with the traceback; a CUDA out-of-memory error frees the cached memory."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
    if isinstance(error, USER_ERRORS):
        return error_text(error), ""
    return error_text(error), traceback.format_exc()


def failure_of(job: CellJob, error: Exception, worker: str = "") -> CellDone:
    """The answer for a cell that raised ``error`` (:func:`describe_failure`)."""
    return CellDone.failed(job, *describe_failure(error), worker=worker)


class LocalEngine:
    """Runs jobs in this process, one after the other (:class:`~benchmark.engines.base.Engine`).

    Each job runs under its cell lock (:meth:`Workspace.cell_lock`): a job whose lock another
    process holds is deferred, and waited for once the others are done (``log`` says so); the
    hooks' :meth:`~CellHooks.claim` is asked under the lock. ``progress``: a bar over the jobs,
    and one over the episodes of the cell in hand (on a terminal only: redirected logs get no
    cursor-up escapes). A cell's own error is a failed answer; Ctrl-C (SIGTERM), and an error
    raised by :meth:`CellHooks.row` (a pruned trial), go through. ``method``: a model already
    built in this process that every job scores instead of building its spec's (the training
    validation's live model; no remote engine can take one)."""

    name = "local"
    in_process = True

    def __init__(
        self,
        progress: bool = True,
        log: Callable[[str], None] = lambda msg: None,
        method: FewShotMethod | None = None,
    ):
        self.progress, self.log, self.method = progress, log, method

    def session(self, tracking_uri: str) -> Any:
        return nullcontext()

    def run(
        self, jobs: Sequence[CellJob], workspace: Workspace, hooks: CellHooks, desc: str = "cells"
    ) -> Iterator[CellDone]:
        bar = tqdm(total=len(jobs), desc=desc, unit="cell", disable=not self.progress)
        try:
            deferred = []
            for job in jobs:
                bar.set_postfix_str(job.name)
                lock = workspace.cell_lock(job.key)
                if not _try_acquire(lock):
                    deferred.append(job)
                    continue
                try:
                    yield from self._claimed(job, workspace, hooks)
                finally:
                    lock.release()
                bar.update()
            for job in deferred:  # held by another process: wait, then re-check
                self.log(f"waiting for {job.name}: another process is running it")
                with workspace.cell_lock(job.key):
                    yield from self._claimed(job, workspace, hooks)
                bar.update()
        finally:
            bar.close()

    def _claimed(self, job: CellJob, workspace: Workspace, hooks: CellHooks) -> Iterator[CellDone]:
        """The job, if the hooks still want it (asked under its lock, held by the caller)."""
        if hooks.claim(job):
            yield self.evaluate(job, workspace, hooks)

    def evaluate(self, job: CellJob, workspace: Workspace, hooks: CellHooks) -> CellDone:
        """One job in this process: its answer (a cell's error included)."""
        tty = self.progress and sys.stderr.isatty()
        bar = tqdm(desc=job.name, unit="ep", leave=False, disable=not tty)

        def on_start(done: int, total: int) -> None:
            bar.reset(total=total)
            bar.update(done)
            hooks.started(job, done, total)

        stopped: list[BaseException] = []

        def on_row(row: dict[str, int]) -> None:
            try:
                hooks.row(job, row)
            except BaseException as e:  # the hooks stop the cell (a pruned trial): theirs to handle
                stopped.append(e)
                raise

        try:
            hooks.begin(job)
            result = evaluate_job(
                job,
                workspace,
                on_start=on_start,
                on_episode=lambda done, total: bar.update(1),
                on_row=on_row,
                method=self.method,
            )
        except Exception as e:  # one failing cell never stops the others (the job decides)
            if stopped and e is stopped[0]:
                raise
            return failure_of(job, e)
        finally:
            bar.close()
        return answer_of(job, result)


def _try_acquire(lock: Any) -> bool:
    """Take ``lock`` if nobody else holds it; False (without waiting) if someone does."""
    from filelock import Timeout

    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    return True
