"""Atomic file and directory writes: an interrupted command never leaves a half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmark.errors import FssBenchError


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, no spaces, ASCII only, trailing newline."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def respect_umask(path: str | Path, directory: bool = False) -> None:
    """Give a temporary file (0600) or folder (0700) the mode a plain open()/mkdir() would have given it,
    so outputs renamed into place can be shared as the umask allows (a lab's prepared data root)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    write_bytes_atomic(path, text.encode("utf-8"))  # as text mode with newline="\n" writes it


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        respect_umask(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it into place only on success.

    Yields the temporary path to write into. On any exception (including Ctrl-C) the temporary
    folder is removed and ``out`` is left as it was. An existing non-empty ``out`` is an error
    unless ``overwrite`` is set, in which case it is replaced only once the new one is complete.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise FssBenchError(f"{out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FssBenchError(
            f"{out} already exists and is not empty; pass --overwrite or choose another --out"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    respect_umask(tmp, directory=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """``{distribution: version}`` of installed packages (``not installed`` for absent ones)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def say(message: str) -> None:
    """Print a progress message on a line of its own, also in a redirected log: a progress bar that
    is not on a terminal leaves its line open (it redraws with a carriage return), so the message
    would be glued onto it; on a terminal the bars are cleared and redrawn around it."""
    import sys

    from tqdm import tqdm

    bars = [b for b in list(getattr(tqdm, "_instances", ())) if not getattr(b, "disable", True)]
    if not bars:
        print(message, flush=True)
    elif sys.stderr.isatty():
        tqdm.write(message, file=sys.stdout)
    else:
        sys.stderr.flush()
        print(("\n" if _same_file(sys.stdout, sys.stderr) else "") + message, flush=True)


def _same_file(a: Any, b: Any) -> bool:
    """Whether two streams write to one file (``2>&1``)."""
    try:
        x, y = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)
