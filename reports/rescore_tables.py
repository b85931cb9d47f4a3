"""The re-scored table (``rescored-<dataset>-<shot>shot``) from :mod:`reports.rescore`'s frames.

Per variant, from the runs that have re-scored frames: mIoU and FB-IoU (the cell's own numbers,
recomputed from the re-scored counts), boundary IoU, and mIoU on small / medium / large objects
with the number of episodes of each bin. Each number is computed per cell, averaged over seeds
per fold, then over folds (as the main tables):

- boundary IoU: class-wise, like mIoU: per class ``sum I_bd / sum U_bd`` over its episodes, the
  mean over the fold's novel classes (:func:`benchmark.evaluation.metrics.miou` on the boundary
  counts);
- mIoU of a size bin: the class-wise mIoU of the bin's episodes over the classes that have
  episodes in that bin (a class without any would otherwise count as 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.evaluation.mask_metrics import LARGE_AREA, SIZE_BINS, SMALL_AREA
from benchmark.evaluation.metrics import EPISODE_COLUMNS, fb_iou, miou
from reports.collect import ExperimentData, manifest_classes
from reports.html import Section
from reports.rescore import Rescored
from reports.tables import Table, _bold_max, _dataset_name, _num, provenance

_METRICS = ("miou", "fb_iou", "boundary_iou", *(f"{b}_miou" for b in SIZE_BINS))


def cell_metrics(frame: pd.DataFrame, classes: list[int]) -> dict[str, float]:
    """The table's numbers (fractions) and the episodes per size bin of one re-scored cell frame
    (:data:`reports.rescore.RESCORED_COLUMNS`) with its fold's novel ``classes``."""
    counts = frame[list(EPISODE_COLUMNS)]
    boundary = counts.assign(I_fg=frame["I_bd"], U_fg=frame["U_bd"])
    out = {"miou": miou(counts, classes), "fb_iou": fb_iou(counts), "boundary_iou": miou(boundary, classes)}
    for b in SIZE_BINS:
        sel = counts[frame["size_bin"] == b]
        out[f"{b}_miou"] = miou(sel, sorted(set(sel["class"]))) if len(sel) else float("nan")
        out[f"{b}_episodes"] = len(sel)
    return out


def _variant_values(data: ExperimentData, rescored: Rescored, cells: pd.DataFrame) -> dict[str, float]:
    """One variant's row: each metric per cell, mean over seeds per fold, then over folds; the
    episodes per bin summed; ``cells`` re-scored of all."""
    per_cell = []
    for row in cells.itertuples():
        if row.run_id in rescored.frames:
            m = cell_metrics(rescored.frames[row.run_id], manifest_classes(data, row.run_id))
            per_cell.append({"fold": row.fold, **m})
    out: dict[str, float] = {"cells": len(per_cell), "cells_total": len(cells)}
    if not per_cell:
        return out
    frame = pd.DataFrame(per_cell)
    with np.errstate(all="ignore"):
        folds = frame.groupby("fold")[list(_METRICS)].mean()  # NaN (a bin without episodes) skipped
    for m in _METRICS:
        out[m] = float(folds[m].mean())
    for b in SIZE_BINS:
        out[f"{b}_episodes"] = int(frame[f"{b}_episodes"].sum())
    return out


def rescored_tables(data: ExperimentData, rescored: Rescored) -> list[Table]:
    """A table per (dataset, shot) with at least one re-scored cell."""
    tables = []
    for (ds, shot), cells in data.cells.groupby(["dataset", "shot"], sort=False):
        if not any(r in rescored.frames for r in cells["run_id"]):
            continue
        variants = list(dict.fromkeys(cells["variant"]))
        rows = {v: _variant_values(data, rescored, cells[cells["variant"] == v]) for v in variants}
        tables.append(_table(data, ds, int(shot), rows, cells))
    return tables


def _table(data: ExperimentData, ds: str, shot: int, rows: dict[str, dict], cells: pd.DataFrame) -> Table:
    columns = [("", "mIoU"), ("", "FB-IoU"), ("", "boundary IoU")]
    columns += [(f"{b} objects", c) for b in SIZE_BINS for c in ("mIoU", "episodes")]
    columns += [("", "cells re-scored")]
    csv = ["miou_pct", "fb_iou_pct", "boundary_iou_pct"]
    csv += [f"{b}_{c}" for b in SIZE_BINS for c in ("miou_pct", "episodes")] + ["cells_rescored"]
    texts, values, numeric = [], [], []
    for r in rows.values():
        pct = [100 * r.get(m, np.nan) for m in ("miou", "fb_iou", "boundary_iou")]
        bins = [(100 * r.get(f"{b}_miou", np.nan), r.get(f"{b}_episodes", 0)) for b in SIZE_BINS]
        texts.append(
            [_num(x) for x in pct]
            + [t for x, n in bins for t in (_num(x), str(n))]
            + [f"{r['cells']} of {r['cells_total']}"]
        )
        values.append([*pct, *(v for pair in bins for v in pair), r["cells"]])
        numeric.append([*pct, *(v for x, _ in bins for v in (x, np.nan)), np.nan])
    footer = [
        "Recomputed from the masks each cell stored (predictions.parquet); mIoU and FB-IoU equal the "
        "cells' own. Boundary IoU (Cheng et al. 2021): the pixels within d = 2% of the image diagonal "
        "of each mask's contour, class-wise as mIoU. Object size by foreground area at label size: "
        f"small < {SMALL_AREA} px (32^2), medium < {LARGE_AREA} px (96^2), large otherwise; the mIoU "
        "of a bin is over the classes with episodes in it. Each number: per cell, mean over seeds, "
        "then over folds.",
        *provenance(data, cells),
    ]
    return Table(
        title=f"Re-scored from stored predictions (%) on {_dataset_name(ds)}, {shot}-shot",
        name=f"rescored-{ds}-{shot}shot",
        columns=columns,
        row_header="variant",
        rows=list(rows),
        cells=texts,
        values=values,
        bold=_bold_max(numeric),
        footer=footer,
        csv_columns=csv,
    )


def rescore_notes_section(rescored: Rescored) -> Section | None:
    """An HTML section listing the runs that could not be re-scored (None: every run was)."""
    if not rescored.notes:
        return None
    return Section("Re-scoring: runs left out", text="\n\n".join(rescored.notes))
