"""``fssbench cache info|prune|clear``: what the frozen-feature cache holds on disk, and bounding it.

The disk cache (``<work-dir>/feature-cache/``) has one folder per encoder identity (its
``identity.json`` names the encoder, weights, sizes and precision) holding one safetensors file per
image. Files are evicted least recently used first (a disk hit refreshes a file's time).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass
class IdentityUsage:
    """One encoder identity's share of the cache."""

    folder: str
    encoder: str
    files: int
    bytes: int


def _files(directory: Path) -> list[Path]:
    return sorted(Path(directory).rglob("*.safetensors")) if Path(directory).is_dir() else []


def _describe(identity: dict) -> str:
    keys = ("image_size", "input_size", "precision")
    parts = [str(identity["encoder"])] if "encoder" in identity else []
    parts += [f"{k}={identity[k]}" for k in keys if k in identity]
    if "weights" in identity:
        parts.append(f"weights={str(identity['weights'])[:12]}")
    return ", ".join(parts) or json.dumps(identity, sort_keys=True)[:120]


def cache_info(directory: Path) -> list[IdentityUsage]:
    """Files and bytes per encoder identity, largest first."""
    directory = Path(directory)
    out = []
    if not directory.is_dir():
        return out
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        files = list(folder.rglob("*.safetensors"))
        try:
            identity = json.loads((folder / "identity.json").read_text())
        except (OSError, ValueError):
            identity = {}
        out.append(
            IdentityUsage(folder.name, _describe(identity), len(files), sum(f.stat().st_size for f in files))
        )
    return sorted(out, key=lambda u: -u.bytes)


def prune(directory: Path, max_bytes: int) -> tuple[int, int]:
    """Remove the least recently used files until the cache holds at most ``max_bytes``.
    Returns (files removed, bytes freed). A file that vanished meanwhile (another process) is skipped."""
    entries = []
    for f in _files(directory):
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        entries.append((st.st_mtime_ns, f, st.st_size))
    total = sum(size for _, _, size in entries)
    removed = freed = 0
    for _, f, size in sorted(entries, key=lambda e: (e[0], str(e[1]))):
        if total - freed <= max_bytes:
            break
        try:
            f.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        freed += size
    return removed, freed


def clear(directory: Path) -> int:
    """Remove the whole cache folder; returns the bytes it held."""
    directory = Path(directory)
    size = sum(f.stat().st_size for f in _files(directory))
    if directory.is_dir():
        shutil.rmtree(directory)
    return size
