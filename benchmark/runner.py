"""``fssbench run``: every cell (variant x dataset x fold x shot x seed) of a study, resumable.

A cell is an idempotent unit keyed by the SHA-256 of (method and resolved switches, manifest hash,
weight hashes, effective precision, code version). A cell whose key has a FINISHED MLflow run is
skipped; an interrupted cell resumes from its episode journal; ``force`` reruns.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from baselines.naive_sam2 import NaiveSAM2
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes import build_manifest, load_manifest, manifest_episodes, save_manifest
from benchmark.errors import FssBenchError
from benchmark.feature_cache import FeatureCache
from benchmark.harness import (
    CellJournal,
    Featurizer,
    ImageStore,
    episode_inputs,
    predict_episode,
    run_episodes,
)
from benchmark.io_utils import canonical_json, write_text_atomic
from benchmark.metrics import bootstrap_ci, prediction_at_label_size, summarize
from benchmark.study import CHECKPOINT_FIELDS, Study, Variant
from benchmark.tracking import CELL_KEY_TAG, Tracker, flat_params, git_commit, package_versions
from fssam.dinov2 import build_dinov2
from fssam.model import FSSAM
from fssam.sam2_adapter import build_sam2_model

CODE_PATHS = (
    "fssam",
    "baselines",
    "benchmark/metrics.py",
    "benchmark/harness.py",
    "benchmark/data/episode_data.py",
)


def code_hash() -> str:
    """SHA-256 of the source that determines a cell's numbers (models, metrics, episode loading)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in CODE_PATHS:
        p = root / rel
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FssBenchError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return dev


@dataclass(frozen=True)
class Cell:
    variant: Variant
    dataset: str
    fold: int
    shot: int
    seed: int
    manifest_path: Path

    @property
    def name(self) -> str:
        return f"{self.variant.name}/{self.dataset}/fold{self.fold}/{self.shot}shot/seed{self.seed}"


class ModelPool:
    """Builds each distinct set of weights once and shares it between variants (switches only wrap)."""

    def __init__(self) -> None:
        self._sam2: dict[tuple, Any] = {}
        self._dino: dict[tuple, Any] = {}
        self._authors: dict[str, FSSAM] = {}

    def get(self, variant: Variant, dataset: str, fold: int, shot: int) -> Any:
        s, cfg = variant.settings, variant.fssam_config()
        device = resolve_device(str(s.get("device", "auto")))
        ckpt = variant.checkpoint_for(dataset, fold, shot)
        if ckpt is not None:
            if ckpt not in self._authors:
                if len(self._authors) >= 2:  # bound memory: fine-tuned weights differ per fold and shot
                    self._authors.pop(next(iter(self._authors)))
                sam2_config = f"sam2{'.1' if cfg.sam2_version == '2.1' else ''}_hiera_{cfg.sam2_size}"
                self._authors[ckpt] = FSSAM.from_authors_checkpoint(
                    ckpt, sam2_config=sam2_config, image_size=cfg.image_size, dinov2=cfg.dinov2,
                    dinov2_input_size=cfg.dinov2_input_size,
                )  # fmt: skip
            base = self._authors[ckpt]
            return FSSAM(cfg, sam2=base.sam2, dino=base.dino).to(device)
        skey = (
            cfg.sam2_version,
            cfg.sam2_size,
            cfg.image_size,
            cfg.sam2_checkpoint,
            cfg.random_init,
            cfg.seed,
        )
        if skey not in self._sam2:
            self._sam2[skey] = build_sam2_model(
                cfg.sam2_version, cfg.sam2_size, cfg.image_size, checkpoint=cfg.sam2_checkpoint,
                random_init=cfg.random_init, seed=cfg.seed,
            )  # fmt: skip
        sam = self._sam2[skey]
        if variant.method == "naive_sam2":
            return NaiveSAM2(cfg, sam2=sam).to(device)
        dino = None
        if cfg.needs_dinov2:
            dkey = (cfg.dinov2, cfg.dinov2_checkpoint, cfg.dinov2_input_size, cfg.random_init, cfg.seed)
            if dkey not in self._dino:
                self._dino[dkey] = build_dinov2(
                    cfg.dinov2, checkpoint=cfg.dinov2_checkpoint, random_init=cfg.random_init,
                    input_size=cfg.dinov2_input_size, seed=cfg.seed + 1,
                )  # fmt: skip
            dino = self._dino[dkey]
        return FSSAM(cfg, sam2=sam, dino=dino).to(device)


def effective_precision(precision: str, device: torch.device) -> str:
    return "bf16" if device.type == "cuda" and precision in ("auto", "bf16") else "fp32"


def cell_key(cell: Cell, manifest_sha: str, weights: dict[str, str], device: torch.device, code: str) -> str:
    settings = {
        k: v for k, v in cell.variant.settings.items() if k not in (*CHECKPOINT_FIELDS, "device", "precision")
    }
    body = {
        "method": cell.variant.method,
        "settings": settings,
        "precision": effective_precision(str(cell.variant.settings.get("precision", "auto")), device),
        "manifest": manifest_sha,
        "weights": weights,
        "code": code,
    }
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _peak_memory_mb(run_peak: int | None) -> tuple[float, str]:
    if run_peak is not None:
        return run_peak / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_max_rss"


class StudyRunner:
    def __init__(
        self,
        study: Study,
        tracking_uri: str | None = None,
        work_dir: Path = Path("fssbench-runs"),
        force: bool = False,
        use_cache: bool = True,
        cache_dir: Path | None = None,
        progress: bool = True,
        shard: tuple[int, int] = (0, 1),
        qualitative: int = 3,
        memory_cache_bytes: int = 2 << 30,
    ):
        self.study, self.force, self.progress, self.shard, self.qualitative = (
            study,
            force,
            progress,
            shard,
            qualitative,
        )
        self.work_dir = Path(work_dir).absolute()
        self.tracking_uri = tracking_uri
        cache_dir = cache_dir or self.work_dir / "feature-cache"
        self.cache = FeatureCache(cache_dir, memory_bytes=memory_cache_bytes, enabled=use_cache)
        self.pool = ModelPool()
        self.code = code_hash()
        self.results: list[dict[str, Any]] = []
        self.log = print

    # ---------------------------------------------------------------------------------- manifests
    def build_manifests(self) -> dict[tuple, Path]:
        """All manifests of the study, built (and validated) before any model work."""
        s, out = self.study, {}
        for ds, root in s.data.items():
            for fold in s.folds:
                for shot in s.shots:
                    for seed in s.seeds:
                        m = build_manifest(
                            root, fold, shot, s.protocol, seed, s.episodes, "test", s.split, ds
                        )
                        split = f"-{s.split}" if ds == "coco" else ""
                        path = (
                            self.work_dir
                            / "manifests"
                            / (
                                f"{ds}{split}-fold{fold}-{shot}shot-{s.protocol}-seed{seed}-n{m['num_episodes']}.json"
                            )
                        )
                        if not path.exists() or load_manifest(path)["sha256"] != m["sha256"]:
                            save_manifest(m, path)
                        out[(ds, fold, shot, seed)] = path
        return out

    def cells(self, manifests: dict[tuple, Path]) -> list[Cell]:
        cells = [
            Cell(v, ds, fold, shot, seed, path)
            for (ds, fold, shot, seed), path in manifests.items()
            for v in self.study.variants
        ]
        i, n = self.shard
        return [c for k, c in enumerate(cells) if k % n == i]

    # ---------------------------------------------------------------------------------------- run
    def run(self) -> pd.DataFrame:
        study = self.study
        manifests = self.build_manifests()
        cells = self.cells(manifests)
        tracker = Tracker(self.tracking_uri)
        exp = tracker.experiment_id(study.name)
        if study.random_init:
            self.log(
                "WARNING: RANDOM-INIT WEIGHTS in this study (tagged fss.random_init=true): numbers check the pipeline only"
            )
        parent = tracker.start_parent(
            exp,
            run_name=f"{study.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={
                "fss.study": study.name,
                "fss.random_init": str(study.random_init).lower(),
                "fss.git_commit": git_commit(),
                "fss.versions": json.dumps(package_versions()),
                "fss.study_file": study.source,
            },  # fmt: skip
            params=flat_params("study.", {k: v for k, v in study.raw.items() if k != "variants"})
            | {"study.variants": ",".join(v.name for v in study.variants), "study.cells": len(cells)},
        )
        self.tracker, self.experiment, self.parent = tracker, exp, parent
        status = "FAILED"
        try:
            bar = tqdm(cells, desc=f"study {study.name}", unit="cell", disable=not self.progress)
            for cell in bar:
                bar.set_postfix_str(cell.name)
                self.results.append(self.run_cell(cell))
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            tracker.end_run(parent, status)
        table = pd.DataFrame(self.results)
        out = self.work_dir / "studies" / study.name
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "cells.csv", table.to_csv(index=False))
        return table

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        manifest = load_manifest(cell.manifest_path)
        model = self.pool.get(cell.variant, cell.dataset, cell.fold, cell.shot)
        device = model.sam2.device
        weights = model.weight_hashes()
        key = cell_key(cell, manifest["sha256"], weights, device, self.code)
        row = {"variant": cell.variant.name, "method": cell.variant.method, "dataset": cell.dataset,
               "fold": cell.fold, "shot": cell.shot, "seed": cell.seed, "cell_key": key}  # fmt: skip
        cell_dir = self.work_dir / "cells" / key[:20]
        if self.force:
            shutil.rmtree(cell_dir, ignore_errors=True)
            for r in self.tracker.cell_runs(self.experiment, key):
                self.tracker.client.delete_run(r.info.run_id)
        else:
            done = self.tracker.finished_cell(self.experiment, key)
            if done is not None:
                m = done.data.metrics
                return row | {"mIoU": m.get("miou"), "FB-IoU": m.get("fb_iou"), "status": "skipped (done)",
                              "run_id": done.info.run_id}  # fmt: skip
        ds = PreparedDataset(self.study.data[cell.dataset])
        feat = Featurizer(model, self.cache, ImageStore(ds), model.config.image_size)
        journal = CellJournal(cell_dir / "episodes.jsonl")
        try:
            run = run_episodes(model, manifest, feat, journal, progress=self.progress, desc=cell.name)
        finally:
            journal.close()
        table = run.table
        if len(table) != manifest["num_episodes"]:
            raise FssBenchError(f"{cell.name}: {len(table)} of {manifest['num_episodes']} episodes recorded")
        classes = manifest["classes"]
        summary = summarize(table, classes)
        ci = bootstrap_ci(table, classes, metric="miou")
        peak_mb, peak_kind = _peak_memory_mb(run.peak_memory_bytes)
        metrics = {"miou": summary["miou"], "fb_iou": summary["fb_iou"], "fg_iou": summary["fg_iou"],
                   "miou_ci_low": ci["low"], "miou_ci_high": ci["high"], "peak_mem_mb": peak_mb,
                   "episodes": float(len(table))}  # fmt: skip
        metrics |= {f"iou_class_{c}": v for c, v in summary["class_iou"].items()}
        if run.episodes_run:
            metrics["episodes_per_s"] = run.episodes_run / max(run.seconds, 1e-9)
        artifacts = self._write_artifacts(cell, cell_dir, model, manifest, feat, table, summary, key)
        resolved = {"method": cell.variant.method, **cell.variant.settings, "dataset": cell.dataset,
                    "data_root": str(self.study.data[cell.dataset]), "fold": cell.fold, "shot": cell.shot,
                    "seed": cell.seed, "protocol": self.study.protocol, "episodes": manifest["num_episodes"],
                    "split": manifest["class_split"], "device": str(device),
                    "precision_effective": effective_precision(str(cell.variant.settings.get("precision", "auto")), device)}  # fmt: skip
        tags = {
            CELL_KEY_TAG: key, "fss.variant": cell.variant.name, "fss.method": cell.variant.method,
            "fss.dataset": cell.dataset, "fss.fold": str(cell.fold), "fss.shot": str(cell.shot),
            "fss.seed": str(cell.seed), "fss.manifest_sha256": manifest["sha256"], "fss.study": self.study.name,
            "fss.random_init": str(bool(model.random_init)).lower(), "fss.git_commit": git_commit(),
            "fss.versions": json.dumps(package_versions()), "fss.device": str(device), "fss.code_sha256": self.code,
            "fss.peak_mem_kind": peak_kind,
            **{f"fss.weights.{k}": v for k, v in weights.items()},
        }  # fmt: skip
        rid = self.tracker.log_cell(self.experiment, self.parent, cell.name, flat_params("", resolved), tags, metrics,
                                    artifacts)  # fmt: skip
        return row | {"mIoU": summary["miou"], "FB-IoU": summary["fb_iou"], "status": "run", "run_id": rid,
                      "episodes_run": run.episodes_run, "seconds": run.seconds,
                      "episodes_per_s": metrics.get("episodes_per_s"), "peak_mem_mb": peak_mb}  # fmt: skip

    def _write_artifacts(
        self, cell, cell_dir, model, manifest, feat, table, summary, key
    ) -> list[tuple[Path, str | None]]:
        art = cell_dir / "artifacts"
        shutil.rmtree(art, ignore_errors=True)
        art.mkdir(parents=True)
        table.to_parquet(art / "episodes.parquet", index=False)
        per_class = pd.DataFrame({"class": list(summary["class_iou"]), "iou": list(summary["class_iou"].values()),
                                  "episodes": [summary["episodes_per_class"].get(c, 0) for c in summary["class_iou"]]})  # fmt: skip
        per_class.to_csv(art / "per_class.csv", index=False)
        config = {"cell": cell.name, "cell_key": key, "method": cell.variant.method, "settings": cell.variant.settings,
                  "manifest": str(cell.manifest_path), "manifest_sha256": manifest["sha256"],
                  "classes": manifest["classes"], "class_split": manifest["class_split"],
                  "weights": model.weight_hashes(), "code_sha256": self.code}  # fmt: skip
        (art / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        out = [(art / "episodes.parquet", None), (art / "per_class.csv", None), (art / "config.json", None)]
        if self.qualitative:
            out += [
                (p, "qualitative")
                for p in self._qualitative(cell, model, manifest, feat, table, art / "qualitative")
            ]
        return out

    def _qualitative(self, cell, model, manifest, feat, table, folder: Path) -> list[Path]:
        from reports.qualitative import save_episode_overlay

        iou = table["I_fg"] / table["U_fg"].where(table["U_fg"] > 0, 1)
        order = np.argsort(iou.to_numpy(), kind="stable")
        picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
        episodes = {e.id: e for e in manifest_episodes(manifest)}
        paths = []
        for label, idx in list(picks.items())[: self.qualitative]:
            ep = episodes[int(table["episode"].iloc[idx])]
            inp = episode_inputs(ep, manifest["images"], feat)
            logits = predict_episode(model, inp)
            pred = prediction_at_label_size(logits[0].float().cpu(), inp.target.shape).numpy()
            q_img = feat.store.image(manifest["images"][ep.query][0])
            s_rel = manifest["images"][ep.supports[0]]
            s_img, s_mask = feat.store.image(s_rel[0]), feat.store.label(s_rel[1])
            title = f"{cell.name} episode {ep.id} ({label}) IoU {100 * float(iou.iloc[idx]):.1f}"
            if model.random_init:
                title = "RANDOM-INIT " + title
            s_target = (s_mask == ep.cls).astype(np.uint8)
            paths.append(save_episode_overlay(folder / f"{label}-ep{ep.id}.png", q_img, inp.target, pred, title,
                                              s_img, s_target))  # fmt: skip
        return paths


def summary_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean mIoU / FB-IoU (percent) per variant, dataset and shot, over folds and seeds."""
    if cells.empty:
        return cells
    g = cells.groupby(["dataset", "shot", "variant"], sort=False)
    out = g.agg(
        mIoU=("mIoU", "mean"), FB_IoU=("FB-IoU", "mean"), folds=("fold", "nunique"), cells=("fold", "size")
    )
    out[["mIoU", "FB_IoU"]] *= 100
    return out.reset_index().rename(columns={"FB_IoU": "FB-IoU"})
