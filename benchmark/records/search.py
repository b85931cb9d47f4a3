"""The MLflow runs of a search: one parent run per Optuna study (``fss.kind = search``) and one
nested run per trial (``fss.kind = trial``) with its running objective, final value and state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark.records.tracking import Tracker, git_commit, package_versions
from benchmark.specs.search import SearchSpec


class SearchRecords:
    """The runs of search ``spec`` in ``experiment_id``, for Optuna study ``study_name`` in the
    storage ``storage`` (redacted: no password)."""

    def __init__(self, tracker: Tracker, spec: SearchSpec, experiment_id: str, study_name: str, storage: str):
        self.tracker, self.spec, self.experiment_id = tracker, spec, experiment_id
        self.study_name, self.storage = study_name, storage
        self.parent_run_id = ""

    def _common_tags(self) -> dict[str, str]:
        spec = self.spec
        return {
            "fss.search": spec.name,
            "fss.optuna_study": self.study_name,
            "fss.optuna_storage": self.storage,
            "fss.tuned_on_test": str(spec.tuned_on_test).lower(),
            "fss.random_init": str(bool(spec.variant.settings.get("random_init"))).lower(),
        }

    # --------------------------------------------------------------------------------- the parent
    def create_parent(self) -> str:
        """The search's parent run, with the space, objective and manifests as params."""
        spec = self.spec
        tags = {
            "fss.kind": "search",
            **self._common_tags(),
            "fss.search_sha256": spec.sha256,
            "fss.search_file": spec.source,
            "fss.variant": spec.variant.name,
            "fss.method": spec.variant.method,
            "fss.kind_of_manifests": spec.kind,
            "fss.git_commit": git_commit(),
            "fss.versions": json.dumps(package_versions()),
        }
        client = self.tracker.client
        run = client.create_run(self.experiment_id, run_name=f"search {self.study_name}", tags=tags)
        self.parent_run_id = run.info.run_id
        self.tracker.log_params(
            self.parent_run_id,
            {
                "space": json.dumps({k: p.to_json() for k, p in spec.space.items()}),
                "metric": spec.metric,
                "direction": spec.direction,
                "sampler": json.dumps(spec.sampler),
                "pruner": json.dumps(spec.pruner),
                "report_every": spec.report_every,
                "kind": spec.kind,
                "folds": json.dumps(spec.study.folds),
                "shots": json.dumps(spec.study.shots),
                "episodes": spec.study.episodes,
                "method": spec.variant.method,
                "variant": spec.variant.name,
            },
        )
        return self.parent_run_id

    def has_parent(self, run_id: str) -> bool:
        """Whether ``run_id`` is an active run of this experiment (the parent a worker recorded)."""
        try:
            run = self.tracker.client.get_run(run_id)
        except Exception:
            return False
        return run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active"

    def reopen_parent(self) -> None:
        self.tracker.client.update_run(self.parent_run_id, status="RUNNING")

    def end_parent(self, status: str) -> None:
        self.tracker.end_run(self.parent_run_id, status)

    def log_outputs(self, paths: list[Path], best: dict[str, Any]) -> None:
        """The search's output files under ``search/`` of the parent run, and the best trial."""
        client, rid = self.tracker.client, self.parent_run_id
        for path in paths:
            client.log_artifact(rid, str(path), "search")
        client.log_metric(rid, "best_value", float(best["value"]))
        client.set_tag(rid, "fss.best_trial", str(best["number"]))
        client.set_tag(rid, "fss.best_params", json.dumps(best["params"], sort_keys=True))

    # ---------------------------------------------------------------------------------- the trials
    def trial_run(self, number: int, params: dict[str, Any], tags: dict[str, str]) -> str:
        """A RUNNING nested run ``trial <number>`` with the trial's params; ``tags``: its
        provenance (and ``fss.retry_of``)."""
        spec = self.spec
        all_tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "fss.kind": "trial",
            "fss.search": spec.name,
            "fss.trial_number": str(number),
            "fss.trial_state": "RUNNING",
            **self._common_tags(),
            "fss.variant": spec.variant.name,
            "fss.method": spec.variant.method,
            **tags,
        }
        run = self.tracker.client.create_run(self.experiment_id, run_name=f"trial {number}", tags=all_tags)
        self.tracker.log_params(run.info.run_id, dict(params))
        return run.info.run_id

    def metric(self, run_id: str, name: str, value: float, step: int | None = None) -> None:
        """A trial's metric (``step``: episodes done, for the running objective)."""
        self.tracker.client.log_metric(run_id, name, value, step=step)

    def end_trial(
        self, run_id: str, state: str, episodes: int, error: str | None = None, status: str = "FINISHED"
    ) -> None:
        """The trial's episodes run and Optuna state; FINISHED, or ``status`` with ``error``."""
        client = self.tracker.client
        client.log_metric(run_id, "episodes_run", float(episodes))
        client.set_tag(run_id, "fss.trial_state", state)
        if error is not None:
            self.tracker.fail_cell(run_id, error, status=status)
        else:
            client.set_terminated(run_id, status="FINISHED")

    def fail_stale(self, run_id: str, message: str) -> None:
        """A trial whose worker stopped heartbeating: FAIL, and its run FAILED with ``message``."""
        self.tracker.client.set_tag(run_id, "fss.trial_state", "FAIL")
        self.tracker.fail_cell(run_id, message)
