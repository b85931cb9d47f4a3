"""``fssbench run``: every cell (variant x dataset x fold x shot x seed) of a study, on an engine.

:class:`RunJob` composes the four parts; the numbers come from the shared cell function
(:func:`benchmark.evaluation.cell.evaluate_cell`), run by the engine. For each cell:

1. plan: its key is computed from the resolved settings, the manifest hash and the weight-file
   hashes (cached), with no model built; a key with a FINISHED MLflow run is skipped (unless
   ``force``), one finished in another experiment is reused (tag ``fss.reused_from``);
2. the engine (:class:`benchmark.engines.local.LocalEngine` by default,
   :class:`benchmark.engines.ray.RayEngine` for ``--engine ray``) runs the rest; a per-cell file
   lock (``<work-dir>/locks/``) makes sure that two processes on the same work folder never run or
   record the same cell;
3. records: each answer becomes the cell's child run under the invocation's parent run
   (:class:`benchmark.jobs.run_ledger.RunLedger`, through :mod:`benchmark.records`); a failing
   cell is marked FAILED with the error as the ``fss.error`` tag and the study goes on
   (``fail_fast`` stops); SIGINT and SIGTERM mark the running child and the parent KILLED.

What the cells share (feature cache, weight pool, stages, hashes, locks, cell folders) is the
:class:`benchmark.workspace.Workspace`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.engines.base import CellJob, Engine
from benchmark.engines.local import LocalEngine
from benchmark.episodes.manifest import Manifest
from benchmark.interrupts import sigterm_as_interrupt
from benchmark.io_utils import say
from benchmark.jobs.cells import CellPrep
from benchmark.jobs.run_ledger import RunLedger, now_ms
from benchmark.plan import Cell, study_cells, study_manifests
from benchmark.records.cells import CellRecords
from benchmark.records.downloads import resolve_artifact_uris
from benchmark.records.table import CellTable, write_cells_csv
from benchmark.records.tracking import Tracker, default_tracking_uri
from benchmark.specs.study import Study
from benchmark.workspace import Workspace

Keys = dict[str, tuple[str, dict[str, str]]]
"""cell name -> (cell key, weight ids)."""


class RunJob:
    """``fssbench run`` of ``study`` on ``engine`` (default: a :class:`LocalEngine`); the other
    arguments are the command's options (module docstring). :meth:`run` returns the invocation's
    ``cells.csv`` table; ``failures`` lists the cells that failed."""

    def __init__(
        self,
        study: Study,
        tracking_uri: str | None = None,
        work_dir: Path = Path("fssbench-runs"),
        force: bool = False,
        use_cache: bool = True,
        cache_dir: Path | None = None,
        progress: bool = True,
        shard: tuple[int, int] = (0, 1),
        qualitative: int = 3,
        memory_cache_bytes: int = 2 << 30,
        fail_fast: bool = False,
        log: Callable[[str], None] = say,
        cache_max_bytes: int | None = None,
        compile: bool = False,
        engine: Engine | None = None,
    ):
        self.study, self.force, self.progress, self.shard = study, force, progress, shard
        self.qualitative, self.fail_fast, self.log = qualitative, fail_fast, log
        self.compile = compile
        self.tracking_uri = tracking_uri
        self.engine: Engine = engine or LocalEngine(progress=progress, log=log)
        # episode stages shared by the variants of a manifest (off with the cache: --no-cache)
        self.workspace = Workspace.for_study(
            study.cache,
            work_dir,
            cache_dir=cache_dir,
            use_cache=use_cache,
            memory_cache_bytes=memory_cache_bytes,
            cache_max_bytes=cache_max_bytes,
        )
        self.work_dir = self.workspace.work_dir
        self.prep = CellPrep(self.workspace)
        self.table = CellTable(None, log)
        self.tracker: Tracker | None = None
        self.records: CellRecords | None = None
        self.parent = ""

    # the workspace's parts, by their old names (profile, demo and tests read them)
    cache = property(lambda self: self.workspace.cache)
    pool = property(lambda self: self.workspace.pool)
    stages = property(lambda self: self.workspace.stages)
    hashes = property(lambda self: self.workspace.hashes)
    # this invocation's rows (cells.csv) and failed cells
    results = property(lambda self: self.table.rows)
    failures = property(lambda self: self.table.failures)

    # ---------------------------------------------------------------------------------- planning
    def build_manifests(self) -> dict[tuple, Path]:
        """All manifests of the study, built (and validated) before any model work."""
        return study_manifests(self.study, self.work_dir)

    def cells(self, manifests: dict[tuple, Path]) -> list[Cell]:
        """The study's cells on ``manifests`` (this shard's share)."""
        i, n = self.shard
        return [c for k, c in enumerate(study_cells(self.study, manifests, self.compile)) if k % n == i]

    def manifest(self, path: Path) -> Manifest:
        """A manifest of this study, read (and its hash verified) once per invocation."""
        return self.prep.manifest(path)

    def keys(self, cells: list[Cell]) -> Keys:
        """cell name -> (cell key, weight ids), computed without building any model."""
        return {c.name: self.prep.key(c.spec) for c in cells}

    def check_images(self, todo: list[Cell]) -> None:
        """Decode every image and label the cells to run use (:meth:`CellPrep.check_images`)."""
        self.prep.check_images((c.spec.manifest_path, c.spec.data_root) for c in todo)

    def preflight(self, todo: list[Cell], keys: Keys) -> None:
        """Every distinct set of real weights the cells to run need, loaded strictly
        (:meth:`CellPrep.preflight`; kept for an in-process engine): a wrong checkpoint names
        the variant now."""
        checks = [
            (c.spec, keys[c.name][1], f"{self.study.source}: variants.{c.variant} ({c.name})") for c in todo
        ]
        self.prep.preflight(checks, keep=self.engine.in_process)

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> pd.DataFrame:
        """The study's cells (module docstring): the engine's session (a Ray cluster joined, and
        refused before any store or run exists when it cannot share the store) around the job."""
        with self.engine.session(self.tracking_uri or default_tracking_uri()), sigterm_as_interrupt():
            return self._run()

    def _run(self) -> pd.DataFrame:
        self.table, self.prep = CellTable(None, self.log), CellPrep(self.workspace)
        self.started_ms = now_ms()  # runs that ended after this are this invocation's
        cells = resolve_artifact_uris(
            self.cells(self.build_manifests()), self.work_dir, self.tracking_uri, self.study.source
        )
        keys = self.keys(cells)  # no model is built and no unchanged checkpoint is hashed again
        finished = {} if self.force else self._finished_without_creating()
        todo = [c for c in cells if keys[c.name][0] not in finished]
        self.check_images(todo)  # a corrupt image fails here, before any store or run exists
        self.preflight(todo, keys)  # so do weights that do not fit
        tracker = self.tracker = self.tracker or Tracker(self.tracking_uri)
        exp = tracker.experiment_id(self.study.name)
        self.records = self.table.records = CellRecords(tracker, self.study, exp, self.manifest)
        for c in cells:
            if keys[c.name][0] in finished:
                self.table.skipped(c, keys[c.name][0], finished[keys[c.name][0]])
        if len(todo) < len(cells):
            self.log(f"{len(cells) - len(todo)} of {len(cells)} cells already finished, skipped")
        if not self.force:
            todo = self._reuse_from_other_experiments(exp, todo, keys)
        if todo:
            self._run_cells(todo, keys)
        order = {c.name: i for i, c in enumerate(cells)}
        self.results.sort(key=lambda r: order[r["cell"]])
        table = pd.DataFrame(self.results)
        self.write_cells_csv(table)
        return table

    def write_cells_csv(self, table: pd.DataFrame) -> None:
        """``cells.csv``, merged with what another process wrote there meanwhile (:func:`write_cells_csv`)."""
        write_cells_csv(self.cells_csv, table)

    @property
    def cells_csv(self) -> Path:
        """``<work-dir>/studies/<name>/cells.csv`` (``cells-shard<i>of<n>.csv`` for a shard)."""
        i, n = self.shard
        name = "cells.csv" if n == 1 else f"cells-shard{i}of{n}.csv"
        return self.work_dir / "studies" / self.study.name / name

    def _finished_without_creating(self) -> dict[str, Any]:
        """Finished cells of the study's experiment, read without creating the store or the experiment."""
        if not Tracker.store_exists(self.tracking_uri):
            return {}
        self.tracker = Tracker(self.tracking_uri)
        exp = self.tracker.client.get_experiment_by_name(self.study.name)
        return {} if exp is None else self.tracker.finished_cells(exp.experiment_id)

    def _run_cells(self, todo: list[Cell], keys: Keys) -> None:
        """The parent run, then :meth:`execute`; the parent ends FINISHED, FAILED or KILLED."""
        records = self.records
        assert records is not None
        if self.study.random_init:
            self.log(
                "WARNING: RANDOM-INIT WEIGHTS in this study (tagged fss.random_init=true): numbers check the pipeline only"
            )
        self.parent = records.start_parent(len(todo))
        status = "FAILED"
        try:
            records.log_study()
            self.execute(todo, keys)
            status = "FAILED" if self.failures else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            records.end_parent(status)

    def execute(self, todo: list[Cell], keys: Keys) -> None:
        """The unfinished cells on the engine, one job per cell key (variants that resolve alike
        run once), each answer recorded as it comes (:class:`RunLedger`)."""
        assert self.records is not None
        twins: dict[str, list[Cell]] = {}
        for c in todo:
            twins.setdefault(keys[c.name][0], []).append(c)
        ledger = RunLedger(
            self.workspace,
            self.records,
            self.table,
            twins,
            {key: keys[cells[0].name][1] for key, cells in twins.items()},
            force=self.force,
            fail_fast=self.fail_fast,
            remote=None if self.engine.in_process else self.engine.name,
            log=self.log,
            started_ms=self.started_ms,
        )
        jobs = [self.job(cells[0], key, keys[cells[0].name][1]) for key, cells in twins.items()]
        try:
            for done in self.engine.run(jobs, self.workspace, ledger, f"study {self.study.name}"):
                ledger.record(done)
        except KeyboardInterrupt:
            ledger.interrupted()
            raise

    def job(self, cell: Cell, key: str, weights: dict[str, str]) -> CellJob:
        """The engine's job for ``cell`` (``--force``: its journal and artifacts start over)."""
        return CellJob(cell.name, key, cell.spec, weights, fresh=self.force, qualitative=self.qualitative)

    def _reuse_from_other_experiments(self, exp: str, todo: list[Cell], keys: Keys) -> list[Cell]:
        """Cells finished under another experiment with the same cell key (an overlapping study) are
        recorded in this one (``Tracker.copy_cell``, tag ``fss.reused_from``), not computed again;
        the cells left to run are returned."""
        tracker, records = self.tracker, self.records
        assert tracker is not None and records is not None
        left = []
        elsewhere = tracker.finished_cells_elsewhere(exp, [keys[c.name][0] for c in todo])
        for cell in todo:
            key, weights = keys[cell.name]
            source = elsewhere.get(key)
            if source is None:
                left.append(cell)
                continue
            with self.workspace.cell_lock(key):
                if tracker.finished_cell(exp, key) is None:  # not copied by another process meanwhile
                    rid = records.copy(source, cell, key, weights)
                    where = tracker.client.get_experiment(source.info.experiment_id).name
                    self.log(f"{cell.name}: finished in experiment {where!r} (same cell key): reused")
                    self.table.skipped(cell, key, tracker.client.get_run(rid), "reused")
                else:
                    done = tracker.finished_cell(exp, key)
                    self.table.skipped(cell, key, done, "skipped (done)")
        return left


StudyRunner = RunJob
"""The run job's older name (tests, the demo and the profile use it)."""


def summary_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean mIoU / FB-IoU in percent per variant, dataset and shot, over folds and seeds.

    ``cells`` is the runner's table (cells.csv), whose ``*_pct`` columns are already percent.
    """
    if cells.empty or "miou_pct" not in cells:
        return pd.DataFrame()
    ok = cells[~cells["status"].str.startswith("failed")]
    g = ok.groupby(["dataset", "shot", "variant"], sort=False)
    out = g.agg(
        miou=("miou_pct", "mean"),
        fb_iou=("fb_iou_pct", "mean"),
        folds=("fold", "nunique"),
        cells=("fold", "size"),
    )
    return out.reset_index().rename(columns={"miou": "mIoU (%)", "fb_iou": "FB-IoU (%)"})
