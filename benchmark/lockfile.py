"""The lock file of fetched and registered files: ``fssbench-lock.json`` in the folder they were
fetched into (``checkpoints/``, ``raw/``) or registered under (``exp/``).

``fssbench fetch`` writes it (:mod:`benchmark.fetch`); study validation reads it, so a checkpoint
that changed or was truncated after it was fetched is an error before any work
(:func:`check_against_lock`).
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmark.errors import FssBenchError
from benchmark.io_utils import write_text_atomic
from fssam.hashing import file_sha256

LOCK_NAME = "fssbench-lock.json"
LOCK_SEARCH_DEPTH = 6
"""How many folders above a file :func:`find_lock_entry` looks for a lock file that lists it."""


sha256_of = file_sha256  # the one file hash of the project (fssam.hashing)


class LockFile:
    """``DIR/fssbench-lock.json``: ``{"files": {name: {"sha256", "size", "url", "checked", "recorded"}}}``,
    names relative to DIR. Read and written under a file lock, so concurrent fetches keep each
    other's entries."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"version": 1, "files": {}}
        try:
            data = json.loads(self.path.read_text())
            assert isinstance(data.get("files"), dict)
        except (ValueError, AssertionError, AttributeError):
            raise FssBenchError(
                f"{self.path}: not a fssbench lock file (unreadable JSON); move it away and fetch again "
                "(every file is then checked and recorded anew)"
            ) from None
        return data

    def get(self, name: str) -> dict[str, Any] | None:
        return self._read()["files"].get(name)

    def entries(self) -> dict[str, dict[str, Any]]:
        return dict(self._read()["files"])

    def record(self, name: str, **entry: Any) -> dict[str, Any]:
        """Add or update the entry of ``name`` (fields merged), atomically."""
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            data = self._read()
            merged = {**data["files"].get(name, {}), **entry}
            merged.setdefault("recorded", datetime.now(UTC).isoformat(timespec="seconds"))
            data["files"][name] = merged
            data["files"] = dict(sorted(data["files"].items()))
            write_text_atomic(self.path, json.dumps(data, indent=2) + "\n")
        return merged


def find_lock_entry(path: Path) -> tuple[LockFile, dict[str, Any]] | None:
    """The nearest lock file (in ``path``'s folder or up to :data:`LOCK_SEARCH_DEPTH` above) that
    lists ``path``, with its entry; None when none does."""
    path = Path(path).resolve()
    for folder in list(path.parents)[:LOCK_SEARCH_DEPTH]:
        lock = LockFile(folder)
        if lock.path.is_file():
            entry = lock.get(path.relative_to(folder).as_posix())
            if entry is not None:
                return lock, entry
    return None


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(Path(path))


def check_against_lock(path: Path, where: str) -> None:
    """If a lock file lists ``path``, its size and sha256 must match the entry (hashed once per
    file version in a process); a mismatch is an FssBenchError naming ``where``, the file and the
    lock. Files no lock lists pass unchecked."""
    found = find_lock_entry(path)
    if found is None:
        return
    lock, entry = found
    st = Path(path).stat()
    if entry.get("size") is not None and st.st_size != entry["size"]:
        raise FssBenchError(
            f"{where}: {path} has {st.st_size} bytes, {lock.path} recorded {entry['size']}: the file is "
            "truncated or changed; delete it and fetch it again (fssbench fetch)"
        )
    sha = _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if sha != entry["sha256"]:
        raise FssBenchError(
            f"{where}: {path} has sha256 {sha}, {lock.path} recorded {entry['sha256']}: the file changed "
            "after it was fetched; delete it and fetch it again (fssbench fetch)"
        )
