"""The cell journal: an append-only JSON-lines record of a cell's finished episodes.

Line 1 is a header naming the cell (its key and manifest hash); each further line is one episode's
counts, flushed and fsynced. On open, the lines are read back and validated: a journal of another
cell is started afresh, and at the first torn or foreign line (a kill during a write, a line that
is not a row of this cell's manifest) the file is cut, so a resumed cell never counts an episode
twice or an episode that is not its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.evaluation.metrics import EPISODE_COLUMNS


class CellJournal:
    """``rows``: episode id -> counts; ``append(row)`` records one more episode durably.

    ``expected``: episode id -> class id of the manifest (rows that disagree are foreign);
    ``header``: what identifies the cell (``cell_key``, ``manifest_sha256``).
    """

    def __init__(
        self,
        path: Path | None,
        header: dict[str, str] | None = None,
        expected: dict[int, int] | None = None,
    ):
        self.path = Path(path) if path is not None else None
        self.header = dict(header or {})
        self.expected = expected
        self.rows: dict[int, dict[str, int]] = {}
        self.cut_lines = 0
        self._fd: int | None = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        good = self._read_back() if self.path.exists() else 0
        if good == 0:
            self.rows.clear()
            with open(self.path, "wb") as f:
                f.write((json.dumps({"journal": self.header}, sort_keys=True) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _valid_row(self, row: Any) -> bool:
        if not isinstance(row, dict) or set(row) != set(EPISODE_COLUMNS):
            return False
        if not all(isinstance(row[c], int) and not isinstance(row[c], bool) and row[c] >= 0 for c in row):
            return False
        if row["I_bg"] > row["U_bg"] or row["I_fg"] > row["U_fg"]:
            return False
        if self.expected is not None and self.expected.get(row["episode"]) != row["class"]:
            return False
        return row["episode"] not in self.rows

    def _read_back(self) -> int:
        """Load the valid prefix; cut the rest. Returns the byte length kept (0: start afresh)."""
        assert self.path is not None
        data = self.path.read_bytes()
        lines = data.splitlines(keepends=True)
        try:
            head = json.loads(lines[0]) if lines and lines[0].endswith(b"\n") else None
        except ValueError:
            head = None
        if not isinstance(head, dict) or head.get("journal") != self.header:
            self.cut_lines = len(lines)
            return 0
        good = len(lines[0])
        for i, line in enumerate(lines[1:], start=1):
            try:
                row = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                row = None
            if not self._valid_row(row):
                self.cut_lines = len(lines) - i
                break
            self.rows[row["episode"]] = row
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        return good

    def append(self, row: dict[str, int]) -> None:
        self.rows[int(row["episode"])] = row
        if self._fd is not None:
            os.write(self._fd, (json.dumps(row, sort_keys=True) + "\n").encode())
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> CellJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def table(self) -> pd.DataFrame:
        rows = [self.rows[k] for k in sorted(self.rows)]
        return pd.DataFrame(rows, columns=list(EPISODE_COLUMNS)).astype("int64")
