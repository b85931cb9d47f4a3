"""What a remote worker does with one cell: the shared cell function, and an answer the driver logs.

:class:`CellWorker` holds what makes the next cell cheap (built weights, the in-memory feature
cache, the shared episode stages) for as long as it lives. It never touches MLflow: the driver
logs every result, so a worker that dies mid-cell leaves no run at all, and a cell retried on
another worker is logged once. :meth:`CellWorker.run` turns every error of the cell into a
``failed`` answer (a deterministic failure, never retried); only the death of the process
reaches the driver as an error of the engine.

The payload (:func:`cell_payload`) carries the manifest itself, so nodes need no shared work
folder; the data roots must exist at the same path on every node.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from benchmark.device import resolve_device
from benchmark.episodes.manifest import save_manifest
from benchmark.errors import USER_ERRORS, FssBenchError
from benchmark.evaluation.cell import CellSpec, cell_key, evaluate_cell
from benchmark.workspace import Workspace


def cell_payload(
    name: str, key: str, spec: CellSpec, manifest: dict[str, Any], weights: dict[str, str] | None = None
) -> dict[str, Any]:
    """Everything a worker needs to run one cell, as plain data (picklable, no paths to the driver's
    files but the data root). ``weights``: the driver's weight ids, with which the worker checks
    that it computes the same cell key (same device type, precision, code and packages)."""
    return {
        "name": name,
        "key": key,
        "weights": None if weights is None else dict(weights),
        "manifest": manifest,
        "spec": {
            "method": spec.method,
            "settings": dict(spec.settings),
            "data_root": str(spec.data_root),
            "device": spec.device,
            "name": spec.name,
            "batch_size": spec.batch_size,
            "feature_dtype": spec.feature_dtype,
            "compile": spec.compile,
        },
    }


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
        qualitative: int = 3,
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
        self.qualitative = qualitative
        self.cells_run = 0

    def where(self) -> str:
        """``host:pid`` of this worker (the driver's per-worker lines)."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One cell -> ``{"ok": True, metrics, artifacts (name, artifact path, bytes), ...}`` or
        ``{"ok": False, "error", "traceback"}``."""
        key, manifest = payload["key"], payload["manifest"]
        t0 = time.perf_counter()
        try:
            ws = self.workspace
            path = ws.manifest_copy(manifest.sha256)
            if not path.is_file():
                save_manifest(manifest, path)
            raw = payload["spec"]
            root = Path(raw["data_root"])
            if not (root / "dataset.json").is_file():
                raise FssBenchError(
                    f"{payload['name']}: data root {root} is not on worker {self.where()}; every node "
                    "needs the prepared data at the same path (a shared file system, or a copy)"
                )
            spec = CellSpec(
                raw["method"],
                raw["settings"],
                path,
                root,
                raw["device"],
                raw["name"],
                batch_size=raw["batch_size"],
                feature_dtype=raw["feature_dtype"],
                compile=raw["compile"],
            )
            if payload.get("weights") is not None:  # the driver's weight ids: check the key
                mine = cell_key(spec, manifest.sha256, payload["weights"])
                if mine != key:
                    raise FssBenchError(
                        f"{payload['name']}: worker {self.where()} computes another cell key than the driver "
                        f"({mine[:12]} vs {key[:12]}: device {resolve_device(spec.device).type}, precision "
                        f"{spec.precision} here, or other code or packages); run the driver where the "
                        "workers' device, code and packages are the same"
                    )
            if payload.get("fresh"):  # --force: the cell's journal and artifacts start over
                shutil.rmtree(ws.cell_dir(key), ignore_errors=True)
            result = evaluate_cell(
                spec,
                ws.cache,
                key=key,
                weights=payload.get("weights"),
                pool=ws.pool,
                journal_path=ws.journal_path(key),
                artifacts_dir=ws.artifacts_dir(key),
                qualitative=self.qualitative,
                stages=ws.stages,
            )
            answer = {
                "ok": True,
                "worker": self.where(),
                "metrics": result.metrics,
                "summary": {"miou": result.summary["miou"], "fb_iou": result.summary["fb_iou"]},
                "artifacts": [(p.name, ap, p.read_bytes()) for p, ap in result.artifacts],
                "peak_mem_kind": result.peak_memory_kind,
                "row": {**result.run_stats(), "worker_seconds": time.perf_counter() - t0},
            }
        except Exception as e:  # the cell's own failure: reported, never retried
            text = str(e) if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {e}"
            if isinstance(e, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            tb = "" if isinstance(e, USER_ERRORS) else traceback.format_exc()
            return {"ok": False, "error": text, "traceback": tb, "worker": self.where()}
        self.cells_run += 1
        return answer
