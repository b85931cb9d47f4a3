"""``fssbench run``, the local engine: every cell (variant x dataset x fold x shot x seed) of a study.

The engine plans, skips, locks, tracks and reports; the numbers come from the shared cell function
(:func:`benchmark.evaluation.cell.evaluate_cell`). For each cell:

1. its key is computed from the resolved settings, the manifest hash and the weight-file hashes
   (cached), with no model built; a key with a FINISHED MLflow run is skipped (unless ``force``);
2. a per-cell file lock (``<work-dir>/locks/``) makes sure that two processes on the same work
   folder never run the same cell: a locked cell is deferred, then waited for and re-checked;
3. a RUNNING child run is created, the cell is evaluated (resuming from its episode journal), its
   metrics and artifacts are logged and the run is marked FINISHED;
4. a failing cell is marked FAILED with the error as the ``fss.error`` tag and the study goes on
   (``fail_fast`` stops); SIGINT and SIGTERM mark the running child and the parent KILLED.

What the cells share (feature cache, weight pool, stages, hashes, locks, cell folders) is the
:class:`benchmark.workspace.Workspace`; every MLflow write goes through :mod:`benchmark.records`.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from benchmark.episodes.manifest import load_manifest
from benchmark.errors import USER_ERRORS, FssBenchError
from benchmark.evaluation.cell import cell_key, evaluate_cell, weight_ids
from benchmark.interrupts import sigterm_as_interrupt
from benchmark.io_utils import say
from benchmark.plan import Cell, study_cells, study_manifests
from benchmark.records.cells import CellOutcome, CellRecords
from benchmark.records.downloads import resolve_artifact_uris
from benchmark.records.table import CellTable, write_cells_csv
from benchmark.records.tracking import Tracker
from benchmark.study import Study
from benchmark.workspace import Workspace


class StudyRunner:
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
    ):
        self.study, self.force, self.progress, self.shard = study, force, progress, shard
        self.qualitative, self.fail_fast, self.log = qualitative, fail_fast, log
        self.compile = compile
        self.tracking_uri = tracking_uri
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
        self.table = CellTable(None, log)
        self.tracker: Tracker | None = None
        self.records: CellRecords | None = None
        self._manifests: dict[Path, dict[str, Any]] = {}

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

    def manifest(self, path: Path) -> dict[str, Any]:
        """A manifest of this study, read (and its hash verified) once per invocation."""
        if path not in self._manifests:
            self._manifests[path] = load_manifest(path)
        return self._manifests[path]

    def keys(self, cells: list[Cell]) -> dict[str, tuple[str, dict[str, str]]]:
        """cell name -> (cell key, weight ids), computed without building any model."""
        out = {}
        for c in cells:
            weights = weight_ids(c.spec, self.hashes)
            out[c.name] = (cell_key(c.spec, self.manifest(c.spec.manifest_path).sha256, weights), weights)
        return out

    def check_images(self, todo: list[Cell]) -> None:
        """Decode every image and label the cells to run use (once: remembered in the work folder)."""
        roots: dict[Path, Path] = {}
        for c in todo:
            roots.setdefault(c.spec.manifest_path, c.spec.data_root)
        self.workspace.check_images((self.manifest(path), root) for path, root in roots.items())

    def preflight(self, todo: list[Cell], keys: dict[str, tuple[str, dict[str, str]]]) -> None:
        """Every distinct set of real weights the cells to run need, loaded strictly into the
        workspace's pool (:meth:`Workspace.preflight`): a wrong checkpoint names the variant now."""
        self.workspace.preflight(
            (c.spec, keys[c.name][1], f"{self.study.source}: variants.{c.variant} ({c.name})") for c in todo
        )

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> pd.DataFrame:
        with sigterm_as_interrupt():
            return self._run()

    def _run(self) -> pd.DataFrame:
        self.table, self._ran, self._manifests = CellTable(None, self.log), set(), {}
        self._started_ms = int(time.time() * 1000)  # runs that ended after this are this invocation's
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
            self._run_cells(exp, todo, keys)
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
        return (
            self.work_dir
            / "studies"
            / self.study.name
            / ("cells.csv" if n == 1 else f"cells-shard{i}of{n}.csv")
        )

    def _finished_without_creating(self) -> dict[str, Any]:
        """Finished cells of the study's experiment, read without creating the store or the experiment."""
        if not Tracker.store_exists(self.tracking_uri):
            return {}
        self.tracker = Tracker(self.tracking_uri)
        exp = self.tracker.client.get_experiment_by_name(self.study.name)
        return {} if exp is None else self.tracker.finished_cells(exp.experiment_id)

    def _run_cells(self, exp: str, todo: list[Cell], keys: dict[str, tuple[str, dict[str, str]]]) -> None:
        """The parent run, then :meth:`execute`; the parent ends FINISHED, FAILED or KILLED."""
        records = self.records
        assert records is not None
        if self.study.random_init:
            self.log(
                "WARNING: RANDOM-INIT WEIGHTS in this study (tagged fss.random_init=true): numbers check the pipeline only"
            )
        parent = self.parent = records.start_parent(len(todo))
        status = "FAILED"
        try:
            records.log_study()
            self.execute(exp, parent, todo, keys)
            status = "FAILED" if self.failures else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            records.end_parent(status)

    def execute(
        self, exp: str, parent: str, todo: list[Cell], keys: dict[str, tuple[str, dict[str, str]]]
    ) -> None:
        """Run the unfinished cells, in this process, one after the other (``--engine local``; the
        Ray engine, ``benchmark.engines.ray_study``, replaces this method)."""
        bar = tqdm(total=len(todo), desc=f"study {self.study.name}", unit="cell", disable=not self.progress)
        try:
            deferred = []
            for cell in todo:
                bar.set_postfix_str(cell.name)
                if not self._try_cell(exp, cell, keys[cell.name], block=False):
                    deferred.append(cell)
                    continue
                bar.update()
            for cell in deferred:  # held by another process: wait, then re-check
                self.log(f"waiting for {cell.name}: another process is running it")
                self._try_cell(exp, cell, keys[cell.name], block=True)
                bar.update()
        finally:
            bar.close()

    def _try_cell(self, exp: str, cell: Cell, key_weights: tuple[str, dict], block: bool) -> bool:
        """Run ``cell`` under its lock; False if another process holds the lock and ``block`` is off."""
        from filelock import Timeout

        key = key_weights[0]
        lock = self.cell_lock(key)
        try:
            lock.acquire(timeout=-1 if block else 0)
        except Timeout:
            return False
        try:
            assert self.tracker is not None
            runs = self.tracker.cell_runs(exp, key)
            done = next((r for r in runs if r.info.status == "FINISHED"), None)
            mine = key in self._ran
            if done is not None and (not self.force or mine or (done.info.end_time or 0) >= self._started_ms):
                # finished meanwhile: by another process, or by this one (two variants, one cell);
                # with --force, a run that ended after this invocation started is already the rerun
                how = "skipped (done)" if mine else "skipped (done by another process)"
                self.table.skipped(cell, key, done, how)
                return True
            failed = [r for r in runs if r.info.status == "FAILED" and r.info.start_time >= self._started_ms]
            if failed:  # failed just now, here (a twin variant) or in another process: not again
                self.table.failed_meanwhile(cell, key, failed[0], here=mine)
                return True
            self._ran.add(key)
            self._run_cell(cell, key, key_weights[1])
            return True
        finally:
            lock.release()

    def _run_cell(self, cell: Cell, key: str, weights: dict[str, str]) -> None:
        """Evaluate the cell in this process, its run open (RUNNING) meanwhile, and record the outcome."""
        records, ws = self.records, self.workspace
        assert records is not None
        if self.force:
            shutil.rmtree(ws.cell_dir(key), ignore_errors=True)
            records.delete_runs(key)
        # a nested bar only on a terminal: redirected logs get no cursor-up escapes
        bar = tqdm(
            desc=cell.name, unit="ep", leave=False, disable=not self.progress or not sys.stderr.isatty()
        )
        rid = None

        def on_start(done: int, total: int) -> None:
            bar.reset(total=total)
            bar.update(done)
            if done:
                self.log(f"resuming {cell.name} at episode {done} of {total}")

        try:
            rid = records.open(cell, key, weights)
            result = evaluate_cell(
                cell.spec,
                ws.cache,
                key=key,
                weights=weights,
                pool=ws.pool,
                journal_path=ws.journal_path(key),
                artifacts_dir=ws.artifacts_dir(key),
                qualitative=self.qualitative,
                on_start=on_start,
                on_episode=lambda done, total: bar.update(1),
                stages=ws.stages,
            )
            records.record(
                rid, CellOutcome.finished(result.metrics, result.artifacts, result.peak_memory_kind)
            )
        except KeyboardInterrupt:
            if rid is not None:
                records.record(
                    rid, CellOutcome.failed("interrupted (SIGINT/SIGTERM); rerun to resume", status="KILLED")
                )
            raise
        except Exception as e:  # one failing cell never stops the study (unless fail_fast)
            text = str(e) if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {e}"
            if rid is not None:
                tb = "" if isinstance(e, USER_ERRORS) else "\n" + traceback.format_exc()
                records.record(rid, CellOutcome.failed(text + tb))
            if isinstance(e, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            self.record_failure(cell, key, rid, text)
            if self.fail_fast:
                raise FssBenchError(f"{cell.name} failed (--fail-fast): {text.splitlines()[0]}") from e
            return
        finally:
            bar.close()
        self.table.ran(cell, key, rid, result.summary, **result.run_stats())

    def _reuse_from_other_experiments(
        self, exp: str, todo: list[Cell], keys: dict[str, tuple[str, dict[str, str]]]
    ) -> list[Cell]:
        """Cells finished under another experiment with the same cell key (an overlapping study) are
        recorded in this one (``Tracker.copy_cell``, tag ``fss.reused_from``), not computed again;
        the cells left to run are returned."""
        tracker, records = self.tracker, self.records
        assert tracker is not None and records is not None
        left = []
        for cell in todo:
            key, weights = keys[cell.name]
            source = tracker.finished_cell_elsewhere(exp, key)
            if source is None:
                left.append(cell)
                continue
            with self.cell_lock(key):
                if tracker.finished_cell(exp, key) is None:  # not copied by another process meanwhile
                    rid = records.copy(source, cell, key, weights)
                    where = tracker.client.get_experiment(source.info.experiment_id).name
                    self.log(f"{cell.name}: finished in experiment {where!r} (same cell key): reused")
                    self.table.skipped(cell, key, tracker.client.get_run(rid), "reused")
                else:
                    done = tracker.finished_cell(exp, key)
                    self.table.skipped(cell, key, done, "skipped (done)")
        return left

    def cell_lock(self, key: str) -> Any:
        """The cell's file lock (:meth:`Workspace.cell_lock`)."""
        return self.workspace.cell_lock(key)

    def record_failure(self, cell: Cell, key: str, rid: str | None, text: str) -> None:
        """A failed cell in the results and failures, and one line in the log."""
        self.table.failure(cell, key, rid, text)


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
