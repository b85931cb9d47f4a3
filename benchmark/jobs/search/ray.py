"""``fssbench search SEARCH --engine ray --workers N``: N Optuna workers as Ray actors, one study.

Each actor is a :class:`benchmark.jobs.search.runner.SearchRunner`, exactly what a second
``fssbench search`` process on the same storage is: the first to arrive creates the Optuna study
and the MLflow parent run, the others load them; every trial runs its cells through the local
engine in the actor; Optuna's ``MaxTrialsCallback`` stops them all at the requested number of
finished trials; heartbeats mark a dead worker's trial failed and a live worker runs it again.
The driver joins the cluster as ``fssbench run --engine ray`` does
(:func:`benchmark.engines.ray.cluster`, :func:`~benchmark.engines.ray.actor_resources`), starts
the actors, shows one bar of finished trials, replaces a worker that dies (at most
``max_restarts`` times) and finally reads the outcome from the study and writes the outputs
(:func:`benchmark.jobs.search.study.search_outputs`: no trial runs on the driver).

Across hosts, the storage must be a database server (PostgreSQL, MySQL) and the tracking URI an
MLflow server: a SQLite or journal file is refused there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmark.engines.ray import actor_resources, cluster
from benchmark.errors import USER_ERRORS, FssBenchError
from benchmark.jobs.search.outputs import SearchOutcome
from benchmark.jobs.search.runner import SearchRunner
from benchmark.jobs.search.storage import default_storage, open_storage, redact
from benchmark.jobs.search.study import search_outputs
from benchmark.records.tracking import default_tracking_uri
from benchmark.specs.search import SearchSpec


class SearchWorker:
    """One Optuna worker: a quiet :class:`SearchRunner` that runs until the study has its trials."""

    def __init__(self, spec: SearchSpec, kwargs: dict[str, Any]):
        self.runner = SearchRunner(spec, progress=False, log=lambda msg: None, **kwargs)

    def run(self) -> dict[str, Any]:
        outcome = self.runner.run()
        return {"failures": outcome.failures}


def check_storage_for_cluster(storage: str, hosts: set[str]) -> None:
    """Several hosts share one Optuna study only through a database server."""
    if len(hosts) > 1 and storage.startswith(("sqlite:", "journal:")):
        raise FssBenchError(
            f"--engine ray: the cluster spans {len(hosts)} hosts but the Optuna storage {redact(storage)} is a "
            "file on one of them; pass --storage postgresql://USER:PASSWORD@HOST/optuna (deploy/start-servers.sh "
            "starts PostgreSQL)"
        )


def run_search_on_ray(
    spec: SearchSpec,
    workers: int,
    ray_address: str | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1.0,
    max_restarts: int = 3,
    progress: bool = True,
    log: Callable[[str], None] = print,
    **kwargs: Any,
) -> SearchOutcome:
    """Run the search with ``workers`` Ray actors sharing one Optuna study (module docstring);
    ``kwargs`` are :class:`SearchRunner`'s (tracking_uri, work_dir, storage, trials, ...)."""
    if workers < 1:
        raise FssBenchError(f"--workers must be at least 1, got {workers}")
    kwargs["tracking_uri"] = kwargs.get("tracking_uri") or default_tracking_uri()
    kwargs["work_dir"] = Path(kwargs.get("work_dir") or "fssbench-runs").absolute()
    kwargs["storage"] = kwargs.get("storage") or default_storage(kwargs["tracking_uri"])
    with cluster(ray_address, kwargs["tracking_uri"], quiet=not progress) as hosts:
        check_storage_for_cluster(kwargs["storage"], hosts)
        opts, _ = actor_resources(gpus_per_worker, cpus_per_worker)
        pool = _SearchWorkers(spec, kwargs, opts, max_restarts, log)
        t0 = time.perf_counter()
        failures = pool.drive(workers, progress)
        keep = ("tracking_uri", "work_dir", "storage", "study_name", "use_cache")
        outcome = search_outputs(spec, **{k: kwargs.get(k) for k in keep if k in kwargs})
        finished = pool.watch.finished()
        if finished < pool.trials:
            log(f"the study has {finished} of {pool.trials} finished trials; rerun the same command to go on")
        ran_here = pool.watch.count() - pool.before
        return dataclasses.replace(
            outcome, ran_here=ran_here, seconds=time.perf_counter() - t0, failures=failures
        )


class _SearchWorkers:
    """The search's actors on Ray: started, watched (one bar of the study's finished trials) and
    replaced when one dies."""

    def __init__(
        self, spec: SearchSpec, kwargs: dict[str, Any], opts: dict[str, Any], max_restarts: int, log: Callable
    ):
        import ray

        self.spec, self.kwargs, self.max_restarts, self.log = spec, kwargs, max_restarts, log
        self.remote = ray.remote(SearchWorker).options(**opts)
        self.trials = kwargs.get("trials") or spec.trials
        self.watch = _TrialCount(kwargs["storage"], kwargs.get("study_name") or spec.name)
        self.before = self.watch.count()
        self.calls: dict[Any, Any] = {}  # run() ref -> actor
        self.restarts = 0

    def start(self) -> None:
        actor = self.remote.remote(self.spec, self.kwargs)
        self.calls[actor.run.remote()] = actor

    def drive(self, workers: int, progress: bool) -> int:
        """Until every worker is done; returns the failures in a row that stopped one (0: none)."""
        import ray

        for _ in range(workers):
            self.start()
        desc = f"search {self.spec.name} (ray, {workers} workers)"
        bar = tqdm(total=self.trials, desc=desc, unit="trial", disable=not progress)
        failures = 0
        try:
            while self.calls:
                ready, _ = ray.wait(list(self.calls), num_returns=1, timeout=1.0)
                bar.n = min(self.trials, self.watch.finished())
                bar.refresh()
                for ref in ready:
                    failures = max(failures, self.answered(ref))
        finally:
            bar.close()
            for actor in self.calls.values():
                ray.kill(actor, no_restart=True)
        return failures

    def answered(self, ref: Any) -> int:
        """A worker that returned (its failures in a row), failed (raised here) or died (replaced)."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        actor = self.calls.pop(ref)
        try:
            return ray.get(ref)["failures"]
        except RayTaskError as e:  # the search itself failed (bad storage, study mismatch)
            cause = getattr(e, "cause", None)
            if isinstance(cause, USER_ERRORS):
                raise FssBenchError(f"a search worker stopped: {cause}") from None
            raise
        except RayActorError as e:
            if self.restarts >= self.max_restarts:
                self.log(f"a search worker died ({type(e).__name__}); {self.max_restarts} replaced already")
                return 0
            self.restarts += 1
            self.log(f"a search worker died ({type(e).__name__}); starting another")
            self.start()
            return 0
        finally:
            ray.kill(actor, no_restart=True)


class _TrialCount:
    """Finished (complete or pruned) trials of the study so far, for the driver's bar (0 before the
    first worker creates the study); the storage is opened once."""

    def __init__(self, storage: str, study_name: str):
        self.url, self.name, self.storage = storage, study_name, None

    def finished(self) -> int:
        from optuna.trial import TrialState

        return self.count((TrialState.COMPLETE, TrialState.PRUNED))

    def count(self, states: tuple | None = None) -> int:
        """Trials of the study in ``states`` (all: None)."""
        import optuna

        try:
            if self.storage is None:
                self.storage = open_storage(self.url)
            study = optuna.load_study(study_name=self.name, storage=self.storage)
        except Exception:  # not created yet
            return 0
        return len(study.get_trials(deepcopy=False, states=states))
