"""MLflow at the edge: the tracking store, one experiment per study, a parent run per invocation and
a child run per cell. Only :mod:`benchmark.records` imports mlflow (for the jobs, the engines and the
CLI, an import-linter contract checks it; the training's run is :mod:`benchmark.records.training`).

Default store: SQLite ``mlflow.db`` in the working directory (created once, before any work),
overridden by ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` (e.g. a shared MLflow server). A finished
cell is found again by its ``fss.cell_key`` tag, which is how resume works across machines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmark.errors import FssBenchError
from benchmark.io_utils import installed_versions

CELL_KEY_TAG = "fss.cell_key"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


SQLITE_HEADER = b"SQLite format 3\x00"
SERVER_SCHEMES = ("http://", "https://", "databricks", "postgresql", "mysql", "mssql")


def check_tracking_uri(uri: str, option: str = "--tracking-uri") -> None:
    """Refuse, in one line naming ``option`` and the fix and before anything is created, a store
    fssbench cannot use: MLflow's file store (``file://`` or a bare path: in maintenance mode), a
    ``sqlite:///`` path under a file or that is a folder, or a file that is not a SQLite database.
    Servers and databases are checked when they are first reached."""
    fix = "use sqlite:///PATH/mlflow.db (a local store) or http://HOST:PORT (an MLflow server)"
    if uri.startswith(SERVER_SCHEMES):
        return
    if not uri.startswith("sqlite:"):
        raise FssBenchError(
            f"{option} {uri}: MLflow's file store (file:// or a plain path) is in maintenance mode and "
            f"fssbench does not use it; {fix}"
        )
    if not uri.startswith("sqlite:///") or uri == "sqlite:///":
        raise FssBenchError(f"{option} {uri}: a SQLite store needs a file path, sqlite:///PATH/mlflow.db")
    path = Path(uri[len("sqlite:///") :])
    if path.is_dir():
        raise FssBenchError(
            f"{option} {uri}: {path} is a folder; name a file in it, sqlite:///{path}/mlflow.db"
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FssBenchError(f"{option} {uri}: {parent} is a file, not a folder; {fix}")
            break
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise FssBenchError(
                    f"{option} {uri}: {path} is not a SQLite database (an MLflow store); {fix} "
                    "with a new file name"
                )


def git_commit() -> str:
    """The suite's git commit (``+dirty`` if the tree has changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


VERSIONED_PACKAGES = (
    "fssam-bench",
    "torch",
    "torchvision",
    "sam2",
    "timm",
    "pillow",
    "numpy",
    "scipy",
    "pandas",
    "mlflow",
    "optuna",
)
"""The packages whose versions a run's record names (pillow decodes every image: part of the cell key)."""


def package_versions() -> dict[str, str]:
    """Python, the host, the versions of :data:`VERSIONED_PACKAGES` and, where torch is loaded,
    its CUDA and cuDNN builds (the ``fss.versions`` tag)."""
    import platform

    out = {
        "python": sys.version.split()[0],
        "host": platform.node(),
        **installed_versions(VERSIONED_PACKAGES),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = str(torch.version.cuda or "none")
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        out["cudnn"] = str(cudnn or "none")
    return out


def standard_tags(source_name: str) -> dict[str, str]:
    """MLflow's own tags, so the UI's columns fill: the commit, the user and the run's source."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    commit = git_commit().removesuffix("+dirty")
    tags = {"mlflow.user": user, "mlflow.source.name": source_name, "mlflow.source.type": "LOCAL"}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


class Tracker:
    """A thin MlflowClient wrapper with the suite's conventions."""

    def __init__(self, tracking_uri: str | None = None, create: bool = True):
        """``create=False`` (commands that read runs): a missing local store is an error naming it,
        and nothing is created."""
        import mlflow
        from mlflow.tracking import MlflowClient

        for name in ("mlflow.store.db.utils", "alembic.runtime.migration", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)  # no "Creating initial MLflow database tables"
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.uri = tracking_uri or default_tracking_uri()
        check_tracking_uri(self.uri, "--tracking-uri" if tracking_uri else "MLFLOW_TRACKING_URI")
        if not create and self.is_local_sqlite and not Path(self.uri[len("sqlite:///") :]).is_file():
            raise FssBenchError(
                f"tracking store {self.uri} does not exist (nothing was created); pass --tracking-uri "
                "(or set MLFLOW_TRACKING_URI) to the store your runs went to"
            )
        mlflow.set_tracking_uri(self.uri)
        with self.store_lock():  # processes started together never race on the first migration
            self.client = MlflowClient(self.uri)
            try:
                self.client.search_experiments(max_results=1)  # creates and migrates a SQLite store once
            except Exception as e:
                raise FssBenchError(
                    f"tracking store {self.uri} is not usable ({type(e).__name__}: {str(e)[:200]})"
                ) from None

    @staticmethod
    def store_exists(tracking_uri: str | None = None) -> bool:
        """False only for a local SQLite store whose file does not exist yet (a server is assumed up)."""
        uri = tracking_uri or default_tracking_uri()
        return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///") :]).is_file()

    def store_lock(self) -> contextlib.AbstractContextManager:
        """An inter-process lock beside a local SQLite store (schema creation, experiment creation);
        a no-op for servers, which serialise these themselves."""
        if not self.is_local_sqlite:
            return contextlib.nullcontext()
        from filelock import FileLock

        db = Path(self.uri[len("sqlite:///") :])
        db.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(db) + ".lock", timeout=600)

    @property
    def is_local_sqlite(self) -> bool:
        return self.uri.startswith("sqlite:///")

    def experiment_id(self, name: str) -> str:
        """The experiment of a study, created once (under the store lock) if it does not exist."""
        with self.store_lock():
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                return exp.experiment_id
            location = None
            if self.is_local_sqlite:
                db = Path(self.uri[len("sqlite:///") :])
                location = (db.parent / "mlartifacts").resolve().as_uri()
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except Exception:  # a server shared with other workers: one of them created it first
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
                return exp.experiment_id

    def start_parent(
        self, experiment_id: str, run_name: str, tags: dict[str, str], params: dict[str, Any]
    ) -> str:
        source = tags.get("fss.study_file") or "fssbench"
        run = self.client.create_run(
            experiment_id, run_name=run_name, tags={**standard_tags(source), **tags, "fss.kind": "study"}
        )
        self._params_or_kill(run.info.run_id, params)
        return run.info.run_id

    def _params_or_kill(self, run_id: str, params: dict[str, Any]) -> None:
        """Log params; if that is interrupted or fails, the new run is ended, never left RUNNING."""
        try:
            self.log_params(run_id, params)
        except BaseException:
            self.client.set_terminated(run_id, status="KILLED")
            raise

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def cell_runs(self, experiment_id: str, key: str) -> list[Any]:
        return list(
            self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{CELL_KEY_TAG}` = '{key}'", max_results=100
            )
        )

    def finished_cell(self, experiment_id: str, key: str) -> Any | None:
        done = [r for r in self.cell_runs(experiment_id, key) if r.info.status == "FINISHED"]
        return done[0] if done else None

    def finished_cells(self, experiment_id: str) -> dict[str, Any]:
        """cell key -> its FINISHED cell run, for the whole experiment in a few queries."""
        out: dict[str, Any] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id],
                filter_string="tags.`fss.kind` = 'cell' and attributes.status = 'FINISHED'",
                max_results=1000,
                page_token=token,
            )
            for r in page:
                out.setdefault(r.data.tags.get(CELL_KEY_TAG, ""), r)
            token = page.token
            if not token:
                return out

    def finished_cells_elsewhere(self, experiment_id: str, keys: list[str]) -> dict[str, Any]:
        """For each of ``keys`` that has one, the oldest FINISHED cell run with that cell key in
        another experiment (the experiments are listed once, whatever the number of keys)."""
        others = [e.experiment_id for e in self._experiments() if e.experiment_id != experiment_id]
        out = {}
        for key in keys if others else ():
            run = self._finished_in(others, key)
            if run is not None:
                out[key] = run
        return out

    def _finished_in(self, others: list[str], key: str) -> Any | None:
        """The oldest logged FINISHED cell run with cell key ``key`` in the experiments ``others``."""
        found = []
        for i in range(0, len(others), 50):
            found += self.client.search_runs(
                others[i : i + 50],
                filter_string=f"tags.`{CELL_KEY_TAG}` = '{key}' and tags.`fss.kind` = 'cell' and attributes.status = 'FINISHED'",
                max_results=10,
            )
        found = [r for r in found if r.data.tags.get("fss.logged") == "true"]
        return min(found, key=lambda r: r.info.start_time) if found else None

    def _experiments(self) -> list[Any]:
        out, token = [], None
        while True:
            page = self.client.search_experiments(max_results=1000, page_token=token)
            out += list(page)
            token = page.token
            if not token:
                return out

    def copy_cell(
        self, source: Any, experiment_id: str, run_name: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        """Record the finished cell run ``source`` (another experiment's) in ``experiment_id`` as a
        FINISHED cell run of its own: ``params`` and ``tags`` as this study names the cell, the
        source's metrics and artifacts, and ``fss.reused_from`` naming where they came from."""
        import tempfile

        from mlflow.entities import Metric

        src_exp = self.client.get_experiment(source.info.experiment_id).name
        tags = {**tags, "fss.reused_from": f"{src_exp}/{source.info.run_id}", "fss.logged": "true"}
        tags |= {k: v for k, v in source.data.tags.items() if k == "fss.peak_mem_kind"}
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={**standard_tags(tags.get("fss.study_file") or "fssbench"), **tags, "fss.kind": "cell"},
        )
        rid = run.info.run_id
        try:
            self.log_params(rid, params)
            now = int(time.time() * 1000)
            ms = [Metric(k, float(v), now, 0) for k, v in sorted(source.data.metrics.items())]
            for i in range(0, len(ms), 500):
                self.client.log_batch(rid, metrics=ms[i : i + 500], synchronous=True)
            with tempfile.TemporaryDirectory(prefix="fssbench-reuse-") as tmp:
                local = self.client.download_artifacts(source.info.run_id, "", tmp)
                self.client.log_artifacts(rid, local)
        except BaseException:
            self.client.delete_run(rid)  # never a half-copied cell
            raise
        self.client.set_terminated(rid, status="FINISHED")
        return rid

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100], synchronous=True)

    def start_cell(
        self, experiment_id: str, parent_id: str, run_name: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        """A RUNNING child run for a cell, with its params and tags. The caller holds the cell's lock:
        earlier unfinished runs of the same cell (killed, failed, torn) are deleted first, so each
        cell has exactly one run."""
        for old in self.cell_runs(experiment_id, tags[CELL_KEY_TAG]):
            if old.info.status != "FINISHED":
                self.client.delete_run(old.info.run_id)
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={
                **standard_tags(tags.get("fss.study_file") or "fssbench"),
                **tags,
                "mlflow.parentRunId": parent_id,
                "fss.kind": "cell",
            },
        )
        self._params_or_kill(run.info.run_id, params)
        return run.info.run_id

    def finish_cell(
        self,
        run_id: str,
        metrics: dict[str, float],
        artifacts: list[tuple[Path, str | None]],
        tags: dict[str, str] | None = None,
    ) -> None:
        """Log a cell's metrics, tags and artifacts, then mark it FINISHED (only then is it done)."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())]
        for i in range(0, len(ms), 500):
            self.client.log_batch(run_id, metrics=ms[i : i + 500], synchronous=True)
        extra = [RunTag(k, str(v)) for k, v in sorted((tags or {}).items())] + [RunTag("fss.logged", "true")]
        self.client.log_batch(run_id, tags=extra, synchronous=True)
        for path, artifact_path in artifacts:
            self.client.log_artifact(run_id, str(path), artifact_path)
        self.client.set_terminated(run_id, status="FINISHED")

    def fail_cell(self, run_id: str, error: str, status: str = "FAILED") -> None:
        """Mark a cell FAILED (or KILLED) with the error text as the ``fss.error`` tag."""
        self.client.set_tag(run_id, "fss.error", error[:5000])
        self.client.set_terminated(run_id, status=status)


def flat_params(prefix: str, d: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(f"{key}.", v))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out
