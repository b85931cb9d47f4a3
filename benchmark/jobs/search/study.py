"""A search's shared state: its Optuna study, the study lock and the MLflow parent run.

:class:`SearchStudy` opens them (the first worker creates the study and the parent run, the
others find both) and writes the search's outputs (:meth:`SearchStudy.outcome`). A search
worker (:class:`benchmark.jobs.search.runner.SearchRunner`) runs trials on it;
:func:`search_outputs` only reads it and writes the outputs (the ``--engine ray`` driver, whose
trials ran on the workers).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.errors import FssBenchError
from benchmark.io_utils import write_text_atomic
from benchmark.jobs.search.outputs import SearchOutcome, best_study_yaml, best_trial, save_plots, trials_table
from benchmark.jobs.search.sampling import make_pruner, make_sampler
from benchmark.jobs.search.storage import (
    DEFAULT_HEARTBEAT_S,
    StudyLock,
    default_storage,
    open_storage,
    redact,
)
from benchmark.records.search import SearchRecords
from benchmark.records.tracking import Tracker
from benchmark.specs.search import SearchSpec
from benchmark.workspace import Workspace

SEARCH_ATTR = "fss.search_sha256"
PARENT_ATTR = "fss.mlflow_parent_run_id"


class SearchStudy:
    """The Optuna study ``study_name`` of search ``spec`` in ``storage_url`` (default: beside the
    MLflow store) and its MLflow parent run; outputs under ``<work_dir>/searches/<study>/``."""

    def __init__(
        self,
        spec: SearchSpec,
        tracking_uri: str | None,
        work_dir: Path,
        storage_url: str | None = None,
        study_name: str | None = None,
        heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    ):
        self.spec, self.tracking_uri, self.work_dir = spec, tracking_uri, work_dir
        self.storage_url, self.study_name = storage_url, study_name or spec.name
        self.heartbeat_s = heartbeat_s
        self.tracker: Tracker | None = None
        self.records: SearchRecords | None = None
        self.study: Any = None
        self.lock: StudyLock | None = None

    @property
    def parent_run_id(self) -> str:
        return self.records.parent_run_id if self.records else ""

    def open(self, on_stale: Callable[[Any, Any], None] | None = None) -> Any:
        """The tracker, the storage (``on_stale``: called for a trial whose worker stopped
        heartbeating), the study lock and the study with its parent run; returns the study."""
        spec = self.spec
        tracker = self.tracker = Tracker(self.tracking_uri)
        self.storage_url = self.storage_url or default_storage(tracker.uri)
        experiment_id = tracker.experiment_id(spec.experiment)
        self.records = SearchRecords(tracker, spec, experiment_id, self.study_name, redact(self.storage_url))
        storage = open_storage(self.storage_url, self.heartbeat_s, on_stale)
        self.lock = StudyLock(self.storage_url, storage, self.study_name)
        self.study = self._open_study(storage)
        return self.study

    def _open_study(self, storage: Any) -> Any:
        """Create the Optuna study and the MLflow parent run, or load them, under the study lock: the
        first worker creates both, the others find both (a parent whose creator died before
        recording it, or that lives in another MLflow store, is created by the next worker)."""
        import optuna

        spec = self.spec
        sampler, pruner = make_sampler(spec), make_pruner(spec)
        assert self.lock is not None
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
            self._check_found(study)
            return study

    def _check_found(self, study: Any) -> None:
        """A study found in the storage: created by this very search (else refused), and its parent
        run found (else created)."""
        attrs, spec, records = study.user_attrs, self.spec, self.records
        assert records is not None
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

    def _create_parent(self, study: Any) -> None:
        assert self.records is not None
        study.set_user_attr(PARENT_ATTR, self.records.create_parent())

    def finished(self) -> int:
        """Finished (complete or pruned) trials of the study."""
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def retry_interrupted(self) -> None:
        """Trials interrupted by Ctrl-C or SIGTERM are run again with the same parameters, once: the
        study lock makes reading the retries and enqueueing the missing ones one step, so workers
        restarted together never enqueue the same retry twice."""
        from optuna.trial import TrialState

        assert self.lock is not None
        with self.lock:
            trials = self.study.get_trials(deepcopy=False)
            retried = {t.user_attrs.get("retry_of") for t in trials}
            for t in trials:
                if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
                    self.study.enqueue_trial(
                        t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False
                    )

    # ------------------------------------------------------------------------------------ outputs
    def outcome(self, ran_here: int, seconds: float, cache_summary: str, failures: int = 0) -> SearchOutcome:
        """The study as it stands, with its outputs written (:meth:`write_outputs`) once a trial
        completed; under the study lock: one worker at a time, the last one wins."""
        assert self.lock is not None
        with self.lock:
            outcome = SearchOutcome(
                study_name=self.study_name,
                storage=redact(self.storage_url or ""),
                parent_run_id=self.parent_run_id,
                trials=trials_table(self.study),
                best=best_trial(self.study),
                ran_here=ran_here,
                seconds=seconds,
                cache_summary=cache_summary,
            )
            outcome.failures = failures
            if outcome.best is not None:
                self.write_outputs(outcome)
        return outcome

    def write_outputs(self, outcome: SearchOutcome) -> None:
        """best-study.yaml, trials.csv and Optuna's plots under ``<work>/searches/<study>/``,
        logged to the parent run (``search/``)."""
        import pandas as pd

        assert self.records is not None and outcome.best is not None
        folder = self.work_dir / "searches" / self.study_name
        folder.mkdir(parents=True, exist_ok=True)
        best_path = folder / "best-study.yaml"
        storage = redact(self.storage_url or "")
        write_text_atomic(best_path, best_study_yaml(self.spec, outcome.best, self.study_name, storage))
        trials_path = folder / "trials.csv"
        write_text_atomic(trials_path, pd.DataFrame(outcome.trials).to_csv(index=False))
        outcome.outputs = {"best_study": best_path, "trials": trials_path}
        plots, notes = save_plots(self.study, folder, self.spec)
        outcome.outputs.update(plots)
        outcome.notes.extend(notes)
        self.records.log_outputs([best_path, trials_path, *plots.values()], outcome.best)


def search_outputs(
    spec: SearchSpec,
    tracking_uri: str | None,
    work_dir: Path,
    storage: str | None = None,
    study_name: str | None = None,
    use_cache: bool = True,
) -> SearchOutcome:
    """The outcome of a search whose trials ran elsewhere (the ``--engine ray`` workers): the study
    read, its parent run ended FINISHED and the outputs written here; no trial runs."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = SearchStudy(spec, tracking_uri, Path(work_dir).absolute(), storage, study_name)
    search.open()
    assert search.records is not None
    search.records.reopen_parent()
    search.records.end_parent("FINISHED")
    cache = Workspace.for_study(spec.study.cache, work_dir, use_cache=use_cache).cache
    return search.outcome(0, 0.0, cache.stats.summary())
