"""``fssbench search``: an Optuna search whose trials run the shared cell function on validation
manifests, tracked in MLflow, resumable, shared by any number of worker processes.

One trial = the searched variant with the trial's switches, evaluated on every validation cell of
the search (dataset x fold x shot x seed) with :func:`benchmark.evaluation.cell.evaluate_cell`. After every
``report_every`` episodes (and after each cell) the running objective goes to ``trial.report``;
a pruned trial stops there and records how many episodes it ran. Frozen features are cached on
disk in the work folder, so trials after the first cost only the method's own forward.

Records:

* Optuna: the study (default storage ``optuna.db`` beside the MLflow store) carries the search's
  identity hash; resuming it with a different search is refused. RDB storages run heartbeats, so a
  trial whose worker died is failed and retried with the same parameters, not left RUNNING.
* Workers: what two of them could race on (creating or joining the study and its parent run,
  enqueueing retries, recording a stale trial, writing the outputs) runs under :class:`StudyLock`.
* MLflow: one parent run per Optuna study (``fss.kind = search``), found again on resume and by
  every worker; one nested run per trial number (``fss.kind = trial``) with its parameters, the
  running objective as a curve (step = episodes done), the final value and the trial's state.
* At the end: the best parameters as a study file for the test manifests, the trials table and
  Optuna's plots (history, importances, slice, contour) as PNG, logged to the parent run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from benchmark.episodes.manifest import load_manifest
from benchmark.errors import USER_ERRORS, FssBenchError
from benchmark.evaluation.cell import CellSpec, cell_key, code_hash, evaluate_cell, weight_ids
from benchmark.evaluation.metrics import summarize
from benchmark.interrupts import sigterm_as_interrupt
from benchmark.io_utils import say, write_text_atomic
from benchmark.methods import get_method
from benchmark.plan import cell_spec, study_manifests
from benchmark.records.search import SearchRecords
from benchmark.records.tracking import Tracker, git_commit, package_versions, standard_tags
from benchmark.search_file import SearchSpec
from benchmark.study import parse_study
from benchmark.workspace import Workspace

DEFAULT_HEARTBEAT_S = 60
MAX_CONSECUTIVE_FAILURES = 3
SEARCH_ATTR = "fss.search_sha256"
PARENT_ATTR = "fss.mlflow_parent_run_id"


def default_storage(tracking_uri: str) -> str:
    """``optuna.db`` beside a local SQLite MLflow store, else in the working directory."""
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri[len('sqlite:///') :]).parent / 'optuna.db'}"
    return f"sqlite:///{Path.cwd().resolve() / 'optuna.db'}"


def with_postgres_driver(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) with the driver spelled out: SQLAlchemy 2.1 reads a
    bare ``postgresql://`` as psycopg 3, and this project installs psycopg2 (the ``cluster``
    extra), so ``postgresql+psycopg2://`` unless psycopg 3 is importable."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            import importlib.util

            driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
            return f"postgresql+{driver}://" + url[len(bare) :]
    return url


def redact(url: str) -> str:
    """A storage URL without its password (what tags and logs show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def storage_lock_path(url: str) -> Path | None:
    """The local file a storage lives in (SQLite or journal); its study lock is ``PATH.lock``."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    if url.startswith("journal:"):
        return Path(url[len("journal:") :])
    return None


class StudyLock:
    """An inter-process lock shared by every worker of one Optuna study, held around what two
    workers could otherwise race on: creating the study and its MLflow parent run, enqueueing the
    retry of an interrupted or stale trial, and writing the search's outputs to the parent run.

    * SQLite or journal storage: a file lock ``PATH.lock`` beside the file (``filelock``; the
      kernel releases it when its process dies).
    * PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) keyed by the study name,
      on a connection of the storage's own engine; MySQL: ``GET_LOCK``. The server releases it
      when the connection drops, so a killed worker never leaves it held.

    Re-entrant within one process; waiting longer than ``timeout_s`` is an error naming the storage.
    """

    def __init__(self, url: str, storage: Any, study_name: str, timeout_s: float = 600.0):
        self.url, self.storage, self.study_name, self.timeout_s = url, storage, study_name, timeout_s
        digest = hashlib.sha256(f"fssbench-search:{study_name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)  # PostgreSQL: a bigint
        self.name = "fssbench-" + digest.hex()[:40]  # MySQL: at most 64 characters
        self.depth = 0
        self.file_lock = None
        self.connection: Any = None
        path = storage_lock_path(url)
        if path is not None:
            from filelock import FileLock

            path.parent.mkdir(parents=True, exist_ok=True)
            self.file_lock = FileLock(str(path) + ".lock", timeout=timeout_s)

    def __enter__(self) -> StudyLock:
        if self.depth == 0:
            self._acquire()
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            self._release()

    def _acquire(self) -> None:
        if self.file_lock is not None:
            from filelock import Timeout

            try:
                self.file_lock.acquire()
            except Timeout:
                raise FssBenchError(self._busy()) from None
            return
        from sqlalchemy import text

        conn = self.storage.engine.connect()
        postgres = conn.dialect.name == "postgresql"
        take = "SELECT pg_try_advisory_lock(:key)" if postgres else "SELECT GET_LOCK(:name, 0)"
        deadline = time.monotonic() + self.timeout_s
        while not conn.execute(text(take), {"key": self.key, "name": self.name}).scalar():
            if time.monotonic() > deadline:
                conn.close()
                raise FssBenchError(self._busy())
            time.sleep(0.1)
        conn.commit()  # the lock belongs to the session, not to this transaction
        self.connection = conn

    def _release(self) -> None:
        if self.file_lock is not None:
            self.file_lock.release()
            return
        from sqlalchemy import text

        conn, self.connection = self.connection, None
        postgres = conn.dialect.name == "postgresql"
        give = "SELECT pg_advisory_unlock(:key)" if postgres else "SELECT RELEASE_LOCK(:name)"
        try:
            conn.execute(text(give), {"key": self.key, "name": self.name})
            conn.commit()
        finally:
            conn.close()

    def _busy(self) -> str:
        return (
            f"--storage {redact(self.url)}: another worker of Optuna study {self.study_name!r} has held its "
            f"study lock for {self.timeout_s:.0f} s; stop the stuck fssbench search process and rerun"
        )


def open_storage(
    url: str,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    on_stale: Callable[[Any, Any], None] | None = None,
):
    """An Optuna storage from ``url``: an RDB URL (``sqlite:///PATH``, ``postgresql://...``,
    ``mysql://...``) with heartbeats, or ``journal:PATH`` (a journal file, for NFS; Optuna has no
    heartbeats there)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise FssBenchError(
            f"--storage {redact(url)}: expected an RDB URL (sqlite:///optuna.db, postgresql://user@host/db, "
            "mysql://...) or journal:PATH"
        )
    url = with_postgres_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}  # several workers on one file wait, not fail
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_s,
                grace_period=max(2 * heartbeat_s, heartbeat_s + 2),
                heartbeat_stale_trial_callback=on_stale,
            )
    except Exception as e:
        raise FssBenchError(
            f"--storage {redact(url)}: not usable ({type(e).__name__}: {str(e)[:200]})"
        ) from None


def make_sampler(spec: SearchSpec):
    import optuna

    s = spec.sampler
    if s["type"] == "grid":
        return optuna.samplers.GridSampler(spec.grid, seed=s["seed"])
    if s["type"] == "random":
        return optuna.samplers.RandomSampler(seed=s["seed"])
    if s["type"] == "cmaes":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.CmaEsSampler(seed=s["seed"], n_startup_trials=s.get("startup_trials", 1))
    return optuna.samplers.TPESampler(seed=s["seed"], n_startup_trials=s.get("startup_trials", 10))


def make_pruner(spec: SearchSpec):
    import optuna

    p = spec.pruner
    if p["type"] == "none":
        return optuna.pruners.NopPruner()
    if p["type"] == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p["min_resource"] or "auto", reduction_factor=p["reduction_factor"]
        )
    if p["type"] == "wilcoxon":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(
                p_threshold=p["p_threshold"], n_startup_steps=p["startup_steps"]
            )
    return optuna.pruners.MedianPruner(n_startup_trials=p["startup_trials"], n_warmup_steps=p["warmup_steps"])


def suggest(trial: Any, spec: SearchSpec) -> dict[str, Any]:
    """The trial's value of every dimension of the space."""
    out = {}
    for p in spec.space.values():
        if p.type == "categorical":
            out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.type == "int":
            out[p.name] = trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
        elif spec.sampler["type"] == "grid":  # the grid's floats are exact values, not a range
            out[p.name] = trial.suggest_categorical(p.name, list(p.grid))
        else:
            out[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return out


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


@dataclass
class SearchOutcome:
    """What one worker did: ``ran_here`` counts the trials this process ran (any final state, not
    other workers'); ``failures`` is the number of failures in a row that stopped this worker
    (``MAX_CONSECUTIVE_FAILURES``), 0 when it was not stopped by failures (then it exits 0)."""

    study_name: str
    storage: str
    parent_run_id: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    ran_here: int
    seconds: float
    cache_summary: str
    outputs: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: int = 0


class SearchRunner:
    """Runs (or resumes) the Optuna study of a search in this process; see the module docstring."""

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
        self.spec, self.tracking_uri, self.progress, self.log = spec, tracking_uri, progress, log
        # trials that differ only downstream of a stage (say scma_scale) share it on each episode
        self.workspace = Workspace.for_study(
            spec.study.cache, work_dir, use_cache=use_cache, memory_cache_bytes=memory_cache_bytes
        )
        self.work_dir = self.workspace.work_dir
        self.storage_url = storage
        self.study_name = study_name or spec.name
        self.trials = trials or spec.trials
        self.timeout, self.heartbeat_s = timeout, heartbeat_s
        self.device = device or spec.variant.device
        self.entry = get_method(spec.variant.method)
        self.tracker: Tracker | None = None
        self.records: SearchRecords | None = None
        self._failures_in_a_row = 0
        self._stopped_on_failures = False  # MAX_CONSECUTIVE_FAILURES of this worker's trials in a row
        self.run_trials = True  # False: only read the study and write its outputs (the Ray driver)

    # the workspace's parts, by their old names
    cache = property(lambda self: self.workspace.cache)
    hashes = property(lambda self: self.workspace.hashes)
    parent_run_id = property(lambda self: self.records.parent_run_id if self.records else "")

    # ------------------------------------------------------------------------------------ planning
    def plan(self) -> list[SearchCell]:
        """The validation (or, when allowed, test) manifests of every cell, with their images checked."""
        manifests = study_manifests(self.spec.study, self.work_dir, kind=self.spec.kind)
        cells = [SearchCell(ds, f, k, s, p) for (ds, f, k, s), p in manifests.items()]
        self.manifests = {c.manifest_path: load_manifest(c.manifest_path) for c in cells}  # read once
        data = self.spec.study.data
        self.workspace.check_images((self.manifests[c.manifest_path], data[c.dataset]) for c in cells)
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

    # ---------------------------------------------------------------------------------------- run
    def run(self) -> SearchOutcome:
        with sigterm_as_interrupt():
            return self._run()

    def _run(self) -> SearchOutcome:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        spec = self.spec
        self.cells = self.plan()
        if self.run_trials:
            self._preflight()
        tracker = self.tracker = Tracker(self.tracking_uri)
        self.storage_url = self.storage_url or default_storage(tracker.uri)
        self.experiment_id = tracker.experiment_id(spec.experiment)
        records = self.records = SearchRecords(
            tracker, spec, self.experiment_id, self.study_name, redact(self.storage_url)
        )
        storage = open_storage(self.storage_url, self.heartbeat_s, self._on_stale)
        self.lock = StudyLock(self.storage_url, storage, self.study_name)
        study = self._open_study(storage)
        self.study = study
        if self.run_trials:
            self._retry_interrupted(study)
        done = self._finished(study)
        remaining = max(0, self.trials - done) if self.run_trials else 0
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
            if remaining:
                if done:
                    self.log(
                        f"resuming Optuna study {self.study_name!r}: {done} of {self.trials} trials finished"
                    )
                ran_here = self._optimize(study, bar)
            else:
                self.log(
                    f"Optuna study {self.study_name!r} already has {done} finished trials (--trials {self.trials})"
                )
            status = "FINISHED" if not self._stopped_on_failures else "FAILED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            bar.close()
            records.end_parent(status)
        seconds = time.perf_counter() - t0
        with self.lock:  # the outputs and the parent run's tags: one worker at a time, the last one wins
            outcome = SearchOutcome(
                study_name=self.study_name,
                storage=redact(self.storage_url),
                parent_run_id=self.parent_run_id,
                trials=trials_table(study),
                best=best_trial(study),
                ran_here=ran_here,
                seconds=seconds,
                cache_summary=self.cache.stats.summary(),
            )
            outcome.failures = self._failures_in_a_row if self._stopped_on_failures else 0
            if outcome.best is not None:
                self._write_outputs(study, outcome)
        return outcome

    def _optimize(self, study: Any, bar: Any) -> int:
        """This worker's trials, until the study has ``--trials`` finished ones; returns how many
        ran here."""
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        ran_here = 0

        def on_trial(study: Any, trial: Any) -> None:  # called for this worker's trials only
            nonlocal ran_here
            ran_here += 1
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                bar.update()
            try:
                best = study.best_value
                bar.set_postfix_str(f"best {self.spec.metric} {100 * best:.2f}")
            except ValueError:
                pass

        # no n_trials: a failed trial does not count towards --trials (only finished ones
        # do), so the worker stops at --trials finished trials in the study, after
        # MAX_CONSECUTIVE_FAILURES failures in a row, at --timeout, or when a grid is walked
        study.optimize(
            self._objective,
            timeout=self.timeout,
            catch=(Exception,),
            callbacks=[
                MaxTrialsCallback(self.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                on_trial,
            ],
            gc_after_trial=False,
        )
        return ran_here

    def _preflight(self) -> None:
        """Real weights are loaded strictly once now (and kept for the trials): a wrong checkpoint is
        an error before any store or study exists."""
        settings = self.spec.variant.settings
        if settings.get("random_init"):
            return
        blame = f"{self.spec.source}: variant {self.spec.variant.name}"
        self.workspace.preflight([(self.cell_spec(self.cells[0], settings), None, blame)])

    # -------------------------------------------------------------------------------- the study
    def _open_study(self, storage: Any) -> Any:
        """Create the Optuna study and the MLflow parent run, or load them, under the study lock: the
        first worker creates both, the others find both (a parent whose creator died before
        recording it, or that lives in another MLflow store, is created by the next worker)."""
        import optuna

        spec, records = self.spec, self.records
        assert records is not None
        sampler, pruner = make_sampler(spec), make_pruner(spec)
        with self.lock:
            try:
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=storage,
                    sampler=sampler,
                    pruner=pruner,
                    direction=spec.direction,
                    load_if_exists=False,
                )
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(
                    study_name=self.study_name, storage=storage, sampler=sampler, pruner=pruner
                )
            else:
                attrs = {
                    SEARCH_ATTR: spec.sha256,
                    "fss.search": spec.name,
                    "fss.search_file": spec.source,
                    "fss.tuned_on_test": spec.tuned_on_test,
                    "fss.random_init": bool(spec.variant.settings.get("random_init")),
                    "fss.identity": spec.identity(),
                }
                for k, v in attrs.items():
                    study.set_user_attr(k, v)
                self._create_parent(study)
                return study
            attrs = study.user_attrs
            if attrs.get(SEARCH_ATTR) not in (None, spec.sha256):
                raise FssBenchError(
                    f"Optuna study {self.study_name!r} in {redact(self.storage_url or '')} was created by a "
                    f"different search (other space, objective, manifests or settings); pass --study-name NEW "
                    f"to start a new one, or restore the search file it was created with "
                    f"({attrs.get('fss.search_file')})"
                )
            if list(study.directions)[0].name.lower() != spec.direction:
                raise FssBenchError(
                    f"Optuna study {self.study_name!r} has direction {study.direction.name.lower()}"
                )
            rid = attrs.get(PARENT_ATTR)
            if rid is None or not records.has_parent(rid):
                self._create_parent(study)
            else:
                records.parent_run_id = rid
            return study

    def _create_parent(self, study: Any) -> None:
        assert self.records is not None
        study.set_user_attr(PARENT_ATTR, self.records.create_parent())

    def _finished(self, study: Any) -> int:
        from optuna.trial import TrialState

        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def _retry_interrupted(self, study: Any) -> None:
        """Trials interrupted by Ctrl-C or SIGTERM are run again with the same parameters, once: the
        study lock makes reading the retries and enqueueing the missing ones one step, so workers
        restarted together never enqueue the same retry twice."""
        from optuna.trial import TrialState

        with self.lock:
            trials = study.get_trials(deepcopy=False)
            retried = {t.user_attrs.get("retry_of") for t in trials}
            for t in trials:
                if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
                    study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)

    def _on_stale(self, study: Any, trial: Any) -> None:
        """A trial whose worker stopped heartbeating was failed by Optuna: its MLflow run is marked
        FAILED (created if the worker died before making it), and it is retried as a new trial. Under
        the study lock and only if no retry of it exists yet: two workers that both saw it stale
        (SQLite does not lock the row they both read) record and retry it once."""
        from optuna.storages import RetryFailedTrialCallback

        assert self.records is not None
        message = "its worker stopped sending heartbeats (killed or lost); retried as a new trial"
        with self.lock:
            history = [t.system_attrs.get("retry_history") or [] for t in study.get_trials(deepcopy=False)]
            if any(h and h[-1] == trial.number for h in history):
                return  # another worker recorded and retried it already
            rid = trial.user_attrs.get("mlflow_run_id")
            try:
                if rid is None:
                    rid = self._trial_run(trial.number, trial.params, {})
                self.records.fail_stale(rid, message)
            finally:
                RetryFailedTrialCallback(max_retry=3)(study, trial)

    # -------------------------------------------------------------------------------- a trial
    def _trial_run(self, number: int, params: dict[str, Any], extra_tags: dict[str, str]) -> str:
        assert self.records is not None
        return self.records.trial_run(number, params, {**self._provenance(params), **extra_tags})

    def _provenance(self, params: dict[str, Any]) -> dict[str, str]:
        """What a cell run records of where its numbers come from, for a trial: MLflow's standard
        tags, the commit, package versions and code hash, the search file, and per cell of the
        search (``dataset.foldK.Nshot.seedS``) its manifest's hash and its weights (file hashes or
        random-init ids, for the trial's own settings)."""
        settings = self.entry.resolve({**self.spec.variant.settings, **params})
        manifests, weights = {}, {}
        for cell in self.cells:
            manifests[cell.label] = self.manifests[cell.manifest_path].sha256
            weights[cell.label] = weight_ids(self.cell_spec(cell, settings), self.hashes)
        return {
            **standard_tags(self.spec.source),
            "fss.git_commit": git_commit(),
            "fss.versions": json.dumps(package_versions()),
            "fss.code_sha256": code_hash(),
            "fss.search_file": self.spec.source,
            "fss.manifest_sha256s": json.dumps(manifests, sort_keys=True),
            "fss.weights": json.dumps(weights, sort_keys=True),
        }

    def _objective(self, trial: Any) -> float:
        import optuna

        spec, records = self.spec, self.records
        assert records is not None
        params = suggest(trial, spec)
        settings = self.entry.resolve({**spec.variant.settings, **params})
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("fss.tuned_on_test", spec.tuned_on_test)
        extra = {"fss.retry_of": str(trial.user_attrs["retry_of"])} if "retry_of" in trial.user_attrs else {}
        rid = self._trial_run(trial.number, params, extra)
        trial.set_user_attr("mlflow_run_id", rid)
        progress = {"episodes": 0}
        try:
            value = self._evaluate(trial, settings, rid, progress)
        except optuna.TrialPruned:
            self._end_trial(trial, rid, "PRUNED", progress["episodes"])
            self._failures_in_a_row = 0
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            self._end_trial(
                trial,
                rid,
                "FAIL",
                progress["episodes"],
                "interrupted (SIGINT/SIGTERM); a rerun retries it",
                "KILLED",
            )
            raise
        except Exception as e:
            text = str(e) if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {e}"
            self._end_trial(trial, rid, "FAIL", progress["episodes"], text, "FAILED")
            self.log(f"trial {trial.number} FAILED: {text.splitlines()[0] if text else type(e).__name__}")
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                self.log(f"{MAX_CONSECUTIVE_FAILURES} trials failed in a row: stopping this worker")
                self._stopped_on_failures = True
                trial.study.stop()
            raise
        records.metric(rid, "objective", value, step=progress["episodes"])
        self._end_trial(trial, rid, "COMPLETE", progress["episodes"])
        self._failures_in_a_row = 0
        return value

    def _end_trial(
        self,
        trial: Any,
        rid: str,
        state: str,
        episodes: int,
        error: str | None = None,
        status: str = "FINISHED",
    ) -> None:
        trial.set_user_attr("episodes_run", episodes)
        assert self.records is not None
        self.records.end_trial(rid, state, episodes, error, status)

    def _evaluate(self, trial: Any, settings: dict[str, Any], rid: str, progress: dict[str, int]) -> float:
        """Every cell of the search with ``settings``; reports the running objective to Optuna."""
        import optuna

        spec, records = self.spec, self.records
        assert records is not None
        metric, every = spec.metric, spec.report_every
        wilcoxon = spec.pruner["type"] == "wilcoxon"
        values: list[float] = []
        chunk: list[dict[str, int]] = []
        reported: set[int] = set()

        def value_of(rows: list[dict[str, int]]) -> float:
            import pandas as pd

            table = pd.DataFrame(rows)
            return float(summarize(table, sorted(set(table["class"])))[metric])  # classes seen so far

        def report(value: float, step: int) -> None:
            if step in reported:
                return
            reported.add(step)
            trial.report(value, step)
            records.metric(rid, f"running_{metric}", value, step=progress["episodes"])
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned after {progress['episodes']} episodes (running {metric} {100 * value:.2f})"
                )

        for cell in self.cells:
            cspec = self.cell_spec(cell, settings)
            manifest = self.manifests[cell.manifest_path]
            key = cell_key(cspec, manifest.sha256, weight_ids(cspec, self.hashes))
            rows: list[dict[str, int]] = []

            total = manifest.num_episodes

            def on_row(row: dict[str, int], rows: list[dict[str, int]] = rows, total: int = total) -> None:
                rows.append(row)
                chunk.append(row)
                progress["episodes"] += 1
                if progress["episodes"] % every == 0:
                    if wilcoxon:  # one value per chunk of episodes, paired across trials by its index
                        report(value_of(chunk), progress["episodes"] // every - 1)
                        chunk.clear()
                    elif len(rows) < total:  # a cell's last episode reports its exact value below
                        report(sum(values + [value_of(rows)]) / (len(values) + 1), progress["episodes"])

            ws = self.workspace
            with ws.cell_lock(key):  # a twin trial elsewhere
                result = evaluate_cell(
                    cspec,
                    ws.cache,
                    key=key,
                    pool=ws.pool,
                    journal_path=ws.journal_path(key),
                    on_row=on_row,
                    stages=ws.stages,
                    on_start=lambda done, total, name=cspec.name: (
                        done
                        and self.log(f"trial {trial.number}: resuming {name} at episode {done} of {total}")
                    ),
                )
            values.append(float(result.summary[metric]))
            records.metric(rid, f"{metric}.{cell.label}", values[-1])
            if not wilcoxon:
                report(sum(values) / len(values), progress["episodes"])
        if wilcoxon and chunk:
            report(value_of(chunk), math.ceil(progress["episodes"] / every) - 1)
        return sum(values) / len(values)

    # ------------------------------------------------------------------------------------ outputs
    def _write_outputs(self, study: Any, outcome: SearchOutcome) -> None:
        """best-study.yaml, trials.csv and Optuna's plots under ``<work>/searches/<study>/``,
        logged to the parent run (``search/``)."""
        import pandas as pd

        assert self.records is not None and outcome.best is not None
        folder = self.work_dir / "searches" / self.study_name
        folder.mkdir(parents=True, exist_ok=True)
        best_path = folder / "best-study.yaml"
        write_text_atomic(
            best_path,
            best_study_yaml(self.spec, outcome.best, self.study_name, redact(self.storage_url or "")),
        )
        trials_path = folder / "trials.csv"
        write_text_atomic(trials_path, pd.DataFrame(outcome.trials).to_csv(index=False))
        outcome.outputs = {"best_study": best_path, "trials": trials_path}
        plots, notes = save_plots(study, folder, self.spec)
        outcome.outputs.update(plots)
        outcome.notes.extend(notes)
        self.records.log_outputs([best_path, trials_path, *plots.values()], outcome.best)


def check_test_tuning(spec: SearchSpec, allow: bool) -> None:
    """Refuse a search on test manifests unless ``--allow-test-tuning`` was given."""
    if spec.kind == "test" and not allow:
        raise FssBenchError(
            f"{spec.source}: kind: test would tune on the test episodes that reports score (the numbers "
            "would no longer be test results); use kind: val (the fold's base classes on the val split), "
            "or pass --allow-test-tuning, which tags the study, every trial and every run fss.tuned_on_test=true"
        )


def trials_table(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, episodes run, parameters, MLflow run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "episodes_run": t.user_attrs.get("episodes_run"),
                **{f"param.{k}": v for k, v in t.params.items()},
                "retry_of": t.user_attrs.get("retry_of"),
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                "seconds": t.duration.total_seconds() if t.duration is not None else None,
            }
        )
    return rows


def best_trial(study: Any) -> dict[str, Any] | None:
    try:
        t = study.best_trial
    except ValueError:
        return None
    return {"number": t.number, "value": t.value, "params": dict(t.params)}


def best_study_raw(spec: SearchSpec, best: dict[str, Any]) -> dict[str, Any]:
    """The base study (as given, with its test episodes) plus ``<variant>-tuned``: the searched
    variant with the best parameters."""
    raw = copy.deepcopy(spec.study_raw)
    variants = raw.get("variants") or {}
    own = dict(variants.get(spec.variant.name) or {})
    variants[f"{spec.variant.name}-tuned"] = {**own, **best["params"]}
    raw["variants"] = variants
    raw["name"] = f"{raw['name']}-tuned"
    desc = raw.get("description", "")
    raw["description"] = (
        desc + "; " if desc else ""
    ) + f"with {spec.variant.name}-tuned from search {spec.name}"
    return raw


def best_study_yaml(spec: SearchSpec, best: dict[str, Any], study_name: str, storage: str) -> str:
    raw = best_study_raw(spec, best)
    parse_study(copy.deepcopy(raw), source="best-study.yaml")  # what is written must be a valid study
    where = (
        "TEST manifests (tuned on test: --allow-test-tuning)"
        if spec.tuned_on_test
        else "validation manifests (base classes)"
    )
    header = [
        f"# Best parameters of search {spec.name!r} ({spec.source}): Optuna study {study_name!r} in {storage},",
        f"# trial {best['number']}, {spec.metric} {100 * best['value']:.2f} on the {where}.",
        f"# {spec.variant.name}-tuned carries them; this study scores it on the test manifests:",
        "#   fssbench run THIS_FILE",
    ]
    if spec.tuned_on_test:
        header.insert(0, "# WARNING: TUNED ON TEST EPISODES: its test numbers are not unbiased results.")
    return "\n".join(header) + "\n" + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)


def save_plots(study: Any, folder: Path, spec: SearchSpec) -> tuple[dict[str, Path], list[str]]:
    """Optuna's optimisation history, parameter importances, slice and contour plots (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    out, notes = {}, []
    params = list(spec.space)
    # objective values in percent, as the tables print them (trials hold fractions)
    label = f"{spec.metric} (%)"
    in_percent = {"target": lambda t: 100 * t.value, "target_name": label}
    makers = {
        "history": lambda: ovm.plot_optimization_history(study, **in_percent),
        "importances": lambda: ovm.plot_param_importances(study),
        "slice": lambda: ovm.plot_slice(study, **in_percent),
        "contour": lambda: ovm.plot_contour(study, params=params[:2], **in_percent),
    }
    title_note = " (RANDOM-INIT WEIGHTS)" if spec.variant.settings.get("random_init") else ""
    if spec.tuned_on_test:
        title_note += " (TUNED ON TEST)"
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "unique value length is less than 2"
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    for name, make in makers.items():
        reason = _nothing_to_show(name, params, done)
        if reason:
            notes.append(f"{name} plot skipped: {reason}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                ax = make()
            axes = ax if hasattr(ax, "flat") else [ax]
            fig = next(iter(getattr(axes, "flat", axes))).figure
            fig.suptitle(
                f"{spec.name} (Optuna study {study.study_name}): {name}{title_note}",
                color="red" if title_note else "black",
            )
            path = folder / f"{name}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(fig)
            out[name] = path
        except Exception as e:  # too few finished trials, a constant parameter ...
            notes.append(
                f"{name} plot skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            )
            plt.close("all")
    return out, notes


def _nothing_to_show(plot: str, params: list[str], done: list[Any]) -> str | None:
    """Why an Optuna plot would show nothing (then it is skipped, with this reason), or None."""
    if not done:
        return "no trial completed"
    if plot == "contour":
        if len(params) < 2:
            return "the space has one parameter"
        for p in params[:2]:
            drawn = {repr(t.params.get(p)) for t in done}
            if len(drawn) < 2:
                return f"every completed trial drew one value of {p} ({next(iter(drawn))})"
    if plot in ("slice", "importances") and all(
        len({repr(t.params.get(p)) for t in done}) < 2 for p in params
    ):
        return "every completed trial drew the same parameters"
    return None


def print_outcome(outcome: SearchOutcome, spec: SearchSpec, tracking_uri: str, out: Any = sys.stdout) -> None:
    import pandas as pd

    table = pd.DataFrame(outcome.trials)
    if not table.empty:
        shown = table.drop(columns=[c for c in ("mlflow_run_id", "retry_of") if c in table])
        if "value" in shown:
            shown["value"] = shown["value"].map(
                lambda v: None if v is None or pd.isna(v) else round(100 * v, 2)
            )
            shown = shown.rename(columns={"value": f"{spec.metric} (%)"})
        print(shown.to_markdown(index=False), file=out)
        counts = table["state"].value_counts().to_dict()
        print("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out)
    if outcome.ran_here:
        rate = outcome.ran_here / max(outcome.seconds, 1e-9)
        print(
            f"{outcome.ran_here} trial(s) ran here in {outcome.seconds:.1f} s ({rate:.2f} trials/s)", file=out
        )
    print(outcome.cache_summary, file=out)
    if outcome.best is not None:
        print(
            f"best: trial {outcome.best['number']}, {spec.metric} {100 * outcome.best['value']:.2f} on "
            f"{spec.kind} manifests, params {json.dumps(outcome.best['params'], sort_keys=True)}",
            file=out,
        )
    for name, path in outcome.outputs.items():
        print(f"{name}: {path}", file=out)
    for note in outcome.notes:
        print(f"note: {note}", file=out)
    print(
        f"Optuna study {outcome.study_name!r} in {outcome.storage}; MLflow: {tracking_uri} "
        f"(experiment {spec.experiment!r}, parent run {outcome.parent_run_id})",
        file=out,
    )
    if spec.variant.settings.get("random_init"):
        print(
            "WARNING: RANDOM-INIT WEIGHTS: these numbers check the pipeline, they are not results", file=out
        )
    if spec.tuned_on_test:
        print("WARNING: TUNED ON TEST EPISODES (fss.tuned_on_test=true): not unbiased test results", file=out)
