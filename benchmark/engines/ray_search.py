"""``fssbench search SEARCH --engine ray --workers N``: N Optuna workers as Ray actors, one study.

Each actor is a :class:`benchmark.search.SearchRunner`, exactly what a second ``fssbench search``
process on the same storage is: the first to arrive creates the Optuna study and the MLflow
parent run, the others load them; every trial runs the shared cell function; Optuna's
``MaxTrialsCallback`` stops them all at the requested number of finished trials; heartbeats mark
a dead worker's trial failed and a live worker runs it again. The driver only starts the actors,
shows one bar of finished trials, replaces a worker that dies (at most ``max_restarts`` times) and
finally reads the outcome from the study (what a resumed, already finished search prints).

Across hosts, the storage must be a database server (PostgreSQL, MySQL) and the tracking URI an
MLflow server: a SQLite or journal file is refused there.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmark.engines.ray_study import actor_resources, check_tracking_for_cluster, connect
from benchmark.errors import USER_ERRORS, FssBenchError
from benchmark.records.tracking import default_tracking_uri
from benchmark.search import SearchOutcome, SearchRunner, default_storage, open_storage, redact
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
    log: Any = print,
    **kwargs: Any,
) -> SearchOutcome:
    """Run the search with ``workers`` Ray actors sharing one Optuna study (module docstring);
    ``kwargs`` are :class:`SearchRunner`'s (tracking_uri, work_dir, storage, trials, ...)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    if workers < 1:
        raise FssBenchError(f"--workers must be at least 1, got {workers}")
    kwargs["tracking_uri"] = kwargs.get("tracking_uri") or default_tracking_uri()
    kwargs["work_dir"] = Path(kwargs.get("work_dir") or "fssbench-runs").absolute()
    kwargs["storage"] = kwargs.get("storage") or default_storage(kwargs["tracking_uri"])
    started = connect(ray_address, quiet=not progress)
    try:
        hosts = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        check_tracking_for_cluster(kwargs["tracking_uri"], hosts)
        check_storage_for_cluster(kwargs["storage"], hosts)
        opts, _ = actor_resources(gpus_per_worker, cpus_per_worker)
        remote = ray.remote(SearchWorker).options(**opts)
        t0 = time.perf_counter()
        calls = {}
        for _ in range(workers):
            actor = remote.remote(spec, kwargs)
            calls[actor.run.remote()] = actor
        trials = kwargs.get("trials") or spec.trials
        bar = tqdm(
            total=trials,
            desc=f"search {spec.name} (ray, {workers} workers)",
            unit="trial",
            disable=not progress,
        )
        restarts, failures = 0, 0
        watch = _TrialCount(kwargs["storage"], kwargs.get("study_name") or spec.name)
        before = watch.count()
        try:
            while calls:
                ready, _ = ray.wait(list(calls), num_returns=1, timeout=1.0)
                bar.n = min(trials, watch.finished())
                bar.refresh()
                for ref in ready:
                    actor = calls.pop(ref)
                    try:
                        failures = max(failures, ray.get(ref)["failures"])
                    except RayTaskError as e:  # the search itself failed (bad storage, study mismatch)
                        cause = getattr(e, "cause", None)
                        if isinstance(cause, USER_ERRORS):
                            raise FssBenchError(f"a search worker stopped: {cause}") from None
                        raise
                    except RayActorError as e:
                        if restarts >= max_restarts:
                            log(f"a search worker died ({type(e).__name__}); {max_restarts} replaced already")
                            continue
                        restarts += 1
                        log(f"a search worker died ({type(e).__name__}); starting another")
                        new = remote.remote(spec, kwargs)
                        calls[new.run.remote()] = new
                    finally:
                        ray.kill(actor, no_restart=True)
        finally:
            bar.close()
            for actor in calls.values():
                ray.kill(actor, no_restart=True)
        # the outcome, read from the study (and its outputs written) here: no trial runs on the driver
        final = SearchRunner(spec, progress=False, log=lambda msg: None, **kwargs)
        final.run_trials = False
        outcome = final.run()
        finished = watch.finished()
        if finished < trials:
            log(f"the study has {finished} of {trials} finished trials; rerun the same command to go on")
        out = dataclasses.replace(outcome, ran_here=watch.count() - before, seconds=time.perf_counter() - t0)
        out.failures = failures
        return out
    finally:
        if started:
            ray.shutdown()


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
