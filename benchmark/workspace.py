"""The workspace: what every job and engine shares under one work folder, built in one place.

A :class:`Workspace` owns the feature cache (``<work-dir>/feature-cache`` unless told otherwise),
the weight pool, the episode stages shared by the variants of a manifest, the checkpoint hashes
(``checkpoint-hashes.json``), the record of checked images (``images-checked.json``), the cell
locks (``locks/``) and the cell folders (``cells/<key>/``: episode journal and artifacts). The
local runner, the search, the training validation and every Ray worker build theirs here; a Ray
worker rebuilds the driver's from :meth:`Workspace.settings`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmark.data.image_check import check_files
from benchmark.device import resolve_device
from benchmark.episodes.manifest import Manifest
from benchmark.errors import USER_ERRORS, FssBenchError
from benchmark.evaluation.cell import CellSpec, CheckpointHashes
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.methods import WeightPool, build_method
from benchmark.specs.study import CacheSettings
from fssam.stages import StageMemo

IN_WORK_DIR = Path("<work-dir>/feature-cache")
"""``cache_dir`` default: the feature cache lives in the work folder."""


class Workspace:
    """The shared state of cells run from one work folder (module docstring).

    ``cache_dir``: the feature cache's disk folder (:data:`IN_WORK_DIR` by default; ``None``: memory
    only). ``use_cache`` off (``--no-cache``) turns off the feature cache and the shared stages.
    ``stages_bytes``: memory for episode stages shared across variants (0: off)."""

    def __init__(
        self,
        work_dir: Path | str,
        *,
        cache_dir: Path | str | None = IN_WORK_DIR,
        use_cache: bool = True,
        memory_cache_bytes: int = 2 << 30,
        cache_max_bytes: int | None = None,
        stages_bytes: int = 0,
    ):
        self.work_dir = Path(work_dir).absolute()
        if cache_dir is IN_WORK_DIR:
            cache_dir = self.work_dir / "feature-cache"
        self.cache = FeatureCache(
            Path(cache_dir) if cache_dir is not None else None,
            memory_bytes=memory_cache_bytes,
            enabled=use_cache,
            max_disk_bytes=cache_max_bytes,
        )
        self.stages_bytes = stages_bytes
        self.stages = StageMemo(stages_bytes) if use_cache and stages_bytes > 0 else None
        self.pool = WeightPool()
        self.hashes = CheckpointHashes(self.work_dir / "checkpoint-hashes.json")

    @classmethod
    def for_study(
        cls,
        cache: CacheSettings,
        work_dir: Path | str,
        *,
        cache_dir: Path | None = None,
        use_cache: bool = True,
        memory_cache_bytes: int = 2 << 30,
        cache_max_bytes: int | None = None,
    ) -> Workspace:
        """The workspace of a study's (or a search's) cells: its ``cache`` settings give the shared
        stages' memory and the disk cache's bound (``cache.max_gb``, unless ``cache_max_bytes``
        is given); ``cache_dir`` None: in the work folder."""
        if cache_max_bytes is None and cache.max_gb is not None:
            cache_max_bytes = int(cache.max_gb * 2**30)
        return cls(
            work_dir,
            cache_dir=cache_dir or IN_WORK_DIR,
            use_cache=use_cache,
            memory_cache_bytes=memory_cache_bytes,
            cache_max_bytes=cache_max_bytes,
            stages_bytes=int(cache.stages_gb * 2**30),
        )

    def settings(self) -> dict[str, Any]:
        """Plain keyword arguments that rebuild this workspace elsewhere (a Ray worker): the same
        work folder and cache settings; a disk cache only where this one has one."""
        c = self.cache
        return {
            "work_dir": str(self.work_dir),
            "cache_dir": str(c.directory) if c.directory and c.enabled else None,
            "use_cache": c.enabled,
            "memory_cache_bytes": c.memory_bytes,
            "cache_max_bytes": c.max_disk_bytes,
            "stages_bytes": self.stages_bytes,
        }

    # ------------------------------------------------------------------------------------ folders
    def cell_dir(self, key: str) -> Path:
        """``<work-dir>/cells/<key[:20]>``: a cell's episode journal and artifacts."""
        return self.work_dir / "cells" / key[:20]

    def journal_path(self, key: str) -> Path:
        """The cell's episode journal (what a rerun resumes from)."""
        return self.cell_dir(key) / "episodes.jsonl"

    def artifacts_dir(self, key: str) -> Path:
        return self.cell_dir(key) / "artifacts"

    def received_artifacts_dir(self, key: str) -> Path:
        """Where a driver writes the artifacts a remote worker sent for the cell (then logs them)."""
        return self.work_dir / "ray-artifacts" / key[:20]

    def manifest_copy(self, sha256: str) -> Path:
        """Where a worker keeps a manifest the driver sent (named by its hash)."""
        return self.work_dir / "manifests" / "by-sha256" / f"{sha256[:20]}.json"

    def cell_lock(self, key: str) -> Any:
        """The cell's file lock (``<work-dir>/locks/``): whoever holds it checks, runs and logs the
        cell, so two processes, engines or trials never run or log it twice."""
        from filelock import FileLock

        (self.work_dir / "locks").mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.work_dir / "locks" / f"{key[:20]}.lock"))

    # ---------------------------------------------------------------------------------- preflight
    def check_images(self, manifests: Iterable[tuple[Manifest, Path]]) -> None:
        """Decode every image and label of the (manifest, data root) pairs, once: remembered in
        ``<work-dir>/images-checked.json``. A corrupt file is an error before any store or run."""
        pairs: set[tuple[Path, Path]] = set()
        for manifest, root in manifests:
            pairs |= {(root / img, root / lab) for img, lab in manifest.images.values()}
        check_files(sorted(pairs), self.work_dir / "images-checked.json")

    def preflight(self, checks: Iterable[tuple[CellSpec, dict[str, str] | None, str]]) -> None:
        """Load the real weights of each ``(spec, weight ids, blame)`` strictly into the pool (the
        run reuses them): a checkpoint of the wrong architecture or version is an error prefixed
        with ``blame`` now, not after the store and a run exist. Random init is skipped; with weight
        ids given, a spec without weight files or whose weights and settings were checked is too."""
        seen: set[tuple] = set()
        for spec, sources, blame in checks:
            if spec.settings.get("random_init"):
                continue
            if sources is not None:
                signature = (
                    spec.method,
                    tuple(sorted(sources.items())),
                    tuple(sorted(spec.settings.items())),
                )
                if not sources or signature in seen:
                    continue
                seen.add(signature)
            try:
                build_method(spec.method, dict(spec.settings), resolve_device(spec.device), self.pool)
            except USER_ERRORS as e:
                raise FssBenchError(f"{blame}: {e}") from None

    def drop_weights(self) -> None:
        """Forget the loaded weights (a driver whose workers load their own)."""
        self.pool = WeightPool()
