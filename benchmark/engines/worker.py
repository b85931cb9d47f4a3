"""What a remote worker does with one cell: the shared cell function, and an answer the driver records.

:class:`CellWorker` holds what makes the next cell cheap (built weights, the in-memory feature
cache, the shared episode stages) for as long as it lives. It never touches MLflow: the driver
records every result, so a worker that dies mid-cell leaves no run at all, and a cell retried on
another worker is recorded once. :meth:`CellWorker.run` turns every error of the cell into a
``failed`` answer (a deterministic failure, never retried); only the death of the process
reaches the driver as an error of the engine.

The payload (:meth:`benchmark.engines.base.CellJob.to_payload`) carries the job with its
serialized :class:`~benchmark.evaluation.cell.CellSpec` and the manifest itself, so nodes need no
shared work folder; the data roots must exist at the same path on every node.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import torch

from benchmark.device import resolve_device
from benchmark.engines.base import CellJob
from benchmark.engines.local import answer_of, describe_failure, evaluate_job
from benchmark.episodes.manifest import Manifest, save_manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.cell import cell_key
from benchmark.workspace import Workspace


class CellWorker:
    """Runs cells one after the other in this process, keeping weights and features warm.

    ``work_dir``: this node's folder for manifests, episode journals and artifacts (the driver's
    path by default: on one machine, or a shared file system, a retried cell resumes from its
    journal). ``cache_dir``: the feature cache's disk folder (``None``: memory only); a folder on a
    shared file system serves every node. ``threads``: torch's CPU threads (the CPUs the worker
    was given)."""

    def __init__(
        self,
        work_dir: str,
        cache_dir: str | None,
        use_cache: bool = True,
        memory_cache_bytes: int = 2 << 30,
        cache_max_bytes: int | None = None,
        stages_bytes: int = 0,
        threads: int | None = None,
        deterministic: bool = False,
    ):
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        if deterministic:
            from benchmark.device import set_deterministic

            set_deterministic()
        self.workspace = Workspace(
            work_dir,
            cache_dir=cache_dir or None,
            use_cache=use_cache,
            memory_cache_bytes=memory_cache_bytes,
            cache_max_bytes=cache_max_bytes,
            stages_bytes=stages_bytes,
        )
        self.cells_run = 0

    def where(self) -> str:
        """``host:pid`` of this worker (the driver's per-worker lines)."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def job(self, payload: dict[str, Any]) -> CellJob:
        """The payload's job, its manifest saved in this node's work folder; refused when the data
        root is not on this node, or when this worker computes another cell key than the driver
        (checked when the driver sent its weight ids)."""
        manifest = Manifest.from_dict(payload["manifest"])
        path = self.workspace.manifest_copy(manifest.sha256)
        if not path.is_file():
            save_manifest(manifest, path)
        job = CellJob.from_payload(payload, path)
        root = job.spec.data_root
        if not (root / "dataset.json").is_file():
            raise FssBenchError(
                f"{job.name}: data root {root} is not on worker {self.where()}; every node "
                "needs the prepared data at the same path (a shared file system, or a copy)"
            )
        if job.weights is not None:  # the driver's weight ids: check the key
            mine = cell_key(job.spec, manifest.sha256, job.weights)
            if mine != job.key:
                raise FssBenchError(
                    f"{job.name}: worker {self.where()} computes another cell key than the driver "
                    f"({mine[:12]} vs {job.key[:12]}: device {resolve_device(job.spec.device).type}, precision "
                    f"{job.spec.precision} here, or other code or packages); run the driver where the "
                    "workers' device, code and packages are the same"
                )
        return job

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One cell -> ``{"ok": True, metrics, summary, artifacts ((name, artifact path, bytes)),
        peak_mem_kind, stats, worker}`` or ``{"ok": False, error, traceback, worker}``: the
        fields of a :class:`~benchmark.engines.base.CellDone`, the artifacts' bytes sent along."""
        t0 = time.perf_counter()
        try:
            job = self.job(payload)
            result = evaluate_job(job, self.workspace)
        except Exception as e:  # the cell's own failure: reported, never retried
            text, tb = describe_failure(e)
            return {"ok": False, "error": text, "traceback": tb, "worker": self.where()}
        done = answer_of(job, result, worker_seconds=time.perf_counter() - t0)
        self.cells_run += 1
        return {
            "ok": True,
            "worker": self.where(),
            "metrics": done.metrics,
            "summary": {"miou": done.summary["miou"], "fb_iou": done.summary["fb_iou"]},
            "artifacts": [(p.name, ap, p.read_bytes()) for p, ap in done.artifacts],
            "peak_mem_kind": done.peak_mem_kind,
            "stats": done.stats,
        }
