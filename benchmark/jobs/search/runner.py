"""``fssbench search``: an Optuna search whose trials run the shared cell function on validation
manifests, tracked in MLflow, resumable, shared by any number of worker processes.

One trial = the searched variant with the trial's switches, evaluated on every validation cell of
the search (dataset x fold x shot x seed) with :func:`benchmark.evaluation.cell.evaluate_cell`, run by the local engine
(:mod:`benchmark.jobs.search.objective`). After every
``report_every`` episodes (and after each cell) the running objective goes to ``trial.report``;
a pruned trial stops there and records how many episodes it ran. Frozen features are cached on
disk in the work folder, so trials after the first cost only the method's own forward.

Records:

* Optuna: the study (default storage ``optuna.db`` beside the MLflow store) carries the search's
  identity hash; resuming it with a different search is refused. RDB storages run heartbeats, so a
  trial whose worker died is failed and retried with the same parameters, not left RUNNING.
* Workers: what two of them could race on (creating or joining the study and its parent run,
  enqueueing retries, recording a stale trial, writing the outputs) runs under :class:`~benchmark.jobs.search.storage.StudyLock`.
* MLflow: one parent run per Optuna study (``fss.kind = search``), found again on resume and by
  every worker; one nested run per trial number (``fss.kind = trial``) with its parameters, the
  running objective as a curve (step = episodes done), the final value and the trial's state.
* At the end: the best parameters as a study file for the test manifests, the trials table and
  Optuna's plots (history, importances, slice, contour) as PNG, logged to the parent run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.engines.local import LocalEngine
from benchmark.evaluation.cell import CellSpec
from benchmark.interrupts import sigterm_as_interrupt
from benchmark.io_utils import say
from benchmark.jobs.cells import CellPrep
from benchmark.jobs.search.objective import TrialObjective
from benchmark.jobs.search.outputs import SearchOutcome, check_test_tuning
from benchmark.jobs.search.storage import DEFAULT_HEARTBEAT_S
from benchmark.jobs.search.study import SearchStudy
from benchmark.methods import get_method
from benchmark.plan import cell_spec, study_manifests
from benchmark.specs.search import SearchSpec
from benchmark.workspace import Workspace


@dataclass(frozen=True)
class SearchCell:
    dataset: str
    fold: int
    shot: int
    seed: int
    manifest_path: Path

    @property
    def label(self) -> str:
        return f"{self.dataset}.fold{self.fold}.{self.shot}shot.seed{self.seed}"


class SearchRunner:
    """Runs (or resumes) the Optuna study of a search in this process (one worker); see the module
    docstring. Its trials' cells run on a quiet :class:`LocalEngine` in its workspace."""

    def __init__(
        self,
        spec: SearchSpec,
        tracking_uri: str | None = None,
        work_dir: Path = Path("fssbench-runs"),
        storage: str | None = None,
        study_name: str | None = None,
        trials: int | None = None,
        timeout: float | None = None,
        allow_test_tuning: bool = False,
        device: str | None = None,
        heartbeat_s: int = DEFAULT_HEARTBEAT_S,
        use_cache: bool = True,
        progress: bool = True,
        memory_cache_bytes: int = 2 << 30,
        log: Callable[[str], None] = say,
    ):
        check_test_tuning(spec, allow_test_tuning)
        self.spec, self.progress, self.log = spec, progress, log
        # trials that differ only downstream of a stage (say scma_scale) share it on each episode
        self.workspace = Workspace.for_study(
            spec.study.cache, work_dir, use_cache=use_cache, memory_cache_bytes=memory_cache_bytes
        )
        self.work_dir = self.workspace.work_dir
        self.prep = CellPrep(self.workspace)
        self.search = SearchStudy(spec, tracking_uri, self.work_dir, storage, study_name, heartbeat_s)
        self.trials = trials or spec.trials
        self.timeout = timeout
        self.device = device or spec.variant.device
        self.entry = get_method(spec.variant.method)
        self.objective = TrialObjective(self, LocalEngine(progress=False))
        self.cells: list[SearchCell] = []

    # the workspace's and the study's parts, by their old names
    cache = property(lambda self: self.workspace.cache)
    hashes = property(lambda self: self.workspace.hashes)
    tracker = property(lambda self: self.search.tracker)
    records = property(lambda self: self.search.records)
    study_name = property(lambda self: self.search.study_name)
    parent_run_id = property(lambda self: self.search.parent_run_id)

    # ------------------------------------------------------------------------------------ planning
    def plan(self) -> list[SearchCell]:
        """The validation (or, when allowed, test) manifests of every cell, with their images checked."""
        manifests = study_manifests(self.spec.study, self.work_dir, kind=self.spec.kind)
        cells = [SearchCell(ds, f, k, s, p) for (ds, f, k, s), p in manifests.items()]
        data = self.spec.study.data
        self.prep.check_images((c.manifest_path, data[c.dataset]) for c in cells)
        return cells

    def cell_spec(self, cell: SearchCell, settings: dict[str, Any]) -> CellSpec:
        """The spec of the searched variant with the trial's ``settings`` on ``cell``."""
        return cell_spec(
            self.spec.study,
            self.spec.variant,
            (cell.dataset, cell.fold, cell.shot, cell.seed),
            cell.manifest_path,
            method=self.entry.name,
            device=self.device,
            settings=settings,
            explicit=frozenset(self.spec.space),
        )

    def preflight(self) -> None:
        """Real weights are loaded strictly once now (and kept for the trials): a wrong checkpoint is
        an error before any store or study exists."""
        settings = self.spec.variant.settings
        if settings.get("random_init"):
            return
        blame = f"{self.spec.source}: variant {self.spec.variant.name}"
        self.prep.preflight([(self.cell_spec(self.cells[0], settings), None, blame)])

    # ---------------------------------------------------------------------------------------- run
    def run(self) -> SearchOutcome:
        with sigterm_as_interrupt():
            return self._run()

    def _run(self) -> SearchOutcome:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.cells = self.plan()
        self.preflight()
        search = self.search
        search.open(self._on_stale)
        search.retry_interrupted()
        records = search.records
        assert records is not None
        done = search.finished()
        t0 = time.perf_counter()
        ran_here = 0
        status = "FAILED"
        records.reopen_parent()
        from tqdm import tqdm

        bar = tqdm(
            total=self.trials,
            initial=min(done, self.trials),
            desc=f"search {self.study_name}",
            unit="trial",
            disable=not self.progress,
        )
        try:
            if done < self.trials:
                if done:
                    self.log(
                        f"resuming Optuna study {self.study_name!r}: {done} of {self.trials} trials finished"
                    )
                ran_here = self._optimize(search.study, bar)
            else:
                self.log(
                    f"Optuna study {self.study_name!r} already has {done} finished trials (--trials {self.trials})"
                )
            status = "FAILED" if self.objective.stopped else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            bar.close()
            records.end_parent(status)
        failures = self.objective.failures_in_a_row if self.objective.stopped else 0
        return search.outcome(ran_here, time.perf_counter() - t0, self.cache.stats.summary(), failures)

    def _optimize(self, study: Any, bar: Any) -> int:
        """This worker's trials, until the study has ``--trials`` finished ones; returns how many
        ran here."""
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        counted = _TrialCounter(bar, self.spec.metric)
        # no n_trials: a failed trial does not count towards --trials (only finished ones
        # do), so the worker stops at --trials finished trials in the study, after
        # MAX_CONSECUTIVE_FAILURES failures in a row, at --timeout, or when a grid is walked
        study.optimize(
            self.objective,
            timeout=self.timeout,
            catch=(Exception,),
            callbacks=[
                MaxTrialsCallback(self.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                counted,
            ],
            gc_after_trial=False,
        )
        return counted.ran_here

    def _on_stale(self, study: Any, trial: Any) -> None:
        """A trial whose worker stopped heartbeating was failed by Optuna: its MLflow run is marked
        FAILED (created if the worker died before making it), and it is retried as a new trial. Under
        the study lock and only if no retry of it exists yet: two workers that both saw it stale
        (SQLite does not lock the row they both read) record and retry it once."""
        from optuna.storages import RetryFailedTrialCallback

        search = self.search
        assert search.records is not None and search.lock is not None
        message = "its worker stopped sending heartbeats (killed or lost); retried as a new trial"
        with search.lock:
            history = [t.system_attrs.get("retry_history") or [] for t in study.get_trials(deepcopy=False)]
            if any(h and h[-1] == trial.number for h in history):
                return  # another worker recorded and retried it already
            rid = trial.user_attrs.get("mlflow_run_id")
            try:
                if rid is None:
                    rid = self.objective.trial_run(trial.number, trial.params, {})
                search.records.fail_stale(rid, message)
            finally:
                RetryFailedTrialCallback(max_retry=3)(study, trial)


class _TrialCounter:
    """Optuna's callback for this worker's trials: counts them, moves the bar on finished ones and
    shows the best value."""

    def __init__(self, bar: Any, metric: str):
        self.bar, self.metric, self.ran_here = bar, metric, 0

    def __call__(self, study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        self.ran_here += 1
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.bar.update()
        with contextlib.suppress(ValueError):  # no trial completed yet
            self.bar.set_postfix_str(f"best {self.metric} {100 * study.best_value:.2f}")
