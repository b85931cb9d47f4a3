"""``fssbench profile STUDY --engine ray --workers 1,2``: cells/s per Ray worker count, in one run.

The study runs once per worker count on the same Ray cluster (one started on this machine, or
``--ray-address``), each time in a fresh work folder with a throwaway SQLite store, so nothing is
skipped and every run starts with cold caches. Printed: per count, the cells, the wall time of the
study (Ray's start excluded: the cluster is up before the first run), cells/s and the speed-up over
the first count; each count's per-cell metrics are checked equal to the first's (the engine
schedules, it does not change numbers).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.engines.ray import RayEngine, connect
from benchmark.errors import FssBenchError
from benchmark.jobs.run import RunJob
from benchmark.specs.study import Study


def parse_worker_counts(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4] (positive, distinct)."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise FssBenchError(f"--workers {text!r}: expected counts separated by commas, e.g. 1,2") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise FssBenchError(f"--workers {text!r}: expected distinct positive counts, e.g. 1,2")
    return counts


def profile_engine(
    study: Study,
    workers: list[int],
    work_dir: Path | None = None,
    ray_address: str | None = None,
    cpus_per_cell: float | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per worker count: workers, cells, seconds, cells_per_s, speedup (over the first)."""
    import ray

    started = connect(ray_address, quiet=not progress)
    rows: list[dict[str, Any]] = []
    first: dict[str, float] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="fssbench-engine-profile-", dir=work_dir) as tmp:
            for n in workers:
                work = Path(tmp) / f"workers-{n}"
                engine = RayEngine.for_study(
                    study.resources, workers=n, cpus_per_cell=cpus_per_cell, progress=progress
                )
                runner = RunJob(
                    study,
                    tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                    work_dir=work,
                    progress=progress,
                    log=lambda msg: None,
                    engine=engine,
                )
                t0 = time.perf_counter()
                table = runner.run()
                seconds = time.perf_counter() - t0
                if runner.failures:
                    raise FssBenchError(
                        f"profile: {len(runner.failures)} cell(s) failed: {runner.failures[0].error}"
                    )
                metrics = dict(zip(table["cell"], table["miou_pct"], strict=True))
                if first is None:
                    first = metrics
                elif metrics != first:
                    raise FssBenchError(f"profile: {n} workers gave other numbers than {workers[0]}")
                rows.append(
                    {
                        "workers": n,
                        "cells": len(table),
                        "seconds": seconds,
                        "cells_per_s": len(table) / seconds,
                    }
                )
    finally:
        if started:
            ray.shutdown()
    out = pd.DataFrame(rows)
    out["speedup"] = out["cells_per_s"] / out["cells_per_s"].iloc[0]
    return out


def print_engine_profile(study: Study, table: pd.DataFrame, cluster: str) -> None:
    print(f"study {study.name}: {int(table['cells'].iloc[0])} cells per run, on {cluster}")
    shown = table.assign(
        seconds=table["seconds"].map("{:.1f}".format),
        cells_per_s=table["cells_per_s"].map("{:.2f}".format),
        speedup=table["speedup"].map("{:.2f}x".format),
    )
    print(shown.to_markdown(index=False, colalign=("right",) * len(shown.columns)))
    last = table.iloc[-1]
    print(
        f"speed-up {int(last['workers'])} vs {int(table['workers'].iloc[0])} workers: {last['speedup']:.2f}x "
        "(same per-cell numbers at every count)"
    )
