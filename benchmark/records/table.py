"""The rows of ``cells.csv``: one per cell of an invocation, whichever engine ran it or skipped it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.io_utils import write_text_atomic
from benchmark.plan import Cell
from benchmark.records.cells import CellRecords


@dataclass
class CellFailure:
    cell: str
    error: str


def cell_row(cell: Cell, key: str) -> dict[str, Any]:
    """The columns of a cell's row that say which cell it is."""
    return {
        "cell": cell.name,
        "variant": cell.variant,
        "method": cell.spec.method,
        "dataset": cell.dataset,
        "fold": cell.fold,
        "shot": cell.shot,
        "seed": cell.seed,
        "cell_key": key,
    }


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


class CellTable:
    """An invocation's rows (``rows``: cells.csv) and failed cells (``failures``, one log line
    each). ``records``: where a run that stands for another variant too is tagged so."""

    def __init__(self, records: CellRecords | None, log: Callable[[str], None]):
        self.records, self.log = records, log
        self.rows: list[dict[str, Any]] = []
        self.failures: list[CellFailure] = []
        self._also: dict[str, list[str]] = {}  # run id -> the other variants it stands for

    def ran(self, cell: Cell, key: str, run_id: str | None, summary: dict[str, float], **stats: Any) -> None:
        """A cell run by this invocation (``summary``: fractions; ``stats``: timings and the like)."""
        self.rows.append(
            cell_row(cell, key)
            | {
                "miou_pct": 100 * summary["miou"],
                "fb_iou_pct": 100 * summary["fb_iou"],
                "status": "run",
                "run_id": run_id,
                **stats,
            }
        )

    def skipped(self, cell: Cell, key: str, run: Any, status: str = "skipped (done)") -> None:
        """A cell whose finished run ``run`` exists (done before, elsewhere, or reused)."""
        tags, rid = run.data.tags, run.info.run_id
        also = self._also.setdefault(rid, [v for v in tags.get("fss.also_variants", "").split(",") if v])
        if self.records is not None and cell.variant not in (tags.get("fss.variant"), *also):
            # another variant resolved to this very cell: the run stands for both (reports show both)
            also.append(cell.variant)
            self.records.also_variants(rid, also)
        m = run.data.metrics
        self.rows.append(
            cell_row(cell, key)
            | {
                "miou_pct": _pct(m.get("miou")),
                "fb_iou_pct": _pct(m.get("fb_iou")),
                "status": status,
                "run_id": run.info.run_id,
            }
        )

    def failed(self, cell: Cell, key: str, run_id: str | None, text: str) -> None:
        """A failed row (a twin variant of a failed cell; :meth:`failure` for the cell itself)."""
        self.rows.append(cell_row(cell, key) | {"status": "failed", "run_id": run_id, "error": text})

    def failed_meanwhile(self, cell: Cell, key: str, run: Any, here: bool) -> None:
        """A cell whose run ``run`` failed during this invocation: here (a twin variant) or in
        another process; not run again."""
        row = cell_row(cell, key) | {"run_id": run.info.run_id}
        row["error"] = run.data.tags.get("fss.error", "")
        row["status"] = "failed" if here else "failed (in another process)"
        self.rows.append(row)

    def failure(self, cell: Cell, key: str, run_id: str | None, text: str) -> None:
        """This invocation's failure of ``cell``: a failed row, a failure and a log line."""
        first = (text.splitlines() or ["failed"])[0]
        self.failures.append(CellFailure(cell.name, first))
        self.failed(cell, key, run_id, text)
        self.log(f"FAILED {cell.name}: {first}")


def write_cells_csv(path: Path, table: pd.DataFrame) -> None:
    """Write ``cells.csv`` under a lock, merged with what another process wrote there meanwhile
    (:func:`merge_cells_tables`), so the file holds every cell whoever ran it."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=600):
        old = pd.read_csv(path) if path.is_file() and path.stat().st_size else None
        write_text_atomic(path, merge_cells_tables(old, table).to_csv(index=False))


def merge_cells_tables(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """``cells.csv`` after this invocation: ``new``'s rows, except where ``old`` (written by another
    process) holds the run of the same cell that ``new`` only saw as done elsewhere (same run id:
    the row that ran it keeps its timings); then ``old``'s cells that ``new`` does not have."""
    if old is None or old.empty or "cell" not in old:
        return new
    old_by_cell = {r["cell"]: r for r in old.to_dict("records")}
    rows = []
    for r in new.to_dict("records"):
        prior = old_by_cell.pop(r["cell"], None)
        ran_there = (
            prior is not None
            and prior.get("status") == "run"
            and str(r.get("status", "")).startswith("skipped")
            and prior.get("run_id") == r.get("run_id")
        )
        rows.append(prior if ran_there else r)
    rows += list(old_by_cell.values())
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*new.columns, *old.columns])))
