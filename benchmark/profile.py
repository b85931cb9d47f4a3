"""``fssbench profile``: what the feature cache buys on a study, measured in one process.

The study runs three times, each with a fresh work folder and a throwaway SQLite tracking store (so
nothing is skipped and the user's MLflow store is untouched): without the cache, with a cold cache,
and with the warm cache left by the second run. It prints episodes/s and peak memory per variant and
the ratio of the whole study's wall time without the cache to with it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmark.runner import StudyRunner
from benchmark.study import Study


def _timed_run(
    study: Study, work: Path, cache_dir: Path, use_cache: bool, progress: bool
) -> tuple[float, pd.DataFrame, str]:
    runner = StudyRunner(
        study,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        work_dir=work,
        use_cache=use_cache,
        cache_dir=cache_dir,
        progress=progress,
        qualitative=0,
        log=lambda *a, **k: None,
    )
    t0 = time.perf_counter()
    cells = runner.run()
    return time.perf_counter() - t0, cells, runner.cache.stats.summary()


def profile_study(study: Study, work_dir: Path | None = None, progress: bool = True) -> dict:
    """Run the study without cache, with a cold cache and with a warm cache; return the figures."""
    with tempfile.TemporaryDirectory(prefix="fssbench-profile-", dir=work_dir) as tmp:
        tmp = Path(tmp)
        cache_dir = tmp / "cache"
        runs = {}
        for label, use_cache in (("no cache", False), ("cold cache", True), ("warm cache", True)):
            work = tmp / label.replace(" ", "-")
            work.mkdir()
            runs[label] = _timed_run(study, work, cache_dir, use_cache, progress)
    per_variant = []
    for label, (_, cells, _) in runs.items():
        g = cells.groupby("variant", sort=False)
        for variant, df in g:
            per_variant.append(
                {
                    "variant": variant,
                    "run": label,
                    "episodes/s": df["episodes_run"].sum() / df["seconds"].sum(),
                    "peak MiB": df["peak_mem_mb"].max(),
                }
            )
    table = pd.DataFrame(per_variant).pivot(index="variant", columns="run", values="episodes/s")
    table = table.loc[
        [v.name for v in study.variants], ["no cache", "cold cache", "warm cache"]
    ].reset_index()
    peak = pd.DataFrame(per_variant).groupby("variant", sort=False)["peak MiB"].max()
    table["peak MiB"] = table["variant"].map(peak)
    t = {label: r[0] for label, r in runs.items()}
    return {
        "per_variant": table,
        "seconds": t,
        "ratio_cold": t["no cache"] / t["cold cache"],
        "ratio_warm": t["no cache"] / t["warm cache"],
        "cache_stats": {label: r[2] for label, r in runs.items()},
        "cells": len(runs["no cache"][1]),
        "episodes": int(runs["no cache"][1]["episodes_run"].sum()),
    }


def print_profile(study: Study, r: dict) -> None:
    import platform

    import torch

    if study.random_init:
        print("RANDOM-INIT WEIGHTS (timing only)")
    print(
        f"study {study.name!r}: {r['cells']} cells, {r['episodes']} episodes per run; "
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, cuda={torch.cuda.is_available()}"
    )
    print()
    print(r["per_variant"].to_markdown(index=False, floatfmt=".2f"))
    print()
    for label, sec in r["seconds"].items():
        print(f"  whole study, {label:10s}: {sec:8.1f} s   ({r['cache_stats'][label]})")
    print(f"  ratio no cache / cold cache: {r['ratio_cold']:.1f}x")
    print(f"  ratio no cache / warm cache: {r['ratio_warm']:.1f}x")
