"""Few-shot segmentation metrics: the ground truth of the suite.

Everything here is a pure function (arrays/tensors in, numbers/tables out). The accumulator of a
cell's per-episode rows is its journal (``benchmark.evaluation.journal``: durable, resumable), which
``benchmark.evaluation.cell.evaluate_cell`` turns into the table that :func:`summarize` scores.

Pipeline for one episode (1-way, K-shot), following FSSAM/BAM/PFENet ``test.py``::

    target = episode_target(label, cls)                  # (H, W) uint8 in {0, 1, 255} (the episode loader)
    pred = prediction_at_label_size(logits, (H, W))      # (H, W) bool
    I_bg, U_bg, I_fg, U_fg = intersection_union(pred, target)

The per-episode counts form a table with columns :data:`EPISODE_COLUMNS` (int64). Every aggregate
(mIoU, FB-IoU, FG-IoU, per-class IoU, bootstrap confidence intervals, paired differences) is a pure
function of that table, so results can be recomputed from the stored Parquet file alone.

Metric definitions (docs: protocols-and-tools.md, section 1.1 "Metric formulas"). Let ``I_c``, ``U_c`` be the
foreground intersection and union summed over all episodes whose target class is ``c``, and
``I_bg``, ``U_bg``, ``I_fg``, ``U_fg`` the totals over all episodes:

- ``class_iou[c] = I_c / U_c``: class-wise *accumulated* IoU, not a mean of per-episode IoUs.
- ``miou = mean_c class_iou[c]`` over **all** the fold's novel classes (5 on PASCAL, 20 on COCO).
- ``fb_iou = (I_bg / U_bg + I_fg / U_fg) / 2``.
- ``fg_iou = I_fg / U_fg`` (printed as "pIoU" by BAM/HMNet/FSSAM).

Zero-union convention: any ratio whose accumulated union is 0 is **0.0**. This is what PFENet
(``I / (U + 1e-10)``) and HSNet (``I / max(U, 1)``) produce, since a zero union implies a zero
intersection. In particular a novel class with no episodes has IoU 0.0 and still counts in the mIoU
denominator, as in PFENet. With a non-zero union the ratio here is the exact quotient (no epsilon).

All values are fractions in [0, 1], not percentages.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from benchmark.data.classes import IGNORE_LABEL
from benchmark.errors import FssBenchError

__all__ = [
    "EPISODE_COLUMNS",
    "METRICS",
    "MetricsError",
    "bootstrap_ci",
    "check_table",
    "class_iou",
    "episode_table",
    "fb_iou",
    "fg_iou",
    "intersection_union",
    "mean_over_folds",
    "miou",
    "paired_bootstrap_diff",
    "paired_bootstrap_diff_over_folds",
    "prediction_at_label_size",
    "seed_bootstrap_ci",
    "logit_threshold",
    "summarize",
]

EPISODE_COLUMNS: tuple[str, ...] = ("episode", "class", "I_bg", "U_bg", "I_fg", "U_fg")
_COUNT_COLUMNS: tuple[str, ...] = EPISODE_COLUMNS[2:]
METRICS: tuple[str, ...] = ("miou", "fb_iou", "fg_iou")

# Bootstrap work is done in blocks of resamples holding at most this many count cells each.
_BLOCK_CELLS = 1 << 22

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class MetricsError(FssBenchError, ValueError):
    """Invalid input to a metric function (a ``ValueError`` that the CLI reports as a user error)."""


# ---------------------------------------------------------------------------------------------------
# Per-episode quantities
# ---------------------------------------------------------------------------------------------------


def prediction_at_label_size(
    logits: torch.Tensor, size: tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """Binary foreground prediction at the original label resolution (FSSAM ``ori_resize``).

    The logits are upsampled in float32 with ``F.interpolate(mode="bilinear", align_corners=True)``
    to ``size`` and thresholded at ``sigmoid >= 0.5``, evaluated exactly as ``logit >= 0`` (an exact
    zero is foreground). FSSAM's ``test.py`` computes ``sigmoid(x) >= 0.5`` in floating point, which
    also counts tiny negative logits as foreground because ``sigmoid`` rounds to exactly 0.5 (in
    float32 on CPU for ``x > -1.8e-7``; in bfloat16 for ``x > -3.9e-3``, which matters because FSSAM
    upsamples inside a bfloat16 autocast region); the cut-off depends on dtype and device, so the
    suite uses the exact, device-independent form.

    ``threshold`` is the foreground probability cut (a searchable setting of every method): a pixel
    is foreground when ``sigmoid(logit) >= threshold``, evaluated as ``logit >= log(t / (1 - t))``,
    which for the default 0.5 is exactly ``logit >= 0``.

    Args:
        logits: ``(H', W')`` or ``(B, H', W')`` foreground logits (any float dtype, any device).
        size: ``(H, W)`` of the original label.
        threshold: probability in (0, 1).

    Returns:
        Bool tensor on the logits' device, ``(H, W)`` or ``(B, H, W)``.
    """
    if not isinstance(logits, torch.Tensor):
        raise MetricsError(f"prediction_at_label_size: logits must be a torch.Tensor, got {type(logits)}")
    if logits.ndim not in (2, 3):
        raise MetricsError(
            f"prediction_at_label_size: logits must be (H', W') or (B, H', W'), got shape {tuple(logits.shape)}"
        )
    if len(size) != 2:
        raise MetricsError(f"prediction_at_label_size: size must be (H, W), got {size!r}")
    h, w = (_as_int(s, "size") for s in size)
    if h <= 0 or w <= 0:
        raise MetricsError(f"prediction_at_label_size: size must be positive, got {size!r}")
    if not 0.0 < float(threshold) < 1.0:
        raise MetricsError(f"prediction_at_label_size: threshold must be in (0, 1), got {threshold!r}")
    x = logits.detach().to(torch.float32)
    x4 = x[None, None] if x.ndim == 2 else x[:, None]
    up = F.interpolate(x4, size=(h, w), mode="bilinear", align_corners=True)
    up = up[0, 0] if x.ndim == 2 else up[:, 0]
    return up >= logit_threshold(threshold)


def logit_threshold(threshold: float) -> float:
    """The logit cut of a probability threshold: ``log(t / (1 - t))``, exactly 0.0 for 0.5."""
    t = float(threshold)
    return 0.0 if t == 0.5 else math.log(t / (1.0 - t))


def intersection_union(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor
) -> tuple[int, int, int, int]:
    """Background and foreground intersection and union of one episode, at label resolution.

    Pixels where ``target == 255`` are ignored entirely: they count in neither the intersection nor
    the union of either class (PFENet sets ``output[target == 255] = 255`` before ``histc``).

    Args:
        pred: ``(H, W)`` prediction, bool or numeric with values in {0, 1} (numpy or torch).
        target: ``(H, W)`` binary target with values in {0, 1, 255} (numpy or torch).

    Returns:
        ``(I_bg, U_bg, I_fg, U_fg)`` as Python ints.

    Raises:
        MetricsError (a ValueError): shapes differ or are not 2-D, ``pred`` has values other than 0/1,
        or ``target`` has values outside {0, 1, 255}.
    """
    p = _to_numpy(pred)
    t = _to_numpy(target)
    if p.shape != t.shape:
        raise MetricsError(
            f"intersection_union: pred shape {p.shape} differs from target shape {t.shape}; "
            "upsample the prediction to the label size first"
        )
    if p.ndim != 2:
        raise MetricsError(f"intersection_union: expected (H, W) arrays, got shape {p.shape}")
    if p.dtype != np.bool_:
        bad = ~((p == 0) | (p == 1))
        if bad.any():
            raise MetricsError(
                f"intersection_union: pred must be bool or 0/1, found values {_some_values(p[bad])}"
            )
        p = p != 0
    fg_t = t == 1
    bg_t = t == 0
    valid = fg_t | bg_t
    if not bool(np.all(valid | (t == IGNORE_LABEL))):
        bad_vals = t[~(valid | (t == IGNORE_LABEL))]
        raise MetricsError(
            f"intersection_union: target values must be in {{0, 1, {IGNORE_LABEL}}}, "
            f"found {_some_values(bad_vals)}; build it with episode_target()"
        )
    i_fg = np.count_nonzero(p & fg_t)
    u_fg = np.count_nonzero((p & valid) | fg_t)
    i_bg = np.count_nonzero(~p & bg_t)
    u_bg = np.count_nonzero((~p & valid) | bg_t)
    return int(i_bg), int(u_bg), int(i_fg), int(u_fg)


# ---------------------------------------------------------------------------------------------------
# Per-episode table
# ---------------------------------------------------------------------------------------------------


def episode_table(rows: Iterable[Sequence[int]] = ()) -> pd.DataFrame:
    """Build a per-episode table from rows ``(episode, class, I_bg, U_bg, I_fg, U_fg)``.

    Returns:
        DataFrame with columns :data:`EPISODE_COLUMNS`, all int64, validated by :func:`check_table`.
    """
    data = [tuple(_as_int(v, "table cell") for v in row) for row in rows]
    for row in data:
        if len(row) != len(EPISODE_COLUMNS):
            raise MetricsError(f"episode_table: each row needs {len(EPISODE_COLUMNS)} values, got {row!r}")
    arr = np.array(data, dtype=np.int64).reshape(len(data), len(EPISODE_COLUMNS))
    return check_table(pd.DataFrame(arr, columns=list(EPISODE_COLUMNS)))


def check_table(table: pd.DataFrame) -> pd.DataFrame:
    """Validate a per-episode table and return it with the :data:`EPISODE_COLUMNS` cast to int64.

    Extra columns are kept. Checks: all six columns present, integer values (no NaN), unique episode
    ids, non-negative counts and ``I <= U`` for both classes.
    """
    if not isinstance(table, pd.DataFrame):
        raise MetricsError(f"expected a pandas DataFrame per-episode table, got {type(table)}")
    missing = [c for c in EPISODE_COLUMNS if c not in table.columns]
    if missing:
        raise MetricsError(f"per-episode table lacks columns {missing}; expected {list(EPISODE_COLUMNS)}")
    out = table.copy()
    for col in EPISODE_COLUMNS:
        s = out[col]
        if not (pd.api.types.is_integer_dtype(s.dtype) or len(s) == 0):
            # Accept floats/objects that hold exact integers (e.g. after a CSV round trip).
            values = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
            if np.isnan(values).any() or not np.array_equal(values, np.round(values)):
                raise MetricsError(f"per-episode table column {col!r} must hold integers")
        out[col] = s.astype(np.int64)
    if out["episode"].duplicated().any():
        dups = out.loc[out["episode"].duplicated(), "episode"].unique()[:5].tolist()
        raise MetricsError(f"per-episode table repeats episode ids, e.g. {dups}")
    counts = out[list(_COUNT_COLUMNS)].to_numpy()
    if (counts < 0).any():
        raise MetricsError("per-episode table has negative intersection/union counts")
    if (out["I_bg"] > out["U_bg"]).any() or (out["I_fg"] > out["U_fg"]).any():
        raise MetricsError("per-episode table has an intersection larger than its union")
    return out


# ---------------------------------------------------------------------------------------------------
# Aggregates (pure functions of the per-episode table)
# ---------------------------------------------------------------------------------------------------


def class_iou(table: pd.DataFrame, classes: Sequence[int]) -> dict[int, float]:
    """Class-wise accumulated foreground IoU.

    For each class ``c``: ``sum(I_fg) / sum(U_fg)`` over the episodes whose class is ``c`` (the
    PFENet/HSNet "class IoU"; *not* the mean of per-episode IoUs). A class whose accumulated union is
    0 (no episodes, or prediction and target empty in all of them) gets 0.0, as PFENet
    (``/(U + 1e-10)``) and HSNet (``/max(U, 1)``) do.

    Args:
        table: per-episode table (:data:`EPISODE_COLUMNS`).
        classes: the fold's novel classes; every class in the table must be one of them.

    Returns:
        ``{class: IoU}`` in the order of ``classes``.
    """
    sums, cls_tuple = _class_sums(table, classes)
    ious = _per_class_iou(sums[None])[0]
    return {c: float(v) for c, v in zip(cls_tuple, ious, strict=True)}


def miou(table: pd.DataFrame, classes: Sequence[int]) -> float:
    """Mean of :func:`class_iou` over **all** ``classes`` (a class without episodes counts as 0)."""
    sums, _ = _class_sums(table, classes)
    return float(_metric_from_sums(sums[None], "miou")[0])


def fb_iou(table: pd.DataFrame) -> float:
    """FB-IoU: ``(sum I_bg / sum U_bg + sum I_fg / sum U_fg) / 2`` over all episodes.

    A term whose union sum is 0 is 0.0 (for an empty table the result is 0.0).
    """
    sums = _total_sums(table)
    return float(_metric_from_sums(sums[None, None], "fb_iou")[0])


def fg_iou(table: pd.DataFrame) -> float:
    """Foreground IoU over all episodes, ``sum I_fg / sum U_fg`` ("pIoU" in BAM/FSSAM); 0.0 if the union is 0."""
    sums = _total_sums(table)
    return float(_metric_from_sums(sums[None, None], "fg_iou")[0])


def episode_iou(table: pd.DataFrame) -> np.ndarray:
    """(N,) float64: each episode's foreground IoU ``I_fg / U_fg`` of a per-episode table, in its row
    order; 0.0 where the union is 0 (what picks the best / median / worst episode, and what the
    report's Episodes view shows)."""
    i, u = table["I_fg"].to_numpy(np.int64), table["U_fg"].to_numpy(np.int64)
    return np.where(u > 0, i / np.maximum(u, 1), 0.0)


def summarize(table: pd.DataFrame, classes: Sequence[int]) -> dict[str, Any]:
    """All fold-level numbers of a per-episode table.

    Returns:
        dict with ``miou``, ``fb_iou``, ``fg_iou`` (floats in [0, 1]); ``class_iou`` ({class: IoU});
        ``n_episodes`` (int); ``episodes_per_class`` ({class: count}, zeros included);
        ``classes_without_episodes`` (list of classes with no episode, in ``classes`` order).
    """
    table = check_table(table)
    cls_tuple = _check_classes(classes)
    _check_table_classes(table, cls_tuple)
    counts = table["class"].value_counts()
    per_class = {c: int(counts.get(c, 0)) for c in cls_tuple}
    return {
        "miou": miou(table, cls_tuple),
        "fb_iou": fb_iou(table),
        "fg_iou": fg_iou(table),
        "class_iou": class_iou(table, cls_tuple),
        "n_episodes": len(table),
        "episodes_per_class": per_class,
        "classes_without_episodes": [c for c in cls_tuple if per_class[c] == 0],
    }


def mean_over_folds(values: Sequence[float]) -> float:
    """Mean of per-fold values (the paper number is the mean of the 4 fold mIoUs)."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise MetricsError("mean_over_folds: need a non-empty sequence of per-fold values")
    if not np.isfinite(arr).all():
        raise MetricsError(f"mean_over_folds: values must be finite, got {arr.tolist()}")
    return float(arr.mean())


# ---------------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------------


def bootstrap_ci(
    table: pd.DataFrame,
    classes: Sequence[int],
    metric: str = "miou",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, Any]:
    """Percentile bootstrap confidence interval of a metric, resampling episodes.

    Each resample draws episodes with replacement and recomputes the metric from the resampled
    counts (accumulated I/U, exactly as for the point estimate).

    ``stratify=True`` (default) resamples episodes *within each class*, keeping every class's
    episode count. Class-wise mIoU averages one accumulated IoU per class, so the episode counts per
    class are part of the design (fixed by the manifest), not a random outcome; with
    unstratified resampling a rare class can vanish from a resample and then scores 0, which biases
    the mIoU downwards and widens the interval spuriously. ``stratify=False`` resamples all episodes
    together (appropriate when the class of each episode is itself random, e.g. for FB-IoU under an
    image-frequency-weighted sampler).

    Args:
        table: per-episode table.
        classes: the fold's novel classes (every class in the table must be one of them).
        metric: one of ``"miou"``, ``"fb_iou"``, ``"fg_iou"``.
        n_boot: number of resamples.
        confidence: two-sided level, e.g. 0.95 gives the 2.5% and 97.5% percentiles.
        seed: seed of ``np.random.default_rng``; equal inputs and seed give equal outputs.
        stratify: resample within classes (see above).

    Returns:
        dict ``point`` (metric of the table itself), ``low``, ``high`` (percentiles of the
        resampled metric, numpy's default linear interpolation), ``n_boot``.
    """
    _check_boot_args(metric, n_boot, confidence)
    table = check_table(table)
    cls_tuple = _check_classes(classes)
    _check_table_classes(table, cls_tuple)
    if len(table) == 0:
        raise MetricsError("bootstrap_ci: the per-episode table is empty")
    stats = table[list(_COUNT_COLUMNS)].to_numpy(dtype=np.int64)
    cls_index = _class_index(table, cls_tuple)
    sums = _class_sums_from_arrays(stats, cls_index, len(cls_tuple))
    point = float(_metric_from_sums(sums[None], metric)[0])
    boot_sums = _bootstrap_sums(stats, cls_index, len(cls_tuple), n_boot, seed, stratify)
    values = _metric_from_sums(boot_sums, metric)
    low, high = _percentiles(values, confidence)
    return {"point": point, "low": low, "high": high, "n_boot": int(n_boot)}


def seed_bootstrap_ci(
    cells: dict[int, list[tuple[pd.DataFrame, Sequence[int]]]],
    metric: str = "miou",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile CI of the mean over seeds of the mean over folds, resampling seeds and episodes.

    ``cells``: seed -> that seed's cells as (per-episode table, fold classes), one per fold. Each
    resample draws the seeds with replacement and, independently in every (seed, fold) cell, the
    episodes with replacement within classes (as :func:`bootstrap_ci`), then averages the cells'
    metrics over folds and the drawn seeds. Returns ``point`` (mean over seeds of the fold mean),
    ``low``, ``high``, ``seeds``, ``n_boot``.
    """
    _check_boot_args(metric, n_boot, confidence)
    if not cells or any(not v for v in cells.values()):
        raise MetricsError("seed_bootstrap_ci: every seed needs at least one cell")
    if len({len(v) for v in cells.values()}) > 1:
        raise MetricsError(
            "seed_bootstrap_ci: every seed needs the same folds, got "
            + ", ".join(f"seed {k}: {len(v)} cells" for k, v in sorted(cells.items()))
        )
    points, boots = [], []
    for i, s in enumerate(sorted(cells)):
        per_fold_point, per_fold_boot = [], []
        for j, (table, classes) in enumerate(cells[s]):
            table = check_table(table)
            cls_tuple = _check_classes(classes)
            _check_table_classes(table, cls_tuple)
            stats = table[list(_COUNT_COLUMNS)].to_numpy(dtype=np.int64)
            cls_index = _class_index(table, cls_tuple)
            sums = _class_sums_from_arrays(stats, cls_index, len(cls_tuple))
            per_fold_point.append(float(_metric_from_sums(sums[None], metric)[0]))
            b = _bootstrap_sums(stats, cls_index, len(cls_tuple), n_boot, seed + 1000 * i + j + 1, True)
            per_fold_boot.append(_metric_from_sums(b, metric))
        points.append(float(np.mean(per_fold_point)))
        boots.append(np.mean(per_fold_boot, axis=0))  # (n_boot,) this seed's fold mean
    boots_arr = np.stack(boots)  # (seeds, n_boot)
    rng = np.random.default_rng(seed)
    n_seeds = len(points)
    pick = rng.integers(0, n_seeds, size=(n_boot, n_seeds))  # seeds drawn per resample
    # each draw of a seed takes its own episode replicate: a seed drawn twice is two draws
    replicate = rng.integers(0, n_boot, size=(n_boot, n_seeds))
    resampled = boots_arr[pick, replicate].mean(axis=1)
    low, high = _percentiles(resampled, confidence)
    return {"point": float(np.mean(points)), "low": low, "high": high, "seeds": len(points), "n_boot": n_boot}


def paired_bootstrap_diff(
    table_a: pd.DataFrame,
    table_b: pd.DataFrame,
    classes: Sequence[int],
    metric: str = "miou",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, Any]:
    """Paired percentile bootstrap of ``metric(A) - metric(B)`` for two methods on the same manifest.

    Both tables must contain the same episode ids with the same class per episode (otherwise
    MetricsError, a ValueError). Rows are aligned by episode id and every resample uses the same
    episode indices for A and B, so episode difficulty cancels out. Stratification is as in
    :func:`bootstrap_ci`.

    Returns:
        dict ``diff`` (A - B on the full tables), ``low``, ``high`` (percentiles of the resampled
        differences), ``n_boot``, ``excludes_zero`` (True when ``low > 0`` or ``high < 0``).
    """
    _check_boot_args(metric, n_boot, confidence)
    point, diffs = _paired_diff_samples(table_a, table_b, classes, metric, n_boot, seed, stratify)
    low, high = _percentiles(diffs, confidence)
    return {
        "diff": point,
        "low": low,
        "high": high,
        "n_boot": int(n_boot),
        "excludes_zero": bool(low > 0 or high < 0),
    }


def paired_bootstrap_diff_over_folds(
    pairs: Sequence[tuple[pd.DataFrame, pd.DataFrame, Sequence[int]]],
    metric: str = "miou",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, Any]:
    """Paired bootstrap of the difference of a metric's MEAN over several manifests (e.g. 4 folds).

    ``pairs`` holds, per manifest, (table of A, table of B, that manifest's classes). Each manifest
    is resampled independently (seed ``seed + i`` for the i-th, so one pair reproduces
    :func:`paired_bootstrap_diff` exactly) and every replicate averages the per-manifest differences,
    as the reported number (the mean of fold mIoUs) does.

    Returns:
        dict ``diff`` (mean of the per-manifest differences), ``low``, ``high``, ``n_boot``,
        ``excludes_zero``.
    """
    _check_boot_args(metric, n_boot, confidence)
    if not pairs:
        raise MetricsError("paired_bootstrap_diff_over_folds: no pairs")
    points, samples = [], []
    for i, (a, b, classes) in enumerate(pairs):
        point, diffs = _paired_diff_samples(a, b, classes, metric, n_boot, seed + i, stratify)
        points.append(point)
        samples.append(diffs)
    mean = np.mean(np.stack(samples), axis=0)
    low, high = _percentiles(mean, confidence)
    return {
        "diff": float(np.mean(points)),
        "low": low,
        "high": high,
        "n_boot": int(n_boot),
        "excludes_zero": bool(low > 0 or high < 0),
    }


def _paired_diff_samples(
    table_a: pd.DataFrame,
    table_b: pd.DataFrame,
    classes: Sequence[int],
    metric: str,
    n_boot: int,
    seed: int,
    stratify: bool,
) -> tuple[float, np.ndarray]:
    """(A - B on the full tables, the (n_boot,) resampled differences) for one manifest."""
    a = check_table(table_a).sort_values("episode", kind="stable").reset_index(drop=True)
    b = check_table(table_b).sort_values("episode", kind="stable").reset_index(drop=True)
    cls_tuple = _check_classes(classes)
    if len(a) != len(b) or not np.array_equal(a["episode"].to_numpy(), b["episode"].to_numpy()):
        only_a = sorted(set(a["episode"]) - set(b["episode"]))[:5]
        only_b = sorted(set(b["episode"]) - set(a["episode"]))[:5]
        raise MetricsError(
            "paired_bootstrap_diff: the tables hold different episodes "
            f"(only in A e.g. {only_a}, only in B e.g. {only_b}); score both methods on the same manifest"
        )
    mismatch = a["class"].to_numpy() != b["class"].to_numpy()
    if mismatch.any():
        eps = a.loc[mismatch, "episode"].tolist()[:5]
        raise MetricsError(
            f"paired_bootstrap_diff: episodes {eps} have different classes in the two tables; "
            "score both methods on the same manifest"
        )
    _check_table_classes(a, cls_tuple)
    if len(a) == 0:
        raise MetricsError("paired_bootstrap_diff: the per-episode tables are empty")
    k = len(cls_tuple)
    cls_index = _class_index(a, cls_tuple)
    stats_a = a[list(_COUNT_COLUMNS)].to_numpy(dtype=np.int64)
    stats_b = b[list(_COUNT_COLUMNS)].to_numpy(dtype=np.int64)
    point_a = _metric_from_sums(_class_sums_from_arrays(stats_a, cls_index, k)[None], metric)[0]
    point_b = _metric_from_sums(_class_sums_from_arrays(stats_b, cls_index, k)[None], metric)[0]
    # One resampling of the joint (A, B) rows: columns 0..3 are A's counts, 4..7 B's.
    joint = np.concatenate([stats_a, stats_b], axis=1)
    boot = _bootstrap_sums(joint, cls_index, k, n_boot, seed, stratify)
    diffs = _metric_from_sums(boot[..., :4], metric) - _metric_from_sums(boot[..., 4:], metric)
    return float(point_a - point_b), diffs


# ---------------------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------------------


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool | np.bool_):
        raise MetricsError(f"{name} must be an integer, got a bool")
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    try:
        return operator.index(value)
    except TypeError:
        raise MetricsError(f"{name} must be an integer, got {value!r}") from None


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _some_values(values: np.ndarray, limit: int = 5) -> list[Any]:
    return np.unique(values)[:limit].tolist()


def _check_classes(classes: Sequence[int]) -> tuple[int, ...]:
    cls_tuple = tuple(_as_int(c, "class") for c in classes)
    if not cls_tuple:
        raise MetricsError("the list of classes is empty")
    if len(set(cls_tuple)) != len(cls_tuple):
        raise MetricsError(f"the list of classes has duplicates: {list(cls_tuple)}")
    return cls_tuple


def _check_table_classes(table: pd.DataFrame, cls_tuple: tuple[int, ...]) -> None:
    extra = sorted(set(table["class"].tolist()) - set(cls_tuple))
    if extra:
        raise MetricsError(
            f"per-episode table has episodes of classes {extra[:10]} that are not among the given classes "
            f"{list(cls_tuple)} (wrong fold?)"
        )


def _class_index(table: pd.DataFrame, cls_tuple: tuple[int, ...]) -> np.ndarray:
    """Position in ``cls_tuple`` of each episode's class, shape ``(n,)``."""
    lookup = {c: i for i, c in enumerate(cls_tuple)}
    return np.fromiter((lookup[c] for c in table["class"].tolist()), dtype=np.int64, count=len(table))


def _class_sums_from_arrays(stats: np.ndarray, cls_index: np.ndarray, k: int) -> np.ndarray:
    """Per-class column sums: ``(n, m)`` stats and ``(n,)`` class positions -> ``(k, m)`` int64."""
    out = np.zeros((k, stats.shape[1]), dtype=np.int64)
    np.add.at(out, cls_index, stats)
    return out


def _class_sums(table: pd.DataFrame, classes: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
    table = check_table(table)
    cls_tuple = _check_classes(classes)
    _check_table_classes(table, cls_tuple)
    stats = table[list(_COUNT_COLUMNS)].to_numpy(dtype=np.int64)
    return _class_sums_from_arrays(stats, _class_index(table, cls_tuple), len(cls_tuple)), cls_tuple


def _total_sums(table: pd.DataFrame) -> np.ndarray:
    table = check_table(table)
    return table[list(_COUNT_COLUMNS)].to_numpy(dtype=np.int64).sum(axis=0)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` in float64, 0.0 where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape), dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _per_class_iou(sums: np.ndarray) -> np.ndarray:
    """``(..., k, 4)`` per-class sums of (I_bg, U_bg, I_fg, U_fg) -> ``(..., k)`` foreground IoU."""
    return _safe_ratio(sums[..., 2], sums[..., 3])


def _metric_from_sums(sums: np.ndarray, metric: str) -> np.ndarray:
    """The metric for each leading index of ``(r, k, 4)`` per-class sums -> ``(r,)`` float64.

    The one code path for point estimates and bootstrap resamples, so that equal sums give
    bit-identical values (class means are accumulated in a fixed order, independent of ``r``).
    """
    if metric == "miou":
        ious = _per_class_iou(sums)
        acc = np.zeros(ious.shape[0], dtype=np.float64)
        for j in range(ious.shape[1]):
            acc += ious[:, j]
        return acc / ious.shape[1]
    totals = sums.sum(axis=1)  # exact: integer-valued
    fg = _safe_ratio(totals[:, 2], totals[:, 3])
    if metric == "fg_iou":
        return fg
    if metric == "fb_iou":
        bg = _safe_ratio(totals[:, 0], totals[:, 1])
        return (bg + fg) / 2.0
    raise MetricsError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")


def _check_boot_args(metric: str, n_boot: int, confidence: float) -> None:
    if metric not in METRICS:
        raise MetricsError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
    n_boot = _as_int(n_boot, "n_boot")
    if n_boot < 1:
        raise MetricsError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < float(confidence) < 1.0:
        raise MetricsError(f"confidence must be in (0, 1), got {confidence}")


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - float(confidence)
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def _resample_counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """``(rows, n)`` multiplicities of ``n`` draws with replacement from ``n`` items, per row."""
    idx = rng.integers(0, n, size=(rows, n))
    idx += (np.arange(rows, dtype=np.int64) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n)


def _bootstrap_sums(
    stats: np.ndarray, cls_index: np.ndarray, k: int, n_boot: int, seed: int, stratify: bool
) -> np.ndarray:
    """Resampled per-class sums.

    Args:
        stats: ``(n, m)`` int64 per-episode counts.
        cls_index: ``(n,)`` class position of each episode in ``0..k-1``.
        k: number of classes.
        n_boot, seed, stratify: see :func:`bootstrap_ci`.

    Returns:
        ``(n_boot, k, m)`` float64 holding exact integers: for every resample, the per-class sums
        of the resampled episodes' counts. Each resample is a multiplicity vector over episodes
        (drawn within classes when stratified), applied by a matrix product, so there is no Python
        loop over resamples; work is blocked so memory stays bounded.
    """
    rng = np.random.default_rng(seed)
    n, m = stats.shape
    # Integer-valued float64 products and sums are exact while below 2**53, so BLAS order cannot
    # change the result.
    if float(stats.max(initial=0)) * n >= 2.0**53:
        raise MetricsError("bootstrap: counts too large for exact float64 accumulation")
    out = np.zeros((n_boot, k, m), dtype=np.float64)
    if stratify:
        groups = [(j, np.flatnonzero(cls_index == j)) for j in range(k)]
    else:
        onehot_stats = np.zeros((n, k * m), dtype=np.float64)
        for j in range(k):
            sel = cls_index == j
            onehot_stats[sel, j * m : (j + 1) * m] = stats[sel]
        groups = [(-1, np.arange(n))]
    for j, members in groups:
        size = members.size
        if size == 0:
            continue
        values = stats[members].astype(np.float64) if j >= 0 else onehot_stats
        block = max(1, _BLOCK_CELLS // size)
        for start in range(0, n_boot, block):
            rows = min(block, n_boot - start)
            counts = _resample_counts(rng, rows, size).astype(np.float64)
            prod = counts @ values
            if j >= 0:
                out[start : start + rows, j, :] = prod
            else:
                out[start : start + rows] = prod.reshape(rows, k, m)
    return out
