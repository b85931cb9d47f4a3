"""MLflow at the edge: the tracking store, one experiment per study, a parent run per invocation and
a child run per cell. Nothing else in the suite imports mlflow.

Default store: SQLite ``mlflow.db`` in the working directory (created once, before any work),
overridden by ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` (e.g. a shared MLflow server). A finished
cell is found again by its ``fss.cell_key`` tag, which is how resume works across machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CELL_KEY_TAG = "fss.cell_key"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def git_commit() -> str:
    """The suite's git commit (``+dirty`` if the tree has changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("fssam-bench", "torch", "sam2", "timm", "mlflow", "numpy", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


class Tracker:
    """A thin MlflowClient wrapper with the suite's conventions."""

    def __init__(self, tracking_uri: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.uri = tracking_uri or default_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        try:
            self.client.search_experiments(max_results=1)  # creates and migrates a SQLite store once, here
        except Exception as e:
            from benchmark.errors import FssBenchError

            raise FssBenchError(
                f"tracking store {self.uri} is not usable ({type(e).__name__}: {str(e)[:200]})"
            ) from None

    @property
    def is_local_sqlite(self) -> bool:
        return self.uri.startswith("sqlite:///")

    def experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        location = None
        if self.is_local_sqlite:
            db = Path(self.uri[len("sqlite:///") :])
            location = (db.parent / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def start_parent(
        self, experiment_id: str, run_name: str, tags: dict[str, str], params: dict[str, Any]
    ) -> str:
        run = self.client.create_run(experiment_id, run_name=run_name, tags={**tags, "fss.kind": "study"})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

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

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100], synchronous=True)

    def log_cell(
        self,
        experiment_id: str,
        parent_id: str,
        run_name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        metrics: dict[str, float],
        artifacts: list[tuple[Path, str | None]],
    ) -> str:
        """Create, fill and finish a child run for a cell; earlier unfinished runs of the same cell
        (an interrupted log) are deleted first, so each cell has exactly one run."""
        from mlflow.entities import Metric, RunTag

        for old in self.cell_runs(experiment_id, tags[CELL_KEY_TAG]):
            if old.info.status != "FINISHED":
                self.client.delete_run(old.info.run_id)
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={**tags, "mlflow.parentRunId": parent_id, "fss.kind": "cell"},
        )
        rid = run.info.run_id
        try:
            self.log_params(rid, params)
            now = int(time.time() * 1000)
            ms = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())]
            for i in range(0, len(ms), 500):
                self.client.log_batch(rid, metrics=ms[i : i + 500], synchronous=True)
            self.client.log_batch(rid, tags=[RunTag("fss.logged", "true")], synchronous=True)
            for path, artifact_path in artifacts:
                self.client.log_artifact(rid, str(path), artifact_path)
        except BaseException:
            self.client.set_terminated(rid, status="FAILED")
            raise
        self.client.set_terminated(rid, status="FINISHED")
        return rid


def flat_params(prefix: str, d: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(f"{key}.", v))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out
