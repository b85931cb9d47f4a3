"""One search trial: the searched variant with the trial's parameters on every cell of the search,
its cells run through the local engine (:class:`benchmark.engines.local.LocalEngine`), in the
search's workspace (cell locks and episode journals as for ``fssbench run``).

:class:`TrialObjective` is what Optuna calls: it records the trial's MLflow run (parameters,
provenance, the running objective as a curve, the final value and state) through
:class:`benchmark.records.search.SearchRecords`. :class:`RunningObjective` hears every episode's
row (the engine's :class:`~benchmark.engines.base.CellHooks`) and reports the running objective
to Optuna every ``report_every`` episodes (and after each cell), so a pruned trial stops there.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Callable
from typing import Any

from benchmark.engines.base import CellHooks, CellJob, Engine
from benchmark.engines.local import error_text
from benchmark.errors import FssBenchError
from benchmark.evaluation.cell import code_hash, weight_ids
from benchmark.evaluation.metrics import summarize
from benchmark.jobs.search.sampling import suggest
from benchmark.records.search import SearchRecords
from benchmark.records.tracking import git_commit, package_versions, standard_tags

MAX_CONSECUTIVE_FAILURES = 3


class RunningObjective(CellHooks):
    """The objective of ``trial`` while its cells run, reported to Optuna (and logged to the trial's
    run ``rid`` as ``running_<metric>``, step = episodes done): every ``report_every`` episodes the
    mean over the cells so far with the cell in hand at its running value, or, for the Wilcoxon
    pruner, the value of each chunk of episodes (paired across trials by its index)."""

    def __init__(self, trial: Any, spec: Any, records: SearchRecords, rid: str, log: Callable[[str], None]):
        self.trial, self.records, self.rid, self.log = trial, records, rid, log
        self.metric, self.every = spec.metric, spec.report_every
        self.wilcoxon = spec.pruner["type"] == "wilcoxon"
        self.values: list[float] = []  # finished cells' values
        self.chunk: list[dict[str, int]] = []
        self.rows: list[dict[str, int]] = []  # the cell in hand's rows
        self.total = 0  # the cell in hand's episodes
        self.reported: set[int] = set()
        self.episodes = 0

    def value_of(self, rows: list[dict[str, int]]) -> float:
        import pandas as pd

        table = pd.DataFrame(rows)
        return float(summarize(table, sorted(set(table["class"])))[self.metric])  # classes seen so far

    def report(self, value: float, step: int) -> None:
        """``value`` at ``step`` to Optuna (once per step) and the trial's run; pruned: raised."""
        import optuna

        if step in self.reported:
            return
        self.reported.add(step)
        self.trial.report(value, step)
        self.records.metric(self.rid, f"running_{self.metric}", value, step=self.episodes)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after {self.episodes} episodes (running {self.metric} {100 * value:.2f})"
            )

    # --------------------------------------------------------------------------------- the hooks
    def started(self, job: CellJob, done: int, total: int) -> None:
        self.rows, self.total = [], total
        if done:
            self.log(f"trial {self.trial.number}: resuming {job.name} at episode {done} of {total}")

    def row(self, job: CellJob, row: dict[str, int]) -> None:
        self.rows.append(row)
        self.chunk.append(row)
        self.episodes += 1
        if self.episodes % self.every:
            return
        if self.wilcoxon:  # one value per chunk of episodes, paired across trials by its index
            self.report(self.value_of(self.chunk), self.episodes // self.every - 1)
            self.chunk.clear()
        elif len(self.rows) < self.total:  # a cell's last episode reports its exact value below
            running = sum(self.values + [self.value_of(self.rows)]) / (len(self.values) + 1)
            self.report(running, self.episodes)

    # ----------------------------------------------------------------------------------- a cell
    def cell_done(self, value: float, label: str) -> None:
        self.values.append(value)
        self.records.metric(self.rid, f"{self.metric}.{label}", value)
        if not self.wilcoxon:
            self.report(sum(self.values) / len(self.values), self.episodes)

    def final(self) -> float:
        if self.wilcoxon and self.chunk:
            self.report(self.value_of(self.chunk), math.ceil(self.episodes / self.every) - 1)
        return sum(self.values) / len(self.values)


class TrialObjective:
    """Optuna's objective for the search worker ``search`` (a
    :class:`~benchmark.jobs.search.runner.SearchRunner`: its spec, method, cells, cell specs,
    workspace and records), its cells run on ``engine``. ``stopped``: this worker's trials failed
    :data:`MAX_CONSECUTIVE_FAILURES` times in a row (it stopped the study)."""

    def __init__(self, search: Any, engine: Engine):
        self.search, self.engine = search, engine
        self.failures_in_a_row = 0
        self.stopped = False

    @property
    def records(self) -> SearchRecords:
        assert self.search.records is not None
        return self.search.records

    def __call__(self, trial: Any) -> float:
        import optuna

        spec = self.search.spec
        params = suggest(trial, spec)
        settings = self.search.entry.resolve({**spec.variant.settings, **params})
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("fss.tuned_on_test", spec.tuned_on_test)
        extra = {"fss.retry_of": str(trial.user_attrs["retry_of"])} if "retry_of" in trial.user_attrs else {}
        rid = self.trial_run(trial.number, params, extra)
        trial.set_user_attr("mlflow_run_id", rid)
        running = RunningObjective(trial, spec, self.records, rid, self.search.log)
        try:
            value = self.evaluate(trial, settings, running)
        except optuna.TrialPruned:
            self.end_trial(trial, rid, "PRUNED", running.episodes)
            self.failures_in_a_row = 0
            raise
        except KeyboardInterrupt:
            self.interrupted(trial, rid, running.episodes)
            raise
        except Exception as e:
            self.failed(trial, rid, running.episodes, e)
            raise
        self.records.metric(rid, "objective", value, step=running.episodes)
        self.end_trial(trial, rid, "COMPLETE", running.episodes)
        self.failures_in_a_row = 0
        return value

    def interrupted(self, trial: Any, rid: str, episodes: int) -> None:
        """A trial stopped by Ctrl-C or SIGTERM: marked ``interrupted`` (a rerun retries it) and its
        run KILLED. Best effort: a storage or tracking store that refuses the write is logged and
        the interrupt still ends the worker (exit 130); the trial then stays RUNNING until its
        heartbeat goes stale, and a rerun retries it as a stale trial."""
        try:
            trial.set_user_attr("interrupted", True)
            text = "interrupted (SIGINT/SIGTERM); a rerun retries it"
            self.end_trial(trial, rid, "FAIL", episodes, text, "KILLED")
        except Exception as e:
            first = error_text(e).splitlines()[0] if error_text(e) else type(e).__name__
            self.search.log(
                f"trial {trial.number}: could not record the interrupt ({first}); "
                "a rerun retries it once its heartbeat is stale"
            )

    def failed(self, trial: Any, rid: str, episodes: int, e: Exception) -> None:
        """A failed trial: its run FAILED; the worker stops after too many in a row."""
        text = error_text(e)
        self.end_trial(trial, rid, "FAIL", episodes, text, "FAILED")
        self.search.log(f"trial {trial.number} FAILED: {text.splitlines()[0] if text else type(e).__name__}")
        self.failures_in_a_row += 1
        if self.failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
            self.search.log(f"{MAX_CONSECUTIVE_FAILURES} trials failed in a row: stopping this worker")
            self.stopped = True
            trial.study.stop()

    def end_trial(
        self,
        trial: Any,
        rid: str,
        state: str,
        episodes: int,
        error: str | None = None,
        status: str = "FINISHED",
    ) -> None:
        trial.set_user_attr("episodes_run", episodes)
        self.records.end_trial(rid, state, episodes, error, status)

    def evaluate(self, trial: Any, settings: dict[str, Any], running: RunningObjective) -> float:
        """Every cell of the search with ``settings``, one job at a time on the engine (each under
        its cell lock: a twin trial elsewhere); a cell's failure fails the trial."""
        search = self.search
        for cell in search.cells:
            cspec = search.cell_spec(cell, settings)
            key, _ = search.prep.key(cspec)
            job = CellJob(cspec.name, key, cspec, artifacts=False)
            for done in self.engine.run([job], search.workspace, running, f"trial {trial.number}"):
                if not done.ok:
                    raise FssBenchError(done.error)
                running.cell_done(float(done.summary[search.spec.metric]), cell.label)
        return running.final()

    # ---------------------------------------------------------------------------- the trial's run
    def trial_run(self, number: int, params: dict[str, Any], extra_tags: dict[str, str]) -> str:
        return self.records.trial_run(number, params, {**self.provenance(params), **extra_tags})

    def provenance(self, params: dict[str, Any]) -> dict[str, str]:
        """What a cell run records of where its numbers come from, for a trial: MLflow's standard
        tags, the commit, package versions and code hash, the search file, and per cell of the
        search (``dataset.foldK.Nshot.seedS``) its manifest's hash and its weights (file hashes or
        random-init ids, for the trial's own settings)."""
        search = self.search
        settings = search.entry.resolve({**search.spec.variant.settings, **params})
        manifests, weights = {}, {}
        for cell in search.cells:
            manifests[cell.label] = search.prep.manifest(cell.manifest_path).sha256
            weights[cell.label] = weight_ids(search.cell_spec(cell, settings), search.workspace.hashes)
        return {
            **standard_tags(search.spec.source),
            "fss.git_commit": git_commit(),
            "fss.versions": json.dumps(package_versions()),
            "fss.code_sha256": code_hash(),
            "fss.search_file": search.spec.source,
            "fss.manifest_sha256s": json.dumps(manifests, sort_keys=True),
            "fss.weights": json.dumps(weights, sort_keys=True),
        }
