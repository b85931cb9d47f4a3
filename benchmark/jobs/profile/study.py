"""``fssbench profile``: where a study's time goes, and what the caches buy, measured in one process.

The study runs three times, each with a fresh work folder and a throwaway SQLite tracking store (so
nothing is skipped and the user's MLflow store is untouched): without any cache (no feature cache,
no shared stages), with a cold cache and with the warm cache left by the second run. It prints,
per run, the encoder passes (checked against unique images x encoders on the cold cache), the
episode-variant forwards and the time split between encoding, the episode path, feature I/O,
waiting for decoded images and the rest (tracking, manifests, artifacts); the ratios of the whole
study without the cache to with it; the effect of compact cached features (fp16, bf16) on the
predictions; and the projected time of the full PASCAL-5i grid on this device.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from benchmark.data.prepared import PreparedDataset
from benchmark.device import resolve_device
from benchmark.episodes.manifest import load_manifest
from benchmark.evaluation.cell import CellSpec
from benchmark.evaluation.feature_cache import FeatureCache, identity_hash
from benchmark.evaluation.features import Featurizer
from benchmark.evaluation.loader import ImageStore, load_episode, method_image_resize
from benchmark.evaluation.metrics import prediction_at_label_size
from benchmark.evaluation.predict import predict_batch
from benchmark.jobs.run import StudyRunner
from benchmark.methods import WeightPool, build_method
from benchmark.specs.study import Study

RUNS = (("no cache", False), ("cold cache", True), ("warm cache", True))
PASCAL_GRID = {"variants": 8, "folds": 4, "shots": 2, "episodes": 1000, "unique_images": 1449}
"""The paper's PASCAL-5i grid: FSSAM + naive SAM 2 + 6 ablations, 4 folds, 1 and 5 shots, 1000
episodes per cell; the test episodes draw from VOC2012 val's 1,449 images."""


def _timed_run(
    study: Study, work: Path, cache_dir: Path, use_cache: bool, progress: bool, compile: bool = False
) -> dict[str, Any]:
    runner = StudyRunner(
        study,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        work_dir=work,
        use_cache=use_cache,
        cache_dir=cache_dir,
        progress=progress,
        qualitative=0,
        log=lambda *a, **k: None,
        compile=compile,
    )
    t0 = time.perf_counter()
    cells = runner.run()
    return {
        "seconds": time.perf_counter() - t0,
        "cells": cells,
        "cache": runner.cache.stats.summary(),
        "stages": runner.stages.summary() if runner.stages is not None else "shared stages: off",
        "runner": runner,
    }


def expected_encoder_passes(runner: StudyRunner) -> dict[str, int]:
    """Unique (encoder identity, image) pairs over the study's cells (``passes``: what a cold cache
    must encode), unique images and distinct encoders, counted from the manifests and the methods'
    identities, independently of the run's counters."""
    pairs, shas = set(), set()
    hashes: dict[Path, dict[str, set[str]]] = {}  # manifest -> role -> sha256 of its images, once
    for cell in runner.cells(runner.build_manifests()):
        spec = cell.spec
        if spec.manifest_path not in hashes:
            manifest = load_manifest(spec.manifest_path)
            store = ImageStore(PreparedDataset(spec.data_root))
            roles = {
                "query": {manifest.images[e.query][0] for e in manifest.episodes},
                "support": {manifest.images[i][0] for e in manifest.episodes for i in e.supports},
            }
            hashes[spec.manifest_path] = {r: {store.sha256(rel) for rel in v} for r, v in roles.items()}
        method = build_method(spec.method, dict(spec.settings), resolve_device(spec.device), runner.pool)
        feat = Featurizer(method, FeatureCache(None), dtype=spec.feature_dtype)
        by_role = hashes[spec.manifest_path]
        for name, ident in feat.identities.items():
            if getattr(feat.encoders[name], "cacheable", True):
                for role, role_shas in by_role.items():
                    if feat.applies(name, role):
                        pairs |= {(identity_hash(ident), sha) for sha in role_shas}
        shas |= by_role["query"] | by_role["support"]
    return {"passes": len(pairs), "images": len(shas), "encoders": len({i for i, _ in pairs})}


def _split(run: dict[str, Any]) -> dict[str, float]:
    c = run["cells"]
    ran = c[c["status"] == "run"]
    parts = {
        "encode": ran["encode_s"].sum(),
        "episode path": ran["episode_path_s"].sum(),
        "feature I/O": ran["feature_io_s"].sum(),
        "decode wait": ran["load_wait_s"].sum(),
    }
    parts["other (tracking, manifests, I/O)"] = max(run["seconds"] - sum(parts.values()), 0.0)
    return parts


def dtype_effect(study: Study, pool: WeightPool, work: Path, episodes: int = 8) -> pd.DataFrame:
    """Per variant and compact dtype: max |logit - fp32 logit| and the share of query pixels (at label
    size) whose mask agrees with fp32's, on the first ``episodes`` episodes of the first manifest."""
    from benchmark.plan import study_manifests

    manifests = study_manifests(study, work)
    (ds, *_), path = next(iter(manifests.items()))
    manifest = load_manifest(path)
    store = ImageStore(PreparedDataset(study.data[ds]))
    rows = []
    for v in study.variants:
        spec = CellSpec(
            v.method, v.cell_settings(ds, study.folds[0], study.shots[0]), path, study.data[ds], v.device
        )
        method = build_method(spec.method, dict(spec.settings), resolve_device(spec.device), pool)
        threshold = float(spec.settings.get("threshold", 0.5))
        datas = [
            load_episode(
                store, manifest.images, e, method.image_size, manifest.evaluation, method_image_resize(method)
            )
            for e in manifest.episodes[:episodes]
        ]
        ref = predict_batch(method, Featurizer(method, FeatureCache(None)), datas).float().cpu()
        for dtype in ("fp16", "bf16"):
            got = (
                predict_batch(method, Featurizer(method, FeatureCache(None), dtype=dtype), datas)
                .float()
                .cpu()
            )
            agree = total = 0
            for j, d in enumerate(datas):
                a = prediction_at_label_size(ref[j], d.scored.shape, threshold)
                b = prediction_at_label_size(got[j], d.scored.shape, threshold)
                agree += int((a == b).sum())
                total += a.numel()
            rows.append(
                {
                    "variant": v.name,
                    "dtype": dtype,
                    "max |logit diff|": float((got - ref).abs().max()),
                    "mask agreement %": 100 * agree / total,
                }
            )
    return pd.DataFrame(rows)


def project_grid(cold: dict[str, Any], warm: dict[str, Any], encoders: int) -> dict[str, float]:
    """Seconds for the full PASCAL-5i grid on this device, from the measured per-stage times (not
    the whole study's wall time, which includes creating the throwaway store, manifests and the
    model builds: a fixed cost that does not grow with the grid): every unique image through each
    encoder once (cold-run seconds per encoder pass) plus every episode-variant forward at the warm
    run's cost per forward inside the cell function (episode path, feature I/O, decode waits,
    scoring and journal). ``harness_per_forward_s``: that cost less the method's own episode path
    and its encoders; ``harness_share``: its part of a forward. ``setup_s``: the warm run's time
    outside the cells (not projected). Costs 5-shot cells at this study's per-forward time unless
    the study measured them."""
    cc = cold["cells"][cold["cells"]["status"] == "run"]
    wc = warm["cells"][warm["cells"]["status"] == "run"]
    passes = cc["encoder_passes"].sum()
    per_pass = cc["encode_s"].sum() / passes if passes else 0.0
    forwards_run = max(int(wc["episodes_run"].sum()), 1)
    in_cells = float(wc["seconds"].sum())
    per_forward = in_cells / forwards_run
    model = float(wc["episode_path_s"].sum() + wc["encode_s"].sum())
    harness = max(in_cells - model, 0.0) / forwards_run
    g = PASCAL_GRID
    forwards = g["variants"] * g["folds"] * g["shots"] * g["episodes"]
    encode = g["unique_images"] * encoders * per_pass
    return {
        "forwards": forwards,
        "per_forward_s": per_forward,
        "harness_per_forward_s": harness,
        "harness_share": harness / per_forward if per_forward else 0.0,
        "setup_s": max(float(warm["seconds"]) - in_cells, 0.0),
        "per_pass_s": per_pass,
        "encode_s": encode,
        "total_s": encode + forwards * per_forward,
        "model_s": encode + forwards * (per_forward - harness),  # encoders and episode paths
        "harness_s": forwards * harness,  # loading, decode waits, feature I/O, scoring, journals
    }


def profile_study(
    study: Study,
    work_dir: Path | None = None,
    progress: bool = True,
    dtype_episodes: int = 8,
    compile: bool = False,
) -> dict:
    """Run the study without cache, with a cold cache and with a warm cache; return the figures."""
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)  # a new --work-dir is made, not refused
    with tempfile.TemporaryDirectory(prefix="fssbench-profile-", dir=work_dir) as tmp:
        tmp = Path(tmp)
        cache_dir = tmp / "cache"
        runs = {}
        for label, use_cache in RUNS:
            work = tmp / label.replace(" ", "-")
            work.mkdir()
            runs[label] = _timed_run(study, work, cache_dir, use_cache, progress, compile)
        cold_runner = runs["cold cache"]["runner"]
        expected = expected_encoder_passes(cold_runner)
        effect = (
            dtype_effect(study, cold_runner.pool, tmp / "dtype", dtype_episodes) if dtype_episodes else None
        )
    per_variant = []
    for label, r in runs.items():
        for variant, df in r["cells"].groupby("variant", sort=False):
            per_variant.append(
                {
                    "variant": variant,
                    "run": label,
                    "episodes/s": df["episodes_run"].sum() / df["seconds"].sum(),
                    "peak MiB": df["peak_mem_mb"].max(),
                }
            )
    table = pd.DataFrame(per_variant).pivot(index="variant", columns="run", values="episodes/s")
    table = table.loc[[v.name for v in study.variants], [label for label, _ in RUNS]].reset_index()
    peak = pd.DataFrame(per_variant).groupby("variant", sort=False)["peak MiB"].max()
    table["peak MiB"] = table["variant"].map(peak)
    t = {label: r["seconds"] for label, r in runs.items()}
    first = runs["no cache"]["cells"]
    return {
        "per_variant": table,
        "seconds": t,
        "ratio_cold": t["no cache"] / t["cold cache"],
        "ratio_warm": t["no cache"] / t["warm cache"],
        "cache_stats": {label: r["cache"] for label, r in runs.items()},
        "stage_stats": {label: r["stages"] for label, r in runs.items()},
        "cells": len(first),
        "unique_images": expected["images"],
        "episodes": int(first["episodes_run"].sum()),
        "encoder_passes": {label: int(r["cells"]["encoder_passes"].sum()) for label, r in runs.items()},
        "expected_cold_passes": expected["passes"],
        "split": {label: _split(r) for label, r in runs.items()},
        "dtype_effect": effect,
        "grid": project_grid(runs["cold cache"], runs["warm cache"], expected["encoders"]),
        "batch_size": study.batch_size,
    }


def print_profile(study: Study, r: dict) -> None:
    import platform

    if study.random_init:
        print("RANDOM-INIT WEIGHTS (timing only)")
    print(
        f"study {study.name!r}: {r['cells']} cells, {r['unique_images']} unique images, "
        f"{r['episodes']} episode-variant forwards per run, "
        f"batch size {r['batch_size']}; {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"cuda={torch.cuda.is_available()}"
    )
    print()
    print(r["per_variant"].to_markdown(index=False, floatfmt=".2f"))
    print()
    cold = r["encoder_passes"]["cold cache"]
    check = "equal" if cold == r["expected_cold_passes"] else "DIFFERENT"
    print(
        f"encoder passes: no cache {r['encoder_passes']['no cache']}, cold cache {cold} "
        f"(unique images x encoders: {r['expected_cold_passes']}, {check}), warm cache {r['encoder_passes']['warm cache']}"
    )
    split = pd.DataFrame(r["split"]).T
    split.insert(0, "whole study", pd.Series(r["seconds"]))
    print()
    print("seconds per run:")
    print(split.to_markdown(floatfmt=".1f"))
    print()
    for label in r["seconds"]:
        print(f"  {label:10s}: {r['cache_stats'][label]}; {r['stage_stats'][label]}")
    print(f"  ratio no cache / cold cache: {r['ratio_cold']:.1f}x")
    print(f"  ratio no cache / warm cache: {r['ratio_warm']:.1f}x")
    if r["dtype_effect"] is not None:
        print()
        print("compact cached features (cache.dtype) against fp32, on the first manifest:")
        print(r["dtype_effect"].to_markdown(index=False, floatfmt=".3g"))
    g = r["grid"]
    shots = (
        "5-shot forwards measured"
        if 5 in study.shots
        else "5-shot forwards costed at this study's per-forward time"
    )
    print()
    print(
        f"projected full PASCAL-5i grid on this device ({g['forwards']} episode-variant forwards at "
        f"{g['per_forward_s'] * 1e3:.1f} ms, {PASCAL_GRID['unique_images']} images x encoders at "
        f"{g['per_pass_s'] * 1e3:.1f} ms per pass; this study's model sizes; {shots}): "
        f"{g['total_s'] / 60:.1f} min: the model (encoders and episode paths) {g['model_s'] / 60:.1f} min, "
        f"the harness {g['harness_s'] / 60:.1f} min"
    )
    print(
        f"harness per episode: {g['harness_per_forward_s'] * 1e3:.2f} ms of the {g['per_forward_s'] * 1e3:.1f} ms "
        f"({100 * g['harness_share']:.0f} %: feature I/O, decode waits, scoring, journal; the rest is the "
        f"method's episode path and encoders); fixed set-up outside the cells {g['setup_s']:.1f} s, not projected"
    )
