"""The Episodes view's data: every episode of a study's manifests, each variant's IoU and stored
prediction, the ground truth and thumbnails, as one JSON-able dict (the page embeds it).

Layout of :func:`explorer_data`'s dict (lists, not dicts of dicts, to keep the page small):

- ``variants``: variant names (the table's IoU columns, in the study's order); ``reference``: the
  variant the page compares against by default (or None).
- ``groups``: one per manifest: ``[dataset, fold, shot, seed, protocol]``.
- ``classes``: ``{dataset: [name of class 1, ...]}``.
- ``thumbs``: JPEG data URIs, long side <= :data:`THUMB_SIDE` px, each distinct image once.
- ``masks``: ground-truth masks ``[H, W, counts]`` (COCO compressed RLE of the target's
  foreground), each distinct (label, class, scoring) once: the query's at the scored size (the
  prediction's size; HSNet's 400 x 400 square), the supports' at their label's size.
- ``episodes``: ``[group, episode id, class, query id, [support ids], query thumb, [support
  thumbs], query mask, [support masks], [IoU per variant], [prediction per variant]]``; an IoU is
  ``I_fg / U_fg`` of the run's ``episodes.parquet`` (0 where U_fg is 0) or None where the variant
  has no run on that manifest; a prediction is ``[H, W, counts]`` or None (no predictions stored);
  a thumb or mask index is -1 where the data root is not available here.
- ``notes``: what the page cannot show, in words.
"""

from __future__ import annotations

import base64
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from benchmark.data.classes import class_names
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes.manifest import Manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.loader import ImageStore
from benchmark.evaluation.metrics import episode_iou
from benchmark.evaluation.predictions import mask_to_rle
from benchmark.records.tracking import Tracker
from reports.collect import ExperimentData

THUMB_SIDE = 192
"""Thumbnails' longer side in pixels (the overlays are drawn at the mask's own size over them)."""
THUMB_QUALITY = 70
"""JPEG quality of the thumbnails."""


@dataclass
class _Tables:
    """What the page's JSON is built up from (indices into ``thumbs`` and ``masks``)."""

    thumbs: list[str] = field(default_factory=list)
    thumb_index: dict[tuple[str, str], int] = field(default_factory=dict)
    masks: list[list[Any]] = field(default_factory=list)
    mask_index: dict[tuple, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def thumbnail_uri(image: np.ndarray, side: int = THUMB_SIDE, quality: int = THUMB_QUALITY) -> str:
    """(H, W, 3) uint8 RGB -> a JPEG data URI whose longer side is at most ``side`` px."""
    im = Image.fromarray(np.ascontiguousarray(image))
    scale = min(1.0, side / max(im.size))
    if scale < 1.0:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _rle_entry(mask: np.ndarray) -> list[Any]:
    rle = mask_to_rle(mask)
    return [rle["size"][0], rle["size"][1], rle["counts"]]


def _thumb(tables: _Tables, store: ImageStore, root: str, rel: str) -> int:
    key = (root, rel)
    if key not in tables.thumb_index:
        uri = thumbnail_uri(store.image(rel))  # first: an image that fails to read gets no index
        tables.thumb_index[key] = len(tables.thumbs)
        tables.thumbs.append(uri)
    return tables.thumb_index[key]


def _mask(tables: _Tables, store: ImageStore, root: str, rel: str, cls: int, evaluation) -> int:
    """Index of the foreground of ``rel``'s target for ``cls``: scored (``evaluation``) or, with
    None, at the label's size."""
    how = None if evaluation is None else (evaluation.resolution, evaluation.size, evaluation.ignore)
    key = (root, rel, cls, how)
    if key not in tables.mask_index:
        target = store.target(rel, cls) if evaluation is None else store.scored(rel, cls, evaluation).target()
        tables.mask_index[key] = len(tables.masks)
        tables.masks.append(_rle_entry(target == 1))
    return tables.mask_index[key]


def _predictions(tracker: Tracker, run_id: str, download_dir: Path) -> dict[int, list[Any]] | None:
    """A run's ``predictions.parquet`` as episode id -> ``[H, W, counts]`` (None: the run stored
    none, e.g. it ran before predictions were stored)."""
    if "predictions.parquet" not in {a.path for a in tracker.client.list_artifacts(run_id)}:
        return None
    path = tracker.client.download_artifacts(run_id, "predictions.parquet", str(download_dir / run_id))
    t = pd.read_parquet(path)
    rows = zip(t["episode"], t["height"], t["width"], t["counts"], strict=True)
    return {int(e): [int(h), int(w), str(c)] for e, h, w, c in rows}


def _iou(table: pd.DataFrame) -> dict[int, float]:
    """Episode id -> ``I_fg / U_fg`` (0 where U_fg is 0), as the report's qualitative figure."""
    return dict(zip(table["episode"].astype(int).tolist(), episode_iou(table).tolist(), strict=True))


def _store_for(root: str, stores: dict[str, ImageStore | None]) -> ImageStore | None:
    if root not in stores:
        ok = bool(root) and (Path(root) / "dataset.json").is_file()
        stores[root] = ImageStore(PreparedDataset(Path(root))) if ok else None
    return stores[root]


def _group_episodes(
    manifest: Manifest,
    group: int,
    runs: dict[int, str],
    data: ExperimentData,
    preds: dict[str, dict[int, list[Any]] | None],
    store: ImageStore | None,
    root: str,
    tables: _Tables,
) -> list[list[Any]]:
    """The ``episodes`` rows of one manifest; ``runs``: variant index -> its run id there."""
    n_var = len(data.cells["variant"].unique())
    ious = {v: _iou(data.episodes[rid]) for v, rid in runs.items()}
    rows = []
    for ep in manifest.episodes:
        iou: list[float | None] = [None] * n_var
        pred: list[list[Any] | None] = [None] * n_var
        for v, rid in runs.items():
            iou[v] = ious[v].get(ep.id)
            p = preds.get(rid)
            if p is not None:
                pred[v] = p.get(ep.id)
        q_thumb, s_thumbs, q_mask, s_masks = -1, [-1] * len(ep.supports), -1, [-1] * len(ep.supports)
        if store is not None:
            images = manifest.images
            try:
                q_thumb = _thumb(tables, store, root, images[ep.query][0])
                s_thumbs = [_thumb(tables, store, root, images[s][0]) for s in ep.supports]
                q_mask = _mask(tables, store, root, images[ep.query][1], ep.cls, manifest.evaluation)
                s_masks = [_mask(tables, store, root, images[s][1], ep.cls, None) for s in ep.supports]
            except (FssBenchError, OSError, ValueError) as e:  # a missing or broken file: grey panels
                q_thumb, s_thumbs, q_mask, s_masks = -1, [-1] * len(ep.supports), -1, [-1] * len(ep.supports)
                note = f"{root}: episodes without thumbnails or ground truth ({e})"
                if note not in tables.notes:  # once per broken file, not once per episode
                    tables.notes.append(note)
        rows.append(
            [group, ep.id, ep.cls, ep.query, list(ep.supports), q_thumb, s_thumbs, q_mask, s_masks, iou, pred]
        )
    return rows


def explorer_data(data: ExperimentData, tracker: Tracker, reference: str | None) -> dict[str, Any]:
    """The Episodes view's JSON-able dict (module docstring) of every cell run of ``data``; runs
    are read from ``tracker`` (params, ``predictions.parquet``); manifests are rebuilt as the
    qualitative figure does (:func:`reports.episodes._manifest_for`)."""
    from reports.episodes import _manifest_for

    cells = data.cells
    variants = list(dict.fromkeys(cells["variant"]))
    tables = _Tables()
    groups: list[list[Any]] = []
    episodes: list[list[Any]] = []
    stores: dict[str, ImageStore | None] = {}
    missing_pred: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fssbench-explorer-") as tmp:
        preds = {rid: _predictions(tracker, rid, Path(tmp)) for rid in dict.fromkeys(cells["run_id"])}
        keys = ["dataset", "fold", "shot", "seed", "manifest_sha256"]
        for (ds, fold, shot, seed, _), sel in cells.groupby(keys, sort=True, dropna=False):
            runs = {variants.index(v): rid for v, rid in zip(sel["variant"], sel["run_id"], strict=True)}
            first = sel["run_id"].iloc[0]
            params = tracker.client.get_run(first).data.params
            try:
                manifest = _manifest_for(data, first, params)
            except (FssBenchError, KeyError, OSError, ValueError) as e:
                tables.notes.append(f"{ds} fold {fold} {shot}-shot seed {seed}: episodes not shown ({e})")
                continue
            root = str(params.get("data_root", ""))
            store = _store_for(root, stores)
            if store is None:
                tables.notes.append(
                    f"{ds} fold {fold} {shot}-shot seed {seed}: data root {root!r} is not available "
                    "here: no thumbnails or ground truth"
                )
            groups.append([ds, int(fold), int(shot), int(seed), str(params.get("protocol", ""))])
            episodes += _group_episodes(manifest, len(groups) - 1, runs, data, preds, store, root, tables)
            missing_pred += [
                f"{v} ({ds} fold {fold} {shot}-shot)"
                for v, r in zip(sel["variant"], sel["run_id"], strict=True)
                if preds[r] is None
            ]
    if missing_pred:
        tables.notes.append(
            "runs made before predictions were stored show their IoU but no overlay: "
            + ", ".join(missing_pred)
        )
    datasets = list(dict.fromkeys(g[0] for g in groups))
    return {
        "variants": variants,
        "reference": reference if reference in variants else None,
        "groups": groups,
        "classes": {ds: list(class_names(ds)) for ds in datasets},
        "thumbs": tables.thumbs,
        "masks": tables.masks,
        "episodes": episodes,
        "notes": tables.notes,
    }
