"""``fssbench run STUDY --engine ray``: a study's cells on a Ray cluster, logged by the driver.

Everything but the scheduling is :class:`benchmark.runner.StudyRunner`'s: the driver builds and
checks the manifests, asks MLflow which cells are finished (the cell key) and opens the parent run;
:meth:`RayStudyRunner.execute` then hands the unfinished cells to Ray actors
(:class:`benchmark.engines.cell_worker.CellWorker`), which hold their weights and feature caches
warm across cells, and records each answer as the cell's MLflow child run with
:mod:`benchmark.records.cells`, as the local engine does.

* **Affinity.** Cells are grouped by manifest (same images: the feature cache pays off) and the
  groups dealt to the workers' queues, largest first; an idle worker with an empty queue takes a
  cell from the longest other queue.
* **Faults.** A worker that dies (its node removed, the process killed) loses only the cell in
  hand: the driver starts a replacement (which gets the dead worker's queue once Ray has placed
  it) and runs the cell again, at most ``max_attempts`` times. Nothing was logged for the lost
  attempt (workers never touch MLflow), so each cell has one run. A cell that fails by itself is
  logged FAILED once and not retried. A driver that dies is restarted by hand: the finished cells
  are skipped, the rest run.
* **Records.** Across machines the tracking URI must be a server (``http://``), so that every
  host reads the same records: a file or SQLite store is refused when the cluster's nodes are on
  more than one host.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmark.engines.cell_worker import CellWorker, cell_payload
from benchmark.errors import FssBenchError
from benchmark.io_utils import write_bytes_atomic
from benchmark.plan import Cell
from benchmark.records.cells import CellOutcome
from benchmark.runner import StudyRunner

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


@dataclass
class _Slot:
    """A worker as the driver sees it: its actor, its queue and what it is doing."""

    actor: Any
    name: str
    queue: collections.deque = field(default_factory=collections.deque)
    ready: bool = False
    where: str = "starting"
    busy: str | None = None  # the cell in hand
    since: float = field(default_factory=time.monotonic)


class RayStudyRunner(StudyRunner):
    """:class:`StudyRunner` whose cells run on Ray actors (module docstring).

    ``workers``: actors to start (default: as many as the cluster's resources hold, at most one per
    cell). ``gpus_per_cell``: GPUs each actor reserves (default: the study's ``resources``; null
    there: 1 on a cluster with GPUs, else 0). ``cpus_per_cell``: CPUs each reserves (torch threads;
    default: the study's, 1). ``max_attempts``: runs of a cell whose
    worker died before it answered. ``start_timeout_s``: how long the driver waits with no worker
    placed before it fails the remaining cells. ``on_event``: called with ``(event, detail)`` at
    ``"started"``, ``"lost"`` and ``"answered"`` (tests use it to inject faults)."""

    def __init__(
        self,
        *args: Any,
        ray_address: str | None = None,
        workers: int | None = None,
        gpus_per_cell: float | None = None,
        cpus_per_cell: float | None = None,
        max_attempts: int = 3,
        start_timeout_s: float = 600.0,
        on_event: Any = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        res = self.study.resources  # the study's, unless the command line says otherwise
        gpus_per_cell = res.gpus_per_cell if gpus_per_cell is None else gpus_per_cell
        cpus_per_cell = res.cpus_per_cell if cpus_per_cell is None else cpus_per_cell
        if workers is not None and workers < 1:
            raise FssBenchError(f"--workers must be at least 1, got {workers}")
        if gpus_per_cell is not None and gpus_per_cell < 0:
            raise FssBenchError(f"--gpus-per-cell must be >= 0, got {gpus_per_cell}")
        if cpus_per_cell <= 0:
            raise FssBenchError(f"--cpus-per-cell must be > 0, got {cpus_per_cell}")
        self.ray_address, self.workers, self.max_attempts = ray_address, workers, max_attempts
        self.gpus_per_cell, self.cpus_per_cell = gpus_per_cell, cpus_per_cell
        self.start_timeout_s, self.on_event = start_timeout_s, on_event
        self.attempts: collections.Counter = collections.Counter()
        self._placement: tuple[dict[str, Any], int] | None = None  # actor options, workers that fit

    # ------------------------------------------------------------------------------ the cluster
    def _actor_options(self) -> tuple[dict[str, Any], int]:
        opts, fit = actor_resources(self.gpus_per_cell, self.cpus_per_cell)
        return opts | {"scheduling_strategy": "SPREAD"}, fit

    def _worker_args(self) -> dict[str, Any]:
        """The driver's workspace settings (each worker rebuilds it), and the worker's own."""
        return self.workspace.settings() | {
            "qualitative": self.qualitative,
            "threads": max(1, int(self.cpus_per_cell)),
            "deterministic": bool(torch.are_deterministic_algorithms_enabled()),  # --deterministic
        }

    # ----------------------------------------------------------------------------------- execute
    def run(self):  # type: ignore[override]
        """Join (or start) the cluster and refuse a store the hosts cannot share, before any store,
        run or model exists; then the local engine's run with :meth:`execute` on Ray."""
        import ray

        from benchmark.records.tracking import default_tracking_uri

        self.attempts = collections.Counter()
        started = connect(self.ray_address, quiet=not self.progress)
        try:
            hosts = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
            check_tracking_for_cluster(self.tracking_uri or default_tracking_uri(), hosts)
            self._placement = self._actor_options()  # workers that fit no node: refused now
            return super().run()
        finally:
            if started:
                ray.shutdown()

    def preflight(self, todo: list[Cell], keys: dict[str, tuple[str, dict[str, str]]]) -> None:
        """The local engine's strict weight check, on the CPU, and nothing kept: the workers load
        their own weights, and the driver's GPU (if any) is theirs."""
        import dataclasses

        on_cpu = [dataclasses.replace(c, spec=dataclasses.replace(c.spec, device="cpu")) for c in todo]
        super().preflight(on_cpu, keys)
        self.workspace.drop_weights()

    def execute(
        self, exp: str, parent: str, todo: list[Cell], keys: dict[str, tuple[str, dict[str, str]]]
    ) -> None:
        """The unfinished cells on Ray workers (module docstring), logged here as they answer."""
        import ray
        from ray.exceptions import RayActorError, RayError, RayTaskError

        twins: dict[str, list[Cell]] = {}  # cell key -> its cells (variants that resolve alike)
        for c in todo:
            twins.setdefault(keys[c.name][0], []).append(c)
        opts, fit = self._placement or self._actor_options()
        n_workers = min(self.workers or fit, len(twins))
        remote = ray.remote(CellWorker).options(**opts)
        args = self._worker_args()
        slots: dict[Any, _Slot] = {}  # ready() ref -> slot, while starting
        serial = iter(range(1 << 30))

        def start(queue: collections.deque | None = None) -> _Slot:
            slot = _Slot(remote.remote(**args), f"worker {next(serial)}")
            if queue:
                slot.queue = queue
            slots[slot.actor.where.remote()] = slot
            return slot

        workers = [start() for _ in range(n_workers)]
        groups: dict[Path, list[str]] = {}
        for key, cells in twins.items():
            groups.setdefault(cells[0].spec.manifest_path, []).append(key)
        for ks in sorted(groups.values(), key=len, reverse=True):  # largest group to the shortest queue
            min(workers, key=lambda w: len(w.queue)).queue.extend(ks)

        inflight: dict[Any, tuple[str, _Slot]] = {}
        failed = 0
        bar = tqdm(
            total=len(twins), desc=f"study {self.study.name} (ray)", unit="cell", disable=not self.progress
        )
        lines = {
            id(w): tqdm(total=0, position=i + 1, bar_format="{desc}", leave=False, disable=not self.progress)
            for i, w in enumerate(workers)
        }

        def show(w: _Slot, text: str) -> None:
            line = lines.get(id(w))
            if line is None and self.progress:
                line = lines[id(w)] = tqdm(total=0, position=len(lines) + 1, bar_format="{desc}", leave=False)
            if line is not None:
                line.set_description_str(f"  {w.name} [{w.where}]: {text}")

        def refresh() -> None:
            bar.set_postfix_str(f"running {len(inflight)}, failed {failed}")

        def replace(w: _Slot, why: str) -> None:
            workers.remove(w)
            show(w, f"lost ({why})")
            with contextlib.suppress(Exception):
                ray.kill(w.actor, no_restart=True)
            workers.append(start(w.queue))

        def next_key(w: _Slot) -> str | None:
            if w.queue:
                return w.queue.popleft()
            donor = max((o for o in workers if o is not w), key=lambda o: len(o.queue), default=None)
            return donor.queue.pop() if donor is not None and donor.queue else None

        waiting_since = time.monotonic()
        start_failures = 0
        try:
            while inflight or any(w.queue for w in workers):
                for w in workers:
                    if w.ready and w.busy is None:
                        key = next_key(w)
                        if key is None:
                            continue
                        cell = twins[key][0]
                        if self.attempts[key] == 0 and self._finished_elsewhere(exp, key, twins[key]):
                            bar.update()  # finished by another process since the plan: not run again
                            continue
                        self.attempts[key] += 1
                        manifest = self.manifest(cell.spec.manifest_path)
                        payload = cell_payload(cell.name, key, cell.spec, manifest, keys[cell.name][1])
                        payload["fresh"] = self.force and self.attempts[key] == 1  # --force: no resume
                        ref = w.actor.run.remote(payload)
                        inflight[ref], w.busy = (key, w), key
                        show(
                            w,
                            cell.name
                            + (f" (attempt {self.attempts[key]})" if self.attempts[key] > 1 else ""),
                        )
                refresh()
                if not inflight and not any(w.ready for w in workers):
                    if time.monotonic() - waiting_since > self.start_timeout_s:
                        failed += self._fail_unplaced(exp, parent, twins, keys, workers, opts)
                        bar.update(bar.total - bar.n)
                        refresh()
                        return
                else:
                    waiting_since = time.monotonic()
                ready, _ = ray.wait([*inflight, *slots], num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref in slots:
                        w = slots.pop(ref)
                        try:
                            w.where, w.ready = ray.get(ref), True
                            show(w, "idle")
                            self._event("started", w.where)
                            start_failures = 0
                        except RayActorError as e:
                            start_failures += 1
                            if start_failures > 2 * n_workers:  # workers that cannot start at all
                                raise FssBenchError(
                                    f"--engine ray: {start_failures} workers in a row died while starting; "
                                    f"the last: {str(e).splitlines()[0][:300]}"
                                ) from None
                            if w in workers:
                                replace(w, "died while starting")
                        continue
                    key, w = inflight.pop(ref)
                    w.busy = None
                    try:
                        answer = ray.get(ref)
                    except RayTaskError as e:  # raised by the worker's own code: deterministic
                        answer = {
                            "ok": False,
                            "error": f"worker error: {str(e).splitlines()[0][:500]}",
                            "traceback": str(e),
                        }
                    except RayError as e:  # the worker (or its answer) is gone: the cell is lost, not failed
                        self._event("lost", twins[key][0].name)
                        self.log(
                            f"worker {w.where} died during {twins[key][0].name} ({type(e).__name__}); rerunning it"
                        )
                        if w in workers:
                            replace(w, type(e).__name__)
                        if self.attempts[key] < self.max_attempts:
                            workers[-1].queue.appendleft(key)
                        else:
                            text = f"its worker died {self.attempts[key]} times (last: {type(e).__name__})"
                            self._record_failed(exp, parent, twins[key], keys, text, "")
                            failed += 1
                            bar.update()
                        continue
                    show(w, "idle")
                    if answer["ok"]:
                        if not self._record_answer(exp, parent, twins[key], keys, answer):
                            failed += 1  # logging failed: recorded as a failure, rerun next time
                    else:
                        self._record_failed(
                            exp, parent, twins[key], keys, answer["error"], answer["traceback"]
                        )
                        failed += 1
                        if self.fail_fast:
                            raise FssBenchError(
                                f"{twins[key][0].name} failed (--fail-fast): {answer['error'].splitlines()[0]}"
                            )
                    self._event("answered", twins[key][0].name)
                    bar.update()
                    refresh()
        finally:
            for w in workers:
                with contextlib.suppress(Exception):
                    ray.kill(w.actor, no_restart=True)
            for line in lines.values():
                line.close()
            bar.close()

    def _event(self, what: str, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(what, detail)

    # ------------------------------------------------------------------------------------ records
    def _finished_elsewhere(self, exp: str, key: str, cells: list[Cell]) -> bool:
        """Whether another process finished the cell since the plan (then skipped rows for it)."""
        if self.force:
            return False
        assert self.tracker is not None
        run = self.tracker.finished_cell(exp, key)
        if run is None:
            return False
        for c in cells:
            self.table.skipped(c, key, run, "skipped (done by another process)")
        return True

    def _clear_for_force(self, key: str) -> None:
        """--force: the cell's earlier runs go, finished ones included, once per invocation."""
        if self.force and key not in self._ran:
            assert self.records is not None
            self.records.delete_runs(key)

    def _record_answer(
        self,
        exp: str,
        parent: str,
        cells: list[Cell],
        keys: dict[str, tuple[str, dict[str, str]]],
        answer: dict[str, Any],
    ) -> bool:
        """Record a worker's result as the cell's run (:mod:`benchmark.records.cells`), under the
        cell's lock (unless another process finished it meanwhile); twin variants get skipped rows
        pointing at it. A logging error marks the run FAILED and the cell failed (False): nothing is
        left half-logged or RUNNING."""
        records = self.records
        assert records is not None
        first = cells[0]
        key, weights = keys[first.name]
        with self.cell_lock(key):
            if not self.force and self._finished_elsewhere(exp, key, cells):
                return True
            folder = self.workspace.received_artifacts_dir(key)
            rid = None
            try:
                artifacts = []
                for name, artifact_path, data in answer["artifacts"]:
                    path = folder / (artifact_path or "") / name
                    write_bytes_atomic(path, data)
                    artifacts.append((path, artifact_path))
                self._clear_for_force(key)
                rid = records.open(first, key, weights, {"fss.engine": "ray", "fss.worker": answer["worker"]})
                records.record(
                    rid, CellOutcome.finished(answer["metrics"], artifacts, answer["peak_mem_kind"])
                )
            except KeyboardInterrupt:
                if rid is not None:
                    with contextlib.suppress(Exception):
                        records.record(
                            rid,
                            CellOutcome.failed(
                                "interrupted while logging; rerun to run it again", status="KILLED"
                            ),
                        )
                raise
            except Exception as e:
                text = f"logging the result failed ({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})"
                if rid is not None:
                    with contextlib.suppress(Exception):
                        records.record(rid, CellOutcome.failed(text))
                self._failed_rows(cells, key, rid, text)
                return False
            self._ran.add(key)
        self.table.ran(first, key, rid, answer["summary"], **answer["row"], attempts=self.attempts[key])
        run = records.tracker.client.get_run(rid)
        for c in cells[1:]:
            self.table.skipped(c, key, run)
        return True

    def _record_failed(
        self,
        exp: str,
        parent: str,
        cells: list[Cell],
        keys: dict[str, tuple[str, dict[str, str]]],
        text: str,
        tb: str,
    ) -> None:
        """A FAILED run with the error (once, under the cell's lock), and a failed row for every twin."""
        records = self.records
        assert records is not None
        key, weights = keys[cells[0].name]
        rid = None
        with self.cell_lock(key):
            try:
                self._clear_for_force(key)
                rid = records.record_failure(
                    cells[0], key, weights, text + ("\n" + tb if tb else ""), {"fss.engine": "ray"}
                )
            except Exception as e:  # the store is failing too: the failure stays in the results
                self.log(f"could not record the failure of {cells[0].name} in MLflow ({type(e).__name__})")
            self._ran.add(key)
        self._failed_rows(cells, key, rid, text)

    def _failed_rows(self, cells: list[Cell], key: str, rid: str | None, text: str) -> None:
        """One failure (as the local engine counts it) and a failed row for each twin variant."""
        self.record_failure(cells[0], key, rid, text)
        for c in cells[1:]:
            self.table.failed(c, key, rid, text)

    def _fail_unplaced(self, exp, parent, twins, keys, workers, opts) -> int:
        import ray

        text = (
            f"no Ray worker could be placed for {self.start_timeout_s:g} s (each needs {opts['num_cpus']:g} CPU "
            f"and {opts['num_gpus']:g} GPU; the cluster has {ray.available_resources()} free)"
        )
        n = 0
        for w in workers:
            while w.queue:
                self._record_failed(exp, parent, twins[w.queue.popleft()], keys, text, "")
                n += 1
        return n
