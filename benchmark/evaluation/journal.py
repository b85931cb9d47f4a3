"""The cell journal: an append-only JSON-lines record of a cell's finished episodes.

Line 1 is a header naming the cell (its key and manifest hash); each further line is one episode's
counts and its predicted mask, packed (:data:`PREDICTION`). Rows are written and fsynced in batches (:class:`FlushPolicy`: every ``rows`` rows, at the
latest ``seconds`` after a row was appended, and always on close, which a ``with`` block does on
any exception), so a SIGKILL or a power loss loses at most the unflushed batch. On open, the lines are read back and validated: a journal of another
cell is started afresh, and at the first torn or foreign line (a kill during a write, a line that
is not a row of this cell's manifest) the file is cut, so a resumed cell never counts an episode
twice or an episode that is not its own.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.errors import FssBenchError
from benchmark.evaluation.metrics import EPISODE_COLUMNS
from benchmark.evaluation.predictions import StoredPrediction

PREDICTION = "prediction"
"""The optional key of a journal row that holds the episode's predicted mask, packed
(:meth:`benchmark.evaluation.predictions.StoredPrediction.to_json`: ``{"size": [H, W], "bits": str}``);
journals written before it read back without."""
ROWS_ENV = "FSSBENCH_JOURNAL_FLUSH_ROWS"
SECONDS_ENV = "FSSBENCH_JOURNAL_FLUSH_SECONDS"


@dataclass(frozen=True)
class FlushPolicy:
    """When buffered rows are written and fsynced: once ``rows`` are buffered, or ``seconds`` after
    the oldest buffered row was appended (a background timer, so a slow episode does not hold the
    rows before it), whichever comes first; ``rows=1`` is one fsync per episode."""

    rows: int = 256
    seconds: float = 2.0

    @classmethod
    def from_env(cls) -> FlushPolicy:
        """The default, overridden by ``FSSBENCH_JOURNAL_FLUSH_ROWS`` / ``_SECONDS`` if set."""
        rows = _env_number(ROWS_ENV, int, "a whole number of rows >= 1")
        seconds = _env_number(SECONDS_ENV, float, "a number of seconds >= 0")
        return cls(
            rows=max(1, rows) if rows is not None else cls.rows,
            seconds=max(0.0, seconds) if seconds is not None else cls.seconds,
        )


def _env_number(name: str, kind: type, expected: str) -> Any:
    """The environment variable ``name`` read as ``kind`` (None when unset or blank); an
    FssBenchError naming the variable and what it expects when it is not a number."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise FssBenchError(f"{name}={raw!r}: expected {expected}") from None


class CellJournal:
    """``rows``: episode id -> counts; ``append(row, prediction)`` records one more episode (durable
    once flushed: see :class:`FlushPolicy`; ``flush()`` forces it, ``close()`` flushes);
    ``predictions``: episode id -> its predicted mask (a
    :class:`~benchmark.evaluation.predictions.StoredPrediction`), on the same line as its counts.

    ``expected``: episode id -> class id of the manifest (rows that disagree are foreign);
    ``header``: what identifies the cell (``cell_key``, ``manifest_sha256``);
    ``policy``: when rows are flushed (default: :meth:`FlushPolicy.from_env`).
    """

    def __init__(
        self,
        path: Path | None,
        header: dict[str, str] | None = None,
        expected: dict[int, int] | None = None,
        policy: FlushPolicy | None = None,
    ):
        self.path = Path(path) if path is not None else None
        self.header = dict(header or {})
        self.expected = expected
        self.policy = policy or FlushPolicy.from_env()
        self.rows: dict[int, dict[str, int]] = {}
        self.predictions: dict[int, StoredPrediction] = {}  # episode id -> its mask (rows that have one)
        self.cut_lines = 0
        self.flushes = 0
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._lock = threading.Lock()
        self._due = threading.Condition(self._lock)
        self._oldest: float | None = None  # monotonic time the oldest pending row was appended
        self._timer: threading.Thread | None = None
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
        if not isinstance(row, dict):
            return False
        if PREDICTION in row:  # optional: the episode's predicted mask, packed
            try:
                StoredPrediction.from_json(row[PREDICTION])
            except ValueError:
                return False
            row = {k: v for k, v in row.items() if k != PREDICTION}
        if set(row) != set(EPISODE_COLUMNS):
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
            if PREDICTION in row:
                self.predictions[row["episode"]] = StoredPrediction.from_json(row.pop(PREDICTION))
            self.rows[row["episode"]] = row
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        return good

    def append(self, row: dict[str, int], prediction: StoredPrediction | None = None) -> None:
        """Record ``row`` (in ``rows`` at once; in the file with its batch), and with it the
        episode's predicted mask (``prediction``) if given."""
        self.rows[int(row["episode"])] = row
        if prediction is not None:
            self.predictions[int(row["episode"])] = prediction
        if self._fd is None:
            return
        stored = row if prediction is None else {**row, PREDICTION: prediction.to_json()}
        line = (json.dumps(stored, sort_keys=True) + "\n").encode()
        with self._lock:
            self._pending.append(line)
            if len(self._pending) >= self.policy.rows:
                self._write_pending()
            elif self._oldest is None:
                self._oldest = time.monotonic()
                self._start_timer()
                self._due.notify()

    def flush(self) -> None:
        """Write and fsync the buffered rows now."""
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        """One write and one fsync for every pending row (the caller holds the lock)."""
        data, fd = b"".join(self._pending), self._fd
        self._pending.clear()  # taken before writing: an interrupt never writes a row twice
        self._oldest = None
        if data and fd is not None:
            while data:  # os.write may write less than asked
                data = data[os.write(fd, data) :]
            os.fsync(fd)
            self.flushes += 1

    def _start_timer(self) -> None:
        if self._timer is None:
            self._timer = threading.Thread(target=self._flush_when_due, name="fss-journal", daemon=True)
            self._timer.start()

    def _flush_when_due(self) -> None:
        """The timer thread: flush the pending rows ``policy.seconds`` after the oldest arrived."""
        with self._lock:
            while self._fd is not None:
                if self._oldest is None:
                    self._due.wait()
                    continue
                left = self._oldest + self.policy.seconds - time.monotonic()
                if left > 0:
                    self._due.wait(left)
                else:
                    self._write_pending()

    def close(self) -> None:
        """Flush the pending rows and close the file (the timer thread ends)."""
        with self._lock:
            self._write_pending()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._due.notify_all()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join()
            self._timer = None

    def __enter__(self) -> CellJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def table(self) -> pd.DataFrame:
        rows = [self.rows[k] for k in sorted(self.rows)]
        return pd.DataFrame(rows, columns=list(EPISODE_COLUMNS)).astype("int64")
