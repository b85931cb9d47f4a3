"""Decode every image and label a set of manifests uses, once, before a study starts.

A corrupt or truncated file is then an error naming it before any store or run exists, instead of
a failed cell in the middle of a study. Files already decoded are remembered by (path, size,
mtime) in a JSON file, so the check costs nothing on a rerun.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmark.data.images import read_image, read_label
from benchmark.errors import FssBenchError
from benchmark.io_utils import write_text_atomic


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def check_files(pairs: Iterable[tuple[Path, Path]], record: Path | None = None, workers: int = 2) -> int:
    """Decode each (image, label) pair completely; returns how many files were decoded now.

    Raises FssBenchError naming the first bad file (and how many are bad), with the fix.
    """
    known: dict[str, list[int]] = {}
    if record is not None and record.is_file():
        try:
            known = json.loads(record.read_text())
        except ValueError:
            known = {}
    todo: list[tuple[Path, bool]] = []
    for image, label in pairs:
        for path, is_label in ((Path(image), False), (Path(label), True)):
            key = str(path.absolute())
            try:
                if known.get(key) == _stamp(path):
                    continue
            except OSError:
                pass
            todo.append((path, is_label))
    todo = list(dict.fromkeys(todo))

    def decode(item: tuple[Path, bool]) -> str | None:
        path, is_label = item
        try:
            (read_label if is_label else read_image)(path)
        except FssBenchError as e:
            return str(e)
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(decode, todo))
    good = [p for (p, _), err in zip(todo, results, strict=True) if err is None]
    if record is not None and good:  # remembered even when others are bad: a fix re-checks only those
        known.update({str(p.absolute()): _stamp(p) for p in good})
        write_text_atomic(record, json.dumps(known, sort_keys=True))
    errors = [e for e in results if e is not None]
    if errors:
        more = f" (and {len(errors) - 1} more bad file(s))" if len(errors) > 1 else ""
        raise FssBenchError(f"{errors[0]}{more}; `fssbench data check ROOT` lists every problem")
    return len(todo)
