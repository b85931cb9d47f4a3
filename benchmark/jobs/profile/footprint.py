"""``fssbench profile --footprint``: what one run of a whole study costs, measured in one process.

The study runs once, as ``fssbench run`` runs it (feature cache on, cold), into a throwaway work
folder and SQLite tracking store. Printed: the wall time; the peak resident memory of the process
(sampled every 50 ms, so a memo that grows with the dataset shows); the harness per episode-variant
(a cell's time less the method's episode path and its encoders: loading, scoring, the journal) and
the model's part; the feature cache's bytes per image for each encoder identity; and the tracking
store's size with its runs, params, metrics, tags and artifacts.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.cache_admin import cache_info
from benchmark.specs.study import Study


class PeakRSS:
    """The process's resident memory, sampled every ``interval`` s in a thread: ``start``, ``peak``
    (bytes; 0 where there is no /proc)."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.start, self.peak = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes, files) of every regular file under ``folder`` (0, 0 if it does not exist)."""
    total = files = 0
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
                files += 1
    return total, files


def store_counts(db: Path) -> dict[str, int]:
    """Rows of an MLflow SQLite store: runs, params, metrics (latest values), tags (run tags)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        count = lambda table: int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: E731
        return {
            "runs": count("runs"),
            "params": count("params"),
            "metrics": count("latest_metrics"),
            "metric_points": count("metrics"),
            "tags": count("tags"),
        }
    finally:
        con.close()


def harness_split(cells: pd.DataFrame) -> dict[str, float]:
    """Per episode-variant seconds of the cells that ran: ``per_forward`` (a cell's wall time over its
    episodes), ``model`` (the method's episode path and encoders) and ``harness`` (the rest: loading,
    decode waits, feature I/O, scoring, the journal)."""
    ran = cells[cells["status"] == "run"]
    forwards = max(int(ran["episodes_run"].sum()), 1)
    inside = float(ran["seconds"].sum())
    model = float(ran["episode_path_s"].sum() + ran["encode_s"].sum())
    return {
        "forwards": int(ran["episodes_run"].sum()),
        "per_forward": inside / forwards,
        "model": model / forwards,
        "harness": max(inside - model, 0.0) / forwards,
        "cells_s": inside,
    }


def harness_by_variant(cells: pd.DataFrame) -> dict[str, dict[str, float]]:
    """:func:`harness_split` of each variant's cells that ran (all its folds and shots), by variant
    name in the order the cells came."""
    ran = cells[cells["status"] == "run"]
    return {str(v): harness_split(ran[ran["variant"] == v]) for v in dict.fromkeys(ran["variant"])}


def measure_footprint(study: Study, work_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run ``study`` once with a cold feature cache in a throwaway folder under ``work_dir`` (made if
    missing; the system temp folder if None) and measure it (module docstring)."""
    from benchmark.jobs.run import RunJob

    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fssbench-footprint-", dir=work_dir) as tmp:
        work = Path(tmp)
        db = work / "mlflow.db"
        job = RunJob(
            study,
            tracking_uri=f"sqlite:///{db}",
            work_dir=work / "runs",
            cache_dir=work / "cache",
            progress=progress,
            log=lambda *a, **k: None,
        )
        t0 = time.perf_counter()
        with PeakRSS() as rss:
            cells = job.run()
        seconds = time.perf_counter() - t0
        artifacts_bytes, artifacts_files = folder_bytes(work / "mlartifacts")
        cache = [
            {
                "encoder": u.encoder,
                "images": u.files,
                "bytes_per_image": u.bytes / u.files if u.files else 0.0,
            }
            for u in cache_info(work / "cache")
        ]
        journal_bytes, journals = folder_bytes(work / "runs")
        return {
            "seconds": seconds,
            "cells": len(cells),
            "failed": len(job.failures),
            "rss_start": rss.start,
            "rss_peak": rss.peak,
            "split": harness_split(cells),
            "by_variant": harness_by_variant(cells),
            "cache": cache,
            "cache_dtype": study.cache.dtype,
            "store_bytes": db.stat().st_size,
            "store": store_counts(db),
            "artifacts_bytes": artifacts_bytes,
            "artifacts": artifacts_files,
            "work_bytes": journal_bytes,
            "work_files": journals,
        }


def print_footprint(study: Study, r: dict[str, Any]) -> None:
    import platform

    import torch

    if study.random_init:
        print("RANDOM-INIT WEIGHTS (timing only)")
    s, st = r["split"], r["store"]
    print(
        f"study {study.name!r}: {r['cells']} cells ({r['failed']} failed), {s['forwards']} episode-variant "
        f"forwards, once with a cold feature cache; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, cuda={torch.cuda.is_available()}"
    )
    print(f"wall time: {r['seconds']:.1f} s (cells {s['cells_s']:.1f} s)")
    print(f"peak RSS: {r['rss_peak'] / 2**20:.0f} MiB (at start {r['rss_start'] / 2**20:.0f} MiB)")
    print(
        f"harness per episode: {s['harness'] * 1e3:.2f} ms of the {s['per_forward'] * 1e3:.2f} ms per "
        f"episode-variant (model: episode path and encoders {s['model'] * 1e3:.2f} ms)"
    )
    for variant, v in r.get("by_variant", {}).items():
        print(
            f"  {variant}: harness {v['harness'] * 1e3:.2f} ms, model {v['model'] * 1e3:.2f} ms per "
            f"episode-variant ({v['forwards']} episode-variants)"
        )
    for c in r["cache"]:
        print(
            f"feature cache ({r['cache_dtype']}): {c['bytes_per_image'] / 2**20:.2f} MiB per image, "
            f"{c['images']} images: {c['encoder']}"
        )
    print(
        f"tracking store: {r['store_bytes'] / 2**20:.1f} MiB SQLite, {st['runs']} runs, {st['params']} params, "
        f"{st['metrics']} metrics ({st['metric_points']} points), {st['tags']} tags; artifacts "
        f"{r['artifacts_bytes'] / 2**20:.1f} MiB in {r['artifacts']} files; work folder (journals, "
        f"manifests, cell folders) {r['work_bytes'] / 2**20:.1f} MiB in {r['work_files']} files"
    )


def cache_bytes_per_image(
    study: Study, work_dir: Path | None = None, dtypes: tuple[str, ...] = ("fp32", "bf16")
) -> pd.DataFrame:
    """Bytes the feature cache stores per image for each cacheable encoder identity of the study's
    variants, in each storage dtype: one image (the first episode's query) through every distinct
    encoder, into a throwaway cache, and the files measured. Columns: encoder (the identity as
    ``fssbench cache info`` describes it), variants (that use it), and one MiB-per-image column per
    dtype."""
    from benchmark.data.prepared import PreparedDataset
    from benchmark.device import resolve_device
    from benchmark.episodes.manifest import load_manifest
    from benchmark.evaluation.feature_cache import FeatureCache, identity_hash
    from benchmark.evaluation.features import Featurizer
    from benchmark.evaluation.loader import ImageStore, load_episode, method_image_resize
    from benchmark.methods import WeightPool, build_method
    from benchmark.plan import study_manifests

    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fssbench-cache-bytes-", dir=work_dir) as tmp:
        work = Path(tmp)
        (ds, fold, shot, _), path = next(iter(study_manifests(study, work).items()))
        manifest = load_manifest(path)
        store = ImageStore(PreparedDataset(study.data[ds]))
        episode = manifest.episodes[0]
        pool = WeightPool()
        users: dict[str, list[str]] = {}  # identity hash -> variants
        sizes: dict[str, dict[str, float]] = {}  # identity hash -> {"encoder": ..., dtype: MiB}
        for v in study.variants:
            method = build_method(v.method, v.cell_settings(ds, fold, shot), resolve_device(v.device), pool)
            data = load_episode(
                store, manifest.images, episode, method.image_size, None, method_image_resize(method)
            )
            for dtype in dtypes:
                folder = work / f"cache-{dtype}"
                feat = Featurizer(method, FeatureCache(folder, memory_bytes=0), dtype=dtype)
                for name, ident in feat.identities.items():
                    if not getattr(feat.encoders[name], "cacheable", True):
                        continue
                    key = identity_hash({k: x for k, x in ident.items() if k != "storage"})
                    if dtype == dtypes[0]:
                        users.setdefault(key, []).append(v.name)
                    if dtype in sizes.get(key, {}):
                        continue
                    before = folder_bytes(folder)[0]
                    one = Featurizer(method, feat.cache, dtype=dtype)
                    one.encoders = {name: feat.encoders[name]}
                    one.identities = {name: ident}
                    role = "query" if feat.applies(name, "query") else "support"
                    one.encode([data.query], role)
                    entry = sizes.setdefault(key, {"encoder": _describe_identity(ident)})
                    entry[dtype] = (folder_bytes(folder)[0] - before) / 2**20
        rows = [
            {"encoder": s["encoder"], "variants": ", ".join(users[k]), **{d: s[d] for d in dtypes}}
            for k, s in sizes.items()
        ]
    return pd.DataFrame(rows, columns=["encoder", "variants", *dtypes])


def _describe_identity(identity: dict) -> str:
    """``sam2-2.0-s, image 512`` or ``dinov2-vitb14, image 512, input 560``: the encoder and its sizes."""
    parts = [str(identity.get("encoder", "?"))]
    size = identity.get("image_size", identity.get("frame", (identity.get("loader") or {}).get("image_size")))
    if size is not None:
        parts.append(f"image {size}")
    if "input_size" in identity:
        parts.append(f"input {identity['input_size']}")
    resize = (identity.get("loader") or {}).get("resize")
    if resize:
        parts.append(f"resize {resize}")
    return ", ".join(parts)
