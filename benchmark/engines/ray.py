"""``--engine ray``: cells on Ray actors that hold their weights and feature caches warm.

:class:`RayEngine` implements :class:`benchmark.engines.base.Engine`: the job (``fssbench run``)
plans, skips, locks and records exactly as with the local engine; this engine only schedules.
Each job goes, as a payload (:meth:`benchmark.engines.base.CellJob.to_payload`), to a
:class:`benchmark.engines.worker.CellWorker` actor, and each answer comes back as a
:class:`~benchmark.engines.base.CellDone` whose artifacts the driver wrote to its work folder.

* **Affinity.** Jobs are grouped by manifest (same images: the feature cache pays off) and the
  groups dealt to the workers' queues, largest first; an idle worker with an empty queue takes a
  job from the longest other queue.
* **Faults.** A worker that dies (its node removed, the process killed) loses only the job in
  hand: the driver starts a replacement (which gets the dead worker's queue once Ray has placed
  it) and runs the job again, at most ``max_attempts`` times. Nothing was recorded for the lost
  attempt (workers never touch MLflow), so each cell has one run. A cell that fails by itself is
  answered failed once and not retried. A driver that dies is restarted by hand: the finished
  cells are skipped, the rest run.
* **Records.** Across machines the tracking URI must be a server (``http://``), so that every
  host reads the same records: a file or SQLite store is refused when the cluster's nodes are on
  more than one host (:func:`cluster`, which ``fssbench search --engine ray`` joins too).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmark.engines.base import CellDone, CellHooks, CellJob
from benchmark.engines.worker import CellWorker
from benchmark.episodes.manifest import Manifest, load_manifest
from benchmark.errors import FssBenchError
from benchmark.io_utils import write_bytes_atomic
from benchmark.workspace import Workspace

SERVER_HINT = (
    "start one with `mlflow server --backend-store-uri postgresql://USER@HOST/mlflow "
    "--artifacts-destination DIR --host 0.0.0.0 --port 5000` (deploy/start-servers.sh does it) and "
    "pass --tracking-uri http://HOST:5000"
)


def is_local_store(tracking_uri: str) -> bool:
    """A store on this host's disk: a SQLite or file URI, or a bare path."""
    return tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri


def check_tracking_for_cluster(tracking_uri: str, hosts: set[str]) -> None:
    """A cluster spanning several hosts needs a shared store (a tracking server or a database): a
    file or SQLite store is refused."""
    if len(hosts) > 1 and is_local_store(tracking_uri):
        raise FssBenchError(
            f"--engine ray: the cluster spans {len(hosts)} hosts ({', '.join(sorted(hosts))}) but the "
            f"tracking URI {tracking_uri} is a local store that the other hosts cannot share; {SERVER_HINT}"
        )


RAY_NOTICE_LOGGERS = ("ray._private.authentication", "ray._private.authentication.authentication_token_setup")
"""Ray's loggers of notices (the token-authentication one) that ``-q`` silences; errors still show."""


def connect(address: str | None, num_cpus: int | None = None, quiet: bool = False) -> bool:
    """Connect to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``; ``None``: start one on
    this machine, loopback only). Returns whether this call started the connection. ``quiet``
    (``-q``): Ray's notices, such as the token-authentication one, are not printed."""
    if address is None:  # read when ray is imported: node and bootstrap addresses on 127.0.0.1
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if quiet:
        import logging

        for name in RAY_NOTICE_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address is None:
        kwargs |= {"num_cpus": num_cpus or os.cpu_count() or 1, "include_dashboard": False}
        kwargs["_node_ip_address"] = "127.0.0.1"
    hint = (
        "start one with `ray start --head` (deploy/slurm-ray.sbatch on Slurm) or drop --ray-address to run "
        "on this machine"
    )
    if address not in (None, "auto") and "://" not in address:
        _probe(address, hint)  # Ray itself retries a dead HOST:PORT for minutes
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError) as e:
        raise FssBenchError(
            f"--ray-address {address}: no Ray cluster there ({str(e).splitlines()[0][:200]}); {hint}"
        ) from None
    return True


def _probe(address: str, hint: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT that answers TCP, or a one-line error (before Ray's long reconnect loop)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise FssBenchError(f"--ray-address {address!r}: expected auto or HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise FssBenchError(
            f"--ray-address {address}: nothing answers there ({e.strerror or e}); {hint}"
        ) from None


def actor_resources(gpus: float | None, cpus: float) -> tuple[dict[str, Any], int]:
    """Ray actor options for workers reserving ``gpus`` GPUs (None: 1 on a cluster with GPUs, else 0)
    and ``cpus`` CPUs, and how many such workers the alive nodes hold (counted node by node: a worker
    never spans nodes). Refused (before any work) when not one fits."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if gpus is None:
        gpus = 1.0 if any(n.get("GPU", 0) >= 1 for n in nodes) else 0.0
    fit = 0
    for n in nodes:
        per_node = int(n.get("CPU", 0) // cpus)
        if gpus > 0:
            per_node = min(per_node, int(n.get("GPU", 0) // gpus))
        fit += per_node
    if fit == 0:
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        raise FssBenchError(
            f"--engine ray: no node of the cluster holds a worker of {cpus:g} CPU and {gpus:g} GPU (the "
            f"largest has {largest.get('CPU', 0):g} CPU and {largest.get('GPU', 0):g} GPU); lower "
            "--cpus-per-cell / --gpus-per-cell (0 GPUs runs on CPUs)"
        )
    opts: dict[str, Any] = {
        "num_cpus": cpus,
        "num_gpus": gpus,
        "max_restarts": 0,  # the driver replaces dead workers itself (and knows what they held)
        "max_task_retries": 0,
    }
    if gpus == 0:  # Ray leaves CUDA_VISIBLE_DEVICES alone for 0 GPUs: hide them, so device auto is the CPU
        opts["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
    return opts, fit


@contextlib.contextmanager
def cluster(address: str | None, tracking_uri: str, quiet: bool = False) -> Iterator[set[str]]:
    """Join (or start, :func:`connect`) the Ray cluster for a job's whole run and refuse a store
    its hosts cannot share, before any store or run exists; yields the alive nodes' hosts. A
    cluster this call started is shut down at the end."""
    import ray

    started = connect(address, quiet=quiet)
    try:
        hosts = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        check_tracking_for_cluster(tracking_uri, hosts)
        yield hosts
    finally:
        if started:
            ray.shutdown()


@dataclass
class _Slot:
    """A worker as the driver sees it: its actor, its queue and what it is doing."""

    actor: Any
    name: str
    queue: collections.deque = field(default_factory=collections.deque)
    ready: bool = False
    where: str = "starting"
    busy: str | None = None  # the key of the job in hand
    since: float = field(default_factory=time.monotonic)


class RayEngine:
    """Runs jobs on Ray actors (module docstring; :class:`~benchmark.engines.base.Engine`).

    ``workers``: actors to start (default: as many as the cluster's resources hold, at most one per
    job). ``gpus_per_cell``: GPUs each actor reserves (None: 1 on a cluster with GPUs, else 0).
    ``cpus_per_cell``: CPUs each reserves (torch threads). ``max_attempts``: runs of a job whose
    worker died before it answered. ``start_timeout_s``: how long the driver waits with no worker
    placed before it fails the remaining jobs. ``on_event``: called with ``(event, detail)`` at
    ``"started"``, ``"lost"`` and ``"answered"`` (tests use it to inject faults). ``attempts``:
    cell key -> runs started, over the engine's life."""

    name = "ray"
    in_process = False

    def __init__(
        self,
        ray_address: str | None = None,
        workers: int | None = None,
        gpus_per_cell: float | None = None,
        cpus_per_cell: float = 1.0,
        max_attempts: int = 3,
        start_timeout_s: float = 600.0,
        on_event: Callable[[str, str], None] | None = None,
        progress: bool = True,
        log: Callable[[str], None] = lambda msg: None,
    ):
        if workers is not None and workers < 1:
            raise FssBenchError(f"--workers must be at least 1, got {workers}")
        if gpus_per_cell is not None and gpus_per_cell < 0:
            raise FssBenchError(f"--gpus-per-cell must be >= 0, got {gpus_per_cell}")
        if cpus_per_cell <= 0:
            raise FssBenchError(f"--cpus-per-cell must be > 0, got {cpus_per_cell}")
        self.ray_address, self.workers, self.max_attempts = ray_address, workers, max_attempts
        self.gpus_per_cell, self.cpus_per_cell = gpus_per_cell, cpus_per_cell
        self.start_timeout_s, self.on_event = start_timeout_s, on_event
        self.progress, self.log = progress, log
        self.attempts: collections.Counter = collections.Counter()
        self.placement: tuple[dict[str, Any], int] | None = None  # actor options, workers that fit

    @classmethod
    def for_study(
        cls, resources: Any, gpus_per_cell: float | None = None, cpus_per_cell: float | None = None, **kw: Any
    ) -> RayEngine:
        """The engine with a study's ``resources`` block (GPUs and CPUs per cell), unless the
        command line says otherwise."""
        gpus = resources.gpus_per_cell if gpus_per_cell is None else gpus_per_cell
        cpus = resources.cpus_per_cell if cpus_per_cell is None else cpus_per_cell
        return cls(gpus_per_cell=gpus, cpus_per_cell=cpus, **kw)

    @contextlib.contextmanager
    def session(self, tracking_uri: str) -> Iterator[None]:
        """The cluster (:func:`cluster`) and the workers' placement, refused before any work."""
        self.attempts = collections.Counter()
        with cluster(self.ray_address, tracking_uri, quiet=not self.progress):
            self.placement = self.actor_options()  # workers that fit no node: refused now
            yield

    def actor_options(self) -> tuple[dict[str, Any], int]:
        opts, fit = actor_resources(self.gpus_per_cell, self.cpus_per_cell)
        return opts | {"scheduling_strategy": "SPREAD"}, fit

    def worker_args(self, workspace: Workspace) -> dict[str, Any]:
        """The driver's workspace settings (each worker rebuilds it), and the worker's own."""
        return workspace.settings() | {
            "threads": max(1, int(self.cpus_per_cell)),
            "deterministic": bool(torch.are_deterministic_algorithms_enabled()),  # --deterministic
        }

    def payload(self, job: CellJob, manifest: Manifest) -> dict[str, Any]:
        """What goes to a worker for ``job`` (its first attempt only starts ``fresh``)."""
        if job.fresh and self.attempts[job.key] > 1:
            job = dataclasses.replace(job, fresh=False)
        return job.to_payload(manifest)

    def run(
        self, jobs: Sequence[CellJob], workspace: Workspace, hooks: CellHooks, desc: str = "cells"
    ) -> Iterator[CellDone]:
        """The jobs on Ray workers (module docstring), answered as they finish."""
        yield from _Scheduler(self, jobs, workspace, f"{desc} (ray)").drive(hooks)

    def event(self, what: str, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(what, detail)


class _Scheduler:
    """One :meth:`RayEngine.run`: the workers, their queues, what is in flight, the progress lines."""

    def __init__(self, engine: RayEngine, jobs: Sequence[CellJob], workspace: Workspace, desc: str):
        import ray

        self.engine, self.workspace = engine, workspace
        self.jobs = {j.key: j for j in jobs}
        self.manifests: dict[Path, Manifest] = {}
        self.opts, fit = engine.placement or engine.actor_options()
        self.n_workers = min(engine.workers or fit, len(self.jobs))
        self.remote = ray.remote(CellWorker).options(**self.opts)
        self.args = engine.worker_args(workspace)
        self.starting: dict[Any, _Slot] = {}  # ready() ref -> slot, while starting
        self.inflight: dict[Any, tuple[str, _Slot]] = {}  # run() ref -> (key, slot)
        self.serial = iter(range(1 << 30))
        self.failed = self.start_failures = 0
        self.workers = [self.start() for _ in range(self.n_workers)]
        self.deal()
        on = engine.progress
        self.bar = tqdm(total=len(self.jobs), desc=desc, unit="cell", disable=not on)
        self.lines = {
            id(w): tqdm(total=0, position=i + 1, bar_format="{desc}", leave=False, disable=not on)
            for i, w in enumerate(self.workers)
        }

    # ------------------------------------------------------------------------------- the workers
    def start(self, queue: collections.deque | None = None) -> _Slot:
        slot = _Slot(self.remote.remote(**self.args), f"worker {next(self.serial)}")
        if queue:
            slot.queue = queue
        self.starting[slot.actor.where.remote()] = slot
        return slot

    def deal(self) -> None:
        """Jobs grouped by manifest, the largest group to the shortest queue."""
        groups: dict[Path, list[str]] = {}
        for key, job in self.jobs.items():
            groups.setdefault(job.spec.manifest_path, []).append(key)
        for keys in sorted(groups.values(), key=len, reverse=True):
            min(self.workers, key=lambda w: len(w.queue)).queue.extend(keys)

    def replace(self, w: _Slot, why: str) -> None:
        import ray

        self.workers.remove(w)
        self.show(w, f"lost ({why})")
        with contextlib.suppress(Exception):
            ray.kill(w.actor, no_restart=True)
        self.workers.append(self.start(w.queue))

    def next_key(self, w: _Slot) -> str | None:
        """The worker's next job: its own queue first, else the end of the longest other queue."""
        if w.queue:
            return w.queue.popleft()
        donor = max((o for o in self.workers if o is not w), key=lambda o: len(o.queue), default=None)
        return donor.queue.pop() if donor is not None and donor.queue else None

    def show(self, w: _Slot, text: str) -> None:
        line = self.lines.get(id(w))
        if line is None and self.engine.progress:
            line = self.lines[id(w)] = tqdm(
                total=0, position=len(self.lines) + 1, bar_format="{desc}", leave=False
            )
        if line is not None:
            line.set_description_str(f"  {w.name} [{w.where}]: {text}")

    def refresh(self) -> None:
        self.bar.set_postfix_str(f"running {len(self.inflight)}, failed {self.failed}")

    # ------------------------------------------------------------------------------------- drive
    def drive(self, hooks: CellHooks) -> Iterator[CellDone]:
        """Dispatch, wait, answer, until every job is answered (or no worker can be placed)."""
        import ray

        waiting_since = time.monotonic()
        try:
            while self.inflight or any(w.queue for w in self.workers):
                self.dispatch(hooks)
                self.refresh()
                if not self.inflight and not any(w.ready for w in self.workers):
                    if time.monotonic() - waiting_since > self.engine.start_timeout_s:
                        yield from self.fail_unplaced()
                        return
                else:
                    waiting_since = time.monotonic()
                ready, _ = ray.wait([*self.inflight, *self.starting], num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref in self.starting:
                        self.started(ref)
                        continue
                    answered = self.answer(ref)
                    if answered is None:  # lost with its worker: queued again
                        continue
                    done, by_worker = answered
                    yield done
                    if by_worker:
                        self.engine.event("answered", done.job.name)
                    self.bar.update()
                    self.refresh()
        finally:
            self.close()

    def dispatch(self, hooks: CellHooks) -> None:
        """A job to every idle worker; a job's first attempt only if the hooks still want it."""
        attempts = self.engine.attempts
        for w in self.workers:
            if not w.ready or w.busy is not None:
                continue
            key = self.next_key(w)
            if key is None:
                continue
            job = self.jobs[key]
            if attempts[key] == 0 and not hooks.claim(job):
                self.bar.update()  # finished by another process since the plan: not run again
                continue
            attempts[key] += 1
            ref = w.actor.run.remote(self.engine.payload(job, self.manifest(job)))
            self.inflight[ref], w.busy = (key, w), key
            self.show(w, job.name + (f" (attempt {attempts[key]})" if attempts[key] > 1 else ""))

    def manifest(self, job: CellJob) -> Manifest:
        path = job.spec.manifest_path
        if path not in self.manifests:
            self.manifests[path] = load_manifest(path)
        return self.manifests[path]

    def started(self, ref: Any) -> None:
        """A worker placed (or dead before it could start)."""
        import ray
        from ray.exceptions import RayActorError

        w = self.starting.pop(ref)
        try:
            w.where, w.ready = ray.get(ref), True
            self.show(w, "idle")
            self.engine.event("started", w.where)
            self.start_failures = 0
        except RayActorError as e:
            self.start_failures += 1
            if self.start_failures > 2 * self.n_workers:  # workers that cannot start at all
                raise FssBenchError(
                    f"--engine ray: {self.start_failures} workers in a row died while starting; "
                    f"the last: {str(e).splitlines()[0][:300]}"
                ) from None
            if w in self.workers:
                self.replace(w, "died while starting")

    def answer(self, ref: Any) -> tuple[CellDone, bool] | None:
        """The answer behind ``ref`` and whether a worker gave it (not: the job's workers all
        died); None when the job was lost and queued again."""
        import ray
        from ray.exceptions import RayError, RayTaskError

        key, w = self.inflight.pop(ref)
        w.busy = None
        job = self.jobs[key]
        try:
            raw = ray.get(ref)
        except RayTaskError as e:  # raised by the worker's own code: deterministic
            error = f"worker error: {str(e).splitlines()[0][:500]}"
            raw = {"ok": False, "error": error, "traceback": str(e), "worker": w.where}
        except RayError as e:  # the worker (or its answer) is gone: the job is lost, not failed
            return self.lost(w, job, e)
        self.show(w, "idle")
        done = self.received(job, raw)
        self.failed += not done.ok
        return done, True

    def lost(self, w: _Slot, job: CellJob, e: Exception) -> tuple[CellDone, bool] | None:
        self.engine.event("lost", job.name)
        self.engine.log(f"worker {w.where} died during {job.name} ({type(e).__name__}); rerunning it")
        if w in self.workers:
            self.replace(w, type(e).__name__)
        n = self.engine.attempts[job.key]
        if n < self.engine.max_attempts:
            self.workers[-1].queue.appendleft(job.key)
            return None
        self.failed += 1
        return CellDone.failed(job, f"its worker died {n} times (last: {type(e).__name__})"), False

    def received(self, job: CellJob, raw: dict[str, Any]) -> CellDone:
        """A worker's answer, its artifacts written under the driver's work folder."""
        if not raw["ok"]:
            return CellDone.failed(job, raw["error"], raw.get("traceback", ""), raw.get("worker", ""))
        folder = self.workspace.received_artifacts_dir(job.key)
        artifacts = []
        try:
            for name, artifact_path, data in raw["artifacts"]:
                path = folder / (artifact_path or "") / name
                write_bytes_atomic(path, data)
                artifacts.append((path, artifact_path))
        except OSError as e:
            return CellDone.failed(
                job, f"logging the result failed ({type(e).__name__}: {e})", "", raw["worker"]
            )
        stats = raw["stats"] | {"attempts": self.engine.attempts[job.key]}
        return CellDone(
            job,
            True,
            raw["metrics"],
            raw["summary"],
            artifacts,
            raw["peak_mem_kind"],
            stats,
            worker=raw["worker"],
        )

    def fail_unplaced(self) -> Iterator[CellDone]:
        """Every queued job failed: no worker could be placed in time."""
        import ray

        text = (
            f"no Ray worker could be placed for {self.engine.start_timeout_s:g} s (each needs "
            f"{self.opts['num_cpus']:g} CPU and {self.opts['num_gpus']:g} GPU; the cluster has "
            f"{ray.available_resources()} free)"
        )
        for w in self.workers:
            while w.queue:
                self.failed += 1
                yield CellDone.failed(self.jobs[w.queue.popleft()], text)
        self.bar.update(self.bar.total - self.bar.n)
        self.refresh()

    def close(self) -> None:
        import ray

        for w in self.workers:
            with contextlib.suppress(Exception):
                ray.kill(w.actor, no_restart=True)
        for line in self.lines.values():
            line.close()
        self.bar.close()
