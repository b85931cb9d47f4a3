"""Time 1,000 cell-journal appends (open and close included): one fsync per row, as journals were
written before batching, against the default batches. Usage: python scripts/bench_journal.py DIR
(DIR: a folder on the disk to measure; two small files are written there and removed)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmark.evaluation.journal import CellJournal, FlushPolicy


def main(folder: Path) -> None:
    rows = [{"episode": i, "class": 1, "I_bg": 5, "U_bg": 9, "I_fg": 2, "U_fg": 4} for i in range(1000)]
    for name, policy in (("one fsync per row", FlushPolicy(rows=1)), ("batched (default)", FlushPolicy())):
        path = folder / "bench-journal.jsonl"
        best = float("inf")
        for _ in range(3):
            path.unlink(missing_ok=True)
            t = time.perf_counter()
            with CellJournal(path, {"cell_key": "bench"}, None, policy) as journal:
                for row in rows:
                    journal.append(row)
            best = min(best, time.perf_counter() - t)
        path.unlink()
        print(f"{name}: {best * 1e3:.1f} ms per 1,000 episodes ({best:.4f} ms per episode)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
