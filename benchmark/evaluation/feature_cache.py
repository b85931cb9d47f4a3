"""Frozen-feature cache: each image is encoded once per encoder and reused by every variant, fold
and shot. In memory (LRU, bounded by bytes) and on disk (safetensors files), keyed by the encoder's
identity and the SHA-256 of the image file's bytes. The identity is the encoder's own
``identity()``: everything that changes a feature (architecture, weight hash, every resize in the
chain, the precision the encoder ran in, the preprocessing version) and nothing else.

Files are written to a temporary name in the same folder, fsynced and renamed, so processes that
fill one cache directory together only ever see complete files; an unreadable file is recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from benchmark.io_utils import respect_umask, write_text_atomic

Features = dict[str, torch.Tensor]


def identity_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    disk_bytes_written: int = 0
    disk_bytes_evicted: int = 0

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits

    def summary(self) -> str:
        total = self.hits + self.misses
        rate = 100 * self.hits / total if total else 0.0
        return (
            f"feature cache: {self.hits}/{total} hits ({rate:.0f}%: {self.memory_hits} memory, {self.disk_hits} disk), "
            f"{self.misses} computed, {self.disk_bytes_written / 2**20:.1f} MiB written"
        )


class FeatureCache:
    """get_or_compute(identity, image_sha256, compute) -> features (dict of CPU tensors).

    ``directory=None`` keeps features in memory only; ``enabled=False`` always computes.
    ``max_disk_bytes`` bounds the disk cache: past it, the least recently used files are removed
    (down to 90 % of the bound; a disk hit refreshes a file's recency). Eviction never changes a
    number, it only costs recomputation.
    """

    def __init__(
        self,
        directory: Path | None,
        memory_bytes: int = 2 << 30,
        enabled: bool = True,
        max_disk_bytes: int | None = None,
    ):
        self.directory = Path(directory) if directory is not None else None
        self.memory_bytes = memory_bytes
        self.enabled = enabled
        self.max_disk_bytes = max_disk_bytes
        self._disk_used: int | None = None  # measured on the first write when bounded
        self.stats = CacheStats()
        self._memory: OrderedDict[str, Features] = OrderedDict()
        self._memory_used = 0

    def _path(self, key: str, ident: str) -> Path:
        assert self.directory is not None
        return self.directory / ident[:16] / key[:2] / f"{key}.safetensors"

    def _remember(self, key: str, feats: Features) -> None:
        size = sum(t.numel() * t.element_size() for t in feats.values())
        if size > self.memory_bytes:
            return
        self._memory[key] = feats
        self._memory_used += size
        while self._memory_used > self.memory_bytes:
            _, old = self._memory.popitem(last=False)
            self._memory_used -= sum(t.numel() * t.element_size() for t in old.values())

    def _key(self, identity: dict, image_sha256: str) -> tuple[str, str]:
        ident = identity_hash(identity)
        return hashlib.sha256(f"{ident}:{image_sha256}".encode()).hexdigest(), ident

    def contains(self, identity: dict, image_sha256: str) -> bool:
        """Whether a lookup would hit (memory or disk), without loading or counting anything."""
        if not self.enabled:
            return False
        key, ident = self._key(identity, image_sha256)
        return key in self._memory or (self.directory is not None and self._path(key, ident).is_file())

    def lookup(self, identity: dict, image_sha256: str) -> Features | None:
        """The cached features (memory first, then disk), or None (a miss is counted by :meth:`store`)."""
        if not self.enabled:
            return None
        key, ident = self._key(identity, image_sha256)
        if key in self._memory:
            self._memory.move_to_end(key)
            self.stats.memory_hits += 1
            return self._memory[key]
        if self.directory is not None:
            path = self._path(key, ident)
            if path.is_file():
                try:
                    feats = load_file(str(path))
                    if self.max_disk_bytes is not None:
                        with contextlib.suppress(OSError):
                            os.utime(path)  # recently used: the last to be evicted
                    self.stats.disk_hits += 1
                    self._remember(key, feats)
                    return feats
                except Exception:  # a corrupt cache file is recomputed, never trusted
                    path.unlink(missing_ok=True)
        return None

    def store(self, identity: dict, image_sha256: str, feats: Features) -> Features:
        """Record freshly computed features (counted as a miss); returns them as cached (CPU)."""
        feats = {k: v.detach().to("cpu").contiguous() for k, v in feats.items()}
        self.stats.misses += 1
        if not self.enabled:
            return feats
        key, ident = self._key(identity, image_sha256)
        if self.directory is not None:
            self._write(key, ident, identity, feats)
        self._remember(key, feats)
        return feats

    def get_or_compute(self, identity: dict, image_sha256: str, compute: Callable[[], Features]) -> Features:
        found = self.lookup(identity, image_sha256)
        return found if found is not None else self.store(identity, image_sha256, compute())

    def _write(self, key: str, ident: str, identity: dict, feats: Features) -> None:
        path = self._path(key, ident)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (self.directory / ident[:16] / "identity.json").exists():
            write_text_atomic(
                self.directory / ident[:16] / "identity.json", json.dumps(identity, indent=1, sort_keys=True)
            )
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        respect_umask(tmp)
        try:
            save_file(feats, tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            written = path.stat().st_size
            self.stats.disk_bytes_written += written
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._bound_disk(written)

    def _bound_disk(self, written: int) -> None:
        if self.max_disk_bytes is None or self.directory is None:
            return
        from benchmark.cache_admin import prune

        self._disk_used = self.disk_size() if self._disk_used is None else self._disk_used + written
        if self._disk_used > self.max_disk_bytes:
            _, freed = prune(self.directory, int(0.9 * self.max_disk_bytes))
            self._disk_used -= freed
            self.stats.disk_bytes_evicted += freed

    def disk_size(self) -> int:
        if self.directory is None or not self.directory.exists():
            return 0
        return sum(p.stat().st_size for p in self.directory.rglob("*.safetensors"))
