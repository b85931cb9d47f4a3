"""``fssbench run``, the local engine: every cell (variant x dataset x fold x shot x seed) of a study.

The engine plans, skips, locks, tracks and reports; the numbers come from the shared cell function
(:func:`benchmark.cell.evaluate_cell`). For each cell:

1. its key is computed from the resolved settings, the manifest hash and the weight-file hashes
   (cached), with no model built; a key with a FINISHED MLflow run is skipped (unless ``force``);
2. a per-cell file lock (``<work-dir>/locks/``) makes sure that two processes on the same work
   folder never run the same cell: a locked cell is deferred, then waited for and re-checked;
3. a RUNNING child run is created, the cell is evaluated (resuming from its episode journal), its
   metrics and artifacts are logged and the run is marked FINISHED;
4. a failing cell is marked FAILED with the error as the ``fss.error`` tag and the study goes on
   (``fail_fast`` stops); SIGINT and SIGTERM mark the running child and the parent KILLED.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from benchmark.cell import (
    CellResult,
    CellSpec,
    CheckpointHashes,
    cell_key,
    code_hash,
    evaluate_cell,
    weight_ids,
)
from benchmark.data.image_check import check_files
from benchmark.device import resolve_device
from benchmark.episodes import build_manifest, load_manifest, save_manifest
from benchmark.errors import USER_ERRORS, FssBenchError
from benchmark.feature_cache import FeatureCache
from benchmark.io_utils import say, write_text_atomic
from benchmark.methods import WeightPool, build_method, get_method
from benchmark.study import MLFLOW_URI_PREFIX, Study
from benchmark.tracking import (
    CELL_KEY_TAG,
    Tracker,
    default_tracking_uri,
    flat_params,
    git_commit,
    package_versions,
)
from fssam.stages import StageMemo


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so it unwinds like Ctrl-C (runs marked KILLED)."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` once; a second one during the clean-up is ignored, so the
    runs are still marked KILLED."""
    fired = []

    def handler(signum: int, frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise Terminated(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class Cell:
    variant: str
    dataset: str
    fold: int
    shot: int
    seed: int
    spec: CellSpec

    @property
    def name(self) -> str:
        """``variant/dataset/fold<k>/<K>shot/seed<s>`` (the spec carries it to the cell function)."""
        return self.spec.name


@dataclass
class CellFailure:
    cell: str
    error: str


def study_manifests(study: Study, work_dir: Path, kind: str = "test") -> dict[tuple, Path]:
    """(dataset, fold, shot, seed) -> the manifest file of that cell group under
    ``<work_dir>/manifests/`` (written only when missing or different). ``kind="val"``: the fold's
    base classes on images without a novel-class pixel, from the study's ``val_source`` (what
    searches tune on); the name says so."""
    out = {}
    for ds, root in study.data.items():
        for fold in study.folds:
            for shot in study.shots:
                for seed in study.seeds:
                    m = build_manifest(
                        root,
                        fold,
                        shot,
                        study.protocol,
                        seed,
                        study.episodes,
                        kind,
                        study.split,
                        ds,
                        study.loader_workers,
                        study.lists,
                        study.eval_resolution,
                        study.eval_size,
                        **(
                            {"val_source": study.val_source, "holdout_fraction": study.holdout_fraction}
                            if kind == "val"
                            else {}
                        ),
                    )
                    split = f"-{study.split}" if ds == "coco" else ""
                    tail = "" if kind == "test" else f"-{kind}"
                    if "holdout" in m["source"]:  # drawn from the train split's held-out slice
                        tail += f"-holdout{m['source']['holdout']['fraction']}"
                    if "loader_workers" in m.get("draw", {}):  # fssam-exact: part of the draw
                        tail += f"-w{study.loader_workers}-{study.lists}"
                    if m.get("eval", {}).get("resolution") == "resized":
                        tail += f"-resized{m['eval']['size']}"
                    name = f"{ds}{split}-fold{fold}-{shot}shot-{study.protocol}-seed{seed}-n{m['num_episodes']}{tail}"
                    path = Path(work_dir) / "manifests" / f"{name}.json"
                    if not path.exists() or load_manifest(path)["sha256"] != m["sha256"]:
                        save_manifest(m, path)
                    out[(ds, fold, shot, seed)] = path
    return out


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
        self.work_dir = Path(work_dir).absolute()
        self.tracking_uri = tracking_uri
        cache_dir = cache_dir or self.work_dir / "feature-cache"
        if cache_max_bytes is None and study.cache.max_gb is not None:
            cache_max_bytes = int(study.cache.max_gb * 2**30)
        self.cache = FeatureCache(
            cache_dir, memory_bytes=memory_cache_bytes, enabled=use_cache, max_disk_bytes=cache_max_bytes
        )
        # episode stages shared by the variants of a manifest (off with the cache: --no-cache)
        share = use_cache and study.cache.stages_gb > 0
        self.stages = StageMemo(int(study.cache.stages_gb * 2**30)) if share else None
        self.pool = WeightPool()
        self.hashes = CheckpointHashes(self.work_dir / "checkpoint-hashes.json")
        self.results: list[dict[str, Any]] = []
        self.failures: list[CellFailure] = []
        self.tracker: Tracker | None = None
        self._manifests: dict[Path, dict[str, Any]] = {}

    # ---------------------------------------------------------------------------------- planning
    def build_manifests(self) -> dict[tuple, Path]:
        """All manifests of the study, built (and validated) before any model work."""
        return study_manifests(self.study, self.work_dir)

    def cells(self, manifests: dict[tuple, Path]) -> list[Cell]:
        cells = []
        for (ds, fold, shot, seed), path in manifests.items():
            for v in self.study.variants:
                name = f"{v.name}/{ds}/fold{fold}/{shot}shot/seed{seed}"
                spec = CellSpec(
                    v.method,
                    v.cell_settings(ds, fold, shot),
                    path,
                    self.study.data[ds],
                    v.device,
                    name,
                    batch_size=self.study.batch_size,
                    feature_dtype=self.study.cache.dtype,
                    compile=self.compile,
                )
                cells.append(Cell(v.name, ds, fold, shot, seed, spec))
        i, n = self.shard
        return [c for k, c in enumerate(cells) if k % n == i]

    def resolve_artifact_uris(self, cells: list[Cell]) -> list[Cell]:
        """Checkpoints given as MLflow artifact URIs (``runs:/<run_id>/checkpoint/best.pth``, what
        ``fssbench train`` logs) are downloaded once into ``<work-dir>/downloads/<run_id>/`` and the
        cells use the local file (its SHA-256 keys the cell; ``fss.trained_by`` names the run)."""
        import dataclasses

        out = []
        for c in cells:
            settings, changed = dict(c.spec.settings), False
            for key in get_method(c.spec.method).checkpoints:
                value = settings.get(key)
                if not value or not str(value).startswith(MLFLOW_URI_PREFIX):
                    continue
                run_id, rel = str(value)[len(MLFLOW_URI_PREFIX) :].split("/", 1)
                local = self.work_dir / "downloads" / run_id / rel
                if not local.is_file():
                    import mlflow.artifacts

                    try:
                        mlflow.artifacts.download_artifacts(
                            artifact_uri=str(value),
                            dst_path=str(local.parent),
                            tracking_uri=self.tracking_uri or default_tracking_uri(),
                        )
                    except Exception as e:
                        raise FssBenchError(
                            f"{self.study.source}: variants.{c.variant}.{key}: cannot download {value} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                        ) from None
                    if not local.is_file():
                        raise FssBenchError(
                            f"{self.study.source}: variants.{c.variant}.{key}: {value} is not a file"
                        )
                    record = Path(f"{local}.json")
                    if not record.is_file():  # the provenance record: the run itself
                        write_text_atomic(record, json.dumps({"mlflow_run_id": run_id, "source": str(value)}))
                settings[key], changed = str(local), True
            out.append(
                c
                if not changed
                else dataclasses.replace(c, spec=dataclasses.replace(c.spec, settings=settings))
            )
        return out

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
            out[c.name] = (cell_key(c.spec, self.manifest(c.spec.manifest_path)["sha256"], weights), weights)
        return out

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> pd.DataFrame:
        with sigterm_as_interrupt():
            return self._run()

    def _run(self) -> pd.DataFrame:
        study = self.study
        self.results, self.failures, self._ran, self._manifests = [], [], set(), {}
        self._also: dict[str, list[str]] = {}  # run id -> the other variants it stands for
        self._started_ms = int(time.time() * 1000)  # runs that ended after this are this invocation's
        cells = self.resolve_artifact_uris(self.cells(self.build_manifests()))
        keys = self.keys(cells)  # no model is built and no unchanged checkpoint is hashed again
        finished = {} if self.force else self._finished_without_creating()
        todo = [c for c in cells if keys[c.name][0] not in finished]
        self.check_images(todo)  # a corrupt image fails here, before any store or run exists
        self.preflight(todo, keys)  # so do weights that do not fit
        tracker = self.tracker = self.tracker or Tracker(self.tracking_uri)
        exp = tracker.experiment_id(study.name)
        for c in cells:
            if keys[c.name][0] in finished:
                self.results.append(self._skipped_row(c, keys[c.name][0], finished[keys[c.name][0]]))
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
        """Write ``cells.csv`` under a lock, merged with what another process wrote there meanwhile
        (:func:`merge_cells_tables`), so the file holds every cell whoever ran it."""
        from filelock import FileLock

        path = self.cells_csv
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=600):
            old = pd.read_csv(path) if path.is_file() and path.stat().st_size else None
            write_text_atomic(path, merge_cells_tables(old, table).to_csv(index=False))

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

    def check_images(self, todo: list[Cell]) -> None:
        """Decode every image and label the cells to run use (once: remembered in the work folder)."""
        pairs = set()
        for path in dict.fromkeys(c.spec.manifest_path for c in todo):
            root = next(c.spec.data_root for c in todo if c.spec.manifest_path == path)
            pairs |= {(root / img, root / lab) for img, lab in self.manifest(path)["images"].values()}
        check_files(sorted(pairs), self.work_dir / "images-checked.json")

    def preflight(self, todo: list[Cell], keys: dict[str, tuple[str, dict[str, str]]]) -> None:
        """Load every distinct set of real weights the cells to run need, strictly, into the shared
        pool (the run reuses them): a checkpoint of the wrong architecture or version is an error
        naming the variant now, not after the store and a parent run exist. Random init is skipped."""
        seen: set[tuple] = set()
        for c in todo:
            if c.spec.settings.get("random_init"):
                continue
            sources = keys[c.name][1]
            signature = (
                c.spec.method,
                tuple(sorted(sources.items())),
                tuple(sorted(c.spec.settings.items())),
            )
            if not sources or signature in seen:
                continue
            seen.add(signature)
            try:
                build_method(c.spec.method, dict(c.spec.settings), resolve_device(c.spec.device), self.pool)
            except USER_ERRORS as e:
                raise FssBenchError(f"{self.study.source}: variants.{c.variant} ({c.name}): {e}") from None

    def _run_cells(self, exp: str, todo: list[Cell], keys: dict[str, tuple[str, dict[str, str]]]) -> None:
        study, tracker = self.study, self.tracker
        assert tracker is not None
        if study.random_init:
            self.log(
                "WARNING: RANDOM-INIT WEIGHTS in this study (tagged fss.random_init=true): numbers check the pipeline only"
            )
        parent = self.parent = tracker.start_parent(
            exp,
            run_name=f"{study.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={
                "fss.study": study.name,
                "fss.random_init": str(study.random_init).lower(),
                "fss.git_commit": git_commit(),
                "fss.versions": json.dumps(package_versions()),
                "fss.study_file": study.source,
            },
            params=flat_params("study.", {k: v for k, v in study.raw.items() if k != "variants"})
            | {"study.variants": ",".join(v.name for v in study.variants), "study.cells": len(todo)},
        )
        status = "FAILED"
        try:
            log_study_record(tracker, parent, study)
            self.execute(exp, parent, todo, keys)
            status = "FAILED" if self.failures else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            tracker.end_run(parent, status)

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
                if not self._try_cell(exp, parent, cell, keys[cell.name], block=False):
                    deferred.append(cell)
                    continue
                bar.update()
            for cell in deferred:  # held by another process: wait, then re-check
                self.log(f"waiting for {cell.name}: another process is running it")
                self._try_cell(exp, parent, cell, keys[cell.name], block=True)
                bar.update()
        finally:
            bar.close()

    def _try_cell(
        self, exp: str, parent: str, cell: Cell, key_weights: tuple[str, dict], block: bool
    ) -> bool:
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
                self.results.append(self._skipped_row(cell, key, done, how))
                return True
            failed = [r for r in runs if r.info.status == "FAILED" and r.info.start_time >= self._started_ms]
            if failed:  # failed just now, here (a twin variant) or in another process: not again
                row = self._row(cell, key) | {"run_id": failed[0].info.run_id}
                row["error"] = failed[0].data.tags.get("fss.error", "")
                row["status"] = "failed" if mine else "failed (in another process)"
                self.results.append(row)
                return True
            self._ran.add(key)
            self._run_cell(exp, parent, cell, key, key_weights[1])
            return True
        finally:
            lock.release()

    def _skipped_row(self, cell: Cell, key: str, run: Any, status: str = "skipped (done)") -> dict[str, Any]:
        tags, rid = run.data.tags, run.info.run_id
        also = self._also.setdefault(rid, [v for v in tags.get("fss.also_variants", "").split(",") if v])
        if self.tracker is not None and cell.variant not in (tags.get("fss.variant"), *also):
            # another variant resolved to this very cell: the run stands for both (reports show both)
            also.append(cell.variant)
            self.tracker.client.set_tag(rid, "fss.also_variants", ",".join(also))
        m = run.data.metrics
        return self._row(cell, key) | {
            "miou_pct": _pct(m.get("miou")),
            "fb_iou_pct": _pct(m.get("fb_iou")),
            "status": status,
            "run_id": run.info.run_id,
        }

    @staticmethod
    def _row(cell: Cell, key: str) -> dict[str, Any]:
        return {
            "cell": cell.name,
            "variant": cell.variant,
            "method": cell.spec.method,
            "dataset": cell.dataset,
            "fold": cell.fold,
            "shot": cell.shot,
            "seed": cell.seed,
            "cell_key": key,
        }

    def _run_cell(self, exp: str, parent: str, cell: Cell, key: str, weights: dict[str, str]) -> None:
        tracker = self.tracker
        assert tracker is not None
        cell_dir = self.work_dir / "cells" / key[:20]
        if self.force:
            shutil.rmtree(cell_dir, ignore_errors=True)
            self.delete_runs(exp, key)
        params, tags = self.cell_record(cell, key, weights)
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
            rid = tracker.start_cell(exp, parent, cell.name, params, tags)
            result = evaluate_cell(
                cell.spec,
                self.cache,
                key=key,
                weights=weights,
                pool=self.pool,
                journal_path=cell_dir / "episodes.jsonl",
                artifacts_dir=cell_dir / "artifacts",
                qualitative=self.qualitative,
                on_start=on_start,
                on_episode=lambda done, total: bar.update(1),
                stages=self.stages,
            )
            tracker.finish_cell(
                rid, result.metrics, result.artifacts, {"fss.peak_mem_kind": result.peak_memory_kind}
            )
        except KeyboardInterrupt:
            if rid is not None:
                tracker.fail_cell(rid, "interrupted (SIGINT/SIGTERM); rerun to resume", status="KILLED")
            raise
        except Exception as e:  # one failing cell never stops the study (unless fail_fast)
            text = str(e) if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {e}"
            if rid is not None:
                tracker.fail_cell(
                    rid, text + ("" if isinstance(e, USER_ERRORS) else "\n" + traceback.format_exc())
                )
            if isinstance(e, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            self.record_failure(cell, key, rid, text)
            if self.fail_fast:
                raise FssBenchError(f"{cell.name} failed (--fail-fast): {text.splitlines()[0]}") from e
            return
        finally:
            bar.close()
        self.results.append(self._result_row(cell, key, rid, result))

    def _reuse_from_other_experiments(
        self, exp: str, todo: list[Cell], keys: dict[str, tuple[str, dict[str, str]]]
    ) -> list[Cell]:
        """Cells finished under another experiment with the same cell key (an overlapping study) are
        recorded in this one (``Tracker.copy_cell``, tag ``fss.reused_from``), not computed again;
        the cells left to run are returned."""
        tracker = self.tracker
        assert tracker is not None
        left = []
        for cell in todo:
            key, weights = keys[cell.name]
            source = tracker.finished_cell_elsewhere(exp, key)
            if source is None:
                left.append(cell)
                continue
            with self.cell_lock(key):
                if tracker.finished_cell(exp, key) is None:  # not copied by another process meanwhile
                    params, tags = self.cell_record(cell, key, weights)
                    rid = tracker.copy_cell(source, exp, cell.name, params, tags)
                    where = tracker.client.get_experiment(source.info.experiment_id).name
                    self.log(f"{cell.name}: finished in experiment {where!r} (same cell key): reused")
                    self.results.append(self._skipped_row(cell, key, tracker.client.get_run(rid), "reused"))
                else:
                    done = tracker.finished_cell(exp, key)
                    self.results.append(self._skipped_row(cell, key, done, "skipped (done)"))
        return left

    def cell_lock(self, key: str) -> Any:
        """The cell's file lock (``<work-dir>/locks/``): whoever holds it checks, runs and logs the
        cell, so two processes or engines never log it twice."""
        from filelock import FileLock

        (self.work_dir / "locks").mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.work_dir / "locks" / f"{key[:20]}.lock"))

    def delete_runs(self, exp: str, key: str) -> None:
        """--force: every earlier run of the cell, finished ones included (the lock holder only)."""
        assert self.tracker is not None
        for r in self.tracker.cell_runs(exp, key):
            self.tracker.client.delete_run(r.info.run_id)

    def record_failure(self, cell: Cell, key: str, rid: str | None, text: str) -> None:
        """A failed cell in the results and failures, and one line in the log."""
        first = (text.splitlines() or ["failed"])[0]
        self.failures.append(CellFailure(cell.name, first))
        self.results.append(self._row(cell, key) | {"status": "failed", "run_id": rid, "error": text})
        self.log(f"FAILED {cell.name}: {first}")

    def cell_record(
        self, cell: Cell, key: str, weights: dict[str, str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The params and tags of a cell's MLflow run (whichever engine runs it)."""
        spec = cell.spec
        device = resolve_device(spec.device)
        resolved = {
            "method": spec.method,
            # the method's own `seed` (random-init weights) is logged as init_seed: `seed` is the episodes'
            **{("init_seed" if k == "seed" else k): v for k, v in spec.settings.items()},
            "dataset": cell.dataset,
            "data_root": str(spec.data_root),
            "fold": cell.fold,
            "shot": cell.shot,
            "seed": cell.seed,
            "protocol": self.study.protocol,
            "episodes": self.manifest(spec.manifest_path)["num_episodes"],
            "split": self.study.split,
            "device": str(device),
            "precision_effective": spec.precision,
            "batch_size": spec.batch_size,
            "feature_dtype": spec.feature_dtype,
        }
        tags = {
            CELL_KEY_TAG: key,
            "fss.variant": cell.variant,
            "fss.method": spec.method,
            "fss.dataset": cell.dataset,
            "fss.fold": str(cell.fold),
            "fss.shot": str(cell.shot),
            "fss.seed": str(cell.seed),
            "fss.manifest_sha256": self.manifest(spec.manifest_path)["sha256"],
            "fss.study": self.study.name,
            "fss.study_file": self.study.source,
            "fss.random_init": str(bool(spec.settings.get("random_init"))).lower(),
            "fss.git_commit": git_commit(),
            "fss.versions": json.dumps(package_versions()),
            "fss.device": str(device),
            "fss.code_sha256": code_hash(),
            "fss.metric_units": "fraction",  # metrics are in [0, 1]; printed tables and cells.csv use percent
            **{f"fss.weights.{k}": v for k, v in weights.items()},
        }
        tags |= trained_by(cell.spec)
        return flat_params("", resolved), tags

    def _result_row(self, cell: Cell, key: str, rid: str, result: CellResult) -> dict[str, Any]:
        return self._row(cell, key) | {
            "miou_pct": 100 * result.summary["miou"],
            "fb_iou_pct": 100 * result.summary["fb_iou"],
            "status": "run",
            "run_id": rid,
            **result.run_stats(),
        }


def merge_cells_tables(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """``cells.csv`` after this invocation: ``new``'s rows, except where ``old`` (written by another
    process) holds the run of the same cell that ``new`` only saw as done elsewhere (same run id:
    the row that ran it keeps its timings); then ``old``'s cells that ``new`` does not have."""
    if old is None or old.empty or "cell" not in old:
        return new
    old_by_cell = {r["cell"]: r for r in old.to_dict("records")}
    rows = []
    for r in new.to_dict("records"):
        prior = old_by_cell.pop(r["cell"], None)
        ran_there = (
            prior is not None
            and prior.get("status") == "run"
            and str(r.get("status", "")).startswith("skipped")
            and prior.get("run_id") == r.get("run_id")
        )
        rows.append(prior if ran_there else r)
    rows += list(old_by_cell.values())
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*new.columns, *old.columns])))


def log_study_record(tracker: Tracker, run_id: str, study: Study) -> None:
    """The study parent run's artifacts under ``study/``: the file as written (``study-file.yaml``),
    the command-line overrides in order (``overrides.txt``, one per line) and the study as it runs
    (``resolved.yaml``: overrides applied, every variant's resolved settings)."""
    import yaml

    tracker.client.log_text(run_id, study.file_text, "study/study-file.yaml")
    tracker.client.log_text(run_id, "".join(f"{o}\n" for o in study.overrides), "study/overrides.txt")
    resolved = yaml.safe_dump(json.loads(json.dumps(study.resolved(), default=str)), sort_keys=False)
    tracker.client.log_text(run_id, resolved, "study/resolved.yaml")


def trained_by(spec: CellSpec) -> dict[str, str]:
    """``fss.trained_by``: the MLflow training run of a fine-tuned checkpoint, from the record
    ``fssbench train`` writes beside it (``best.pth.json``)."""
    for key in get_method(spec.method).overlays:
        path = spec.settings.get(key)
        record = Path(f"{path}.json") if path else None
        if record is not None and record.is_file():
            try:
                run_id = json.loads(record.read_text()).get("mlflow_run_id")
            except ValueError:
                continue
            if run_id:
                return {"fss.trained_by": str(run_id)}
    return {}


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


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
