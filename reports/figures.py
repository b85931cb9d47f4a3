"""Report figures for ``fssbench report``: pure functions, DataFrames/arrays in, ``Figure`` out.

Every figure function builds a standalone :class:`matplotlib.figure.Figure` (not registered with
pyplot, so nothing leaks if a caller never saves it and nothing needs closing), and labels the
figure with a red "RANDOM-INIT WEIGHTS" warning in its suptitle when ``random_init`` is true.
:func:`save_figure` writes ``<stem>.png`` and ``<stem>.pdf``.

Input contracts (fractions in [0, 1] everywhere; figures display percent):

* ``cells``: one row per tracked cell, columns ``run_id, variant, method, dataset, fold (int 0..3),
  shot (int), seed (int), miou, fb_iou, fg_iou, imr_iters (float, NaN without IMR), random_init``.
* ``per_class``: ``variant, dataset, fold, shot, seed, class (int), class_name (str), iou``.
* ``ablation``: ``variant, dataset, shot, miou, diff, low, high, excludes_zero, reference``
  (``diff``/``low``/``high``: variant minus reference and its paired bootstrap 95% CI).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator
from PIL import Image

from benchmark.evaluation.qualitative import outline, overlay
from benchmark.io_utils import respect_umask

RANDOM_INIT_LABEL = "RANDOM-INIT WEIGHTS"
"""Text put on every figure drawn from random-init (smoke test) weights."""

_RANDOM_INIT_NOTE = f"{RANDOM_INIT_LABEL} - numbers are not meaningful"
_SUPPORT_COLOR = (1.0, 0.85, 0.0)  # yellow outline: a tint vanished on blue objects
_PRED_COLOR = (1.0, 0.15, 0.1)
_GT_COLOR = (1.0, 0.0, 1.0)  # magenta outline: visible on green (and most) objects
_IGNORE_COLOR = (0.6, 0.6, 0.6)
_PRIOR_CMAP = "jet"


@dataclass
class EpisodePanels:
    """Everything needed to draw one episode (one row) of :func:`qualitative_grid`.

    Masks use the dataset convention 0 = background, 1 = foreground, 255 = ignore. Priors are at
    the model's square input resolution (S, S); they are stretched to the query's (Hq, Wq) for
    display, which realigns them with the query because the model resizes the query to a square
    without keeping its aspect ratio.
    """

    title: str  # e.g. "fssam pascal fold0 1-shot episode 17 (best)"
    iou: float  # fraction in [0, 1]
    support_image: np.ndarray  # (H, W, 3) uint8, the first support
    support_mask: np.ndarray  # (H, W) {0, 1, 255}
    query_image: np.ndarray  # (Hq, Wq, 3) uint8
    gt: np.ndarray  # (Hq, Wq) {0, 1, 255}
    pred: np.ndarray  # (Hq, Wq) bool
    prior_fg: np.ndarray | None = None  # (S, S) float in [0, 1]
    prior_disc: np.ndarray | None = None  # (S, S) float in [0, 1]
    imr_disc_priors: list[np.ndarray] = field(default_factory=list)  # (S, S) after each IMR iteration


# ----------------------------------------------------------------------------------------------- helpers


def save_figure(fig: Figure, stem: Path, dpi: int = 120) -> list[Path]:
    """Write ``<stem>.png`` (at ``dpi``) and ``<stem>.pdf``, creating folders.

    ``fig`` is a standalone ``Figure`` (no pyplot window or backend: ``savefig`` renders PNG with
    Agg and PDF with matplotlib's PDF writer), so there is nothing to close: it is freed with its
    last reference. ``stem`` is used as-is (a dot in its name is kept, not treated as a suffix). Each file is
    written to a temporary name and moved into place, so readers never see a half-written file.
    Returns ``[png_path, pdf_path]``.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("png", "pdf"):
        path = stem.parent / f"{stem.name}.{fmt}"
        fd, tmp = tempfile.mkstemp(prefix=f".{stem.name}.", suffix=f".{fmt}", dir=stem.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fig.savefig(fh, format=fmt, dpi=dpi)
            respect_umask(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(path)
    return paths


def _suptitle(fig: Figure, title: str, random_init: bool) -> None:
    """Figure title; with ``random_init`` a second, red bold line warns about the weights."""
    if random_init:
        fig.suptitle(f"{title}\n{_RANDOM_INIT_NOTE}", fontsize=13, color="red", fontweight="bold")
    else:
        fig.suptitle(title, fontsize=13)


def _empty_figure(title: str, message: str, random_init: bool) -> Figure:
    """A small figure saying there is nothing to plot (keeps the report going on sparse data)."""
    fig = Figure(figsize=(6, 2.5), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, transform=ax.transAxes)
    _suptitle(fig, title, random_init)
    return fig


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} is missing columns {missing} (has {list(df.columns)})")


def _ordered_unique(values: pd.Series) -> list:
    """Unique values in order of first appearance."""
    return list(pd.unique(values))


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    ncols = min(n, max_cols)
    return (n + ncols - 1) // ncols, ncols


# ----------------------------------------------------------------------------------------------- 1. qualitative


def _resize_prior(prior: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to ``shape`` = (H, W), clipped to [0, 1]."""
    arr = np.asarray(prior, dtype=np.float32)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ValueError(f"a prior must be 2-D (S, S), got shape {np.shape(prior)}")
    h, w = shape
    img = Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)


def _outline_overlay(image: np.ndarray, mask: np.ndarray, color: tuple[float, float, float]) -> np.ndarray:
    """``image`` with the outline of mask == 1 in ``color`` and ignore pixels (255) tinted grey."""
    mask = np.asarray(mask)
    return outline(overlay(image, mask == 255, _IGNORE_COLOR, alpha=0.5), mask == 1, color)


def _na_panel(ax: Axes) -> None:
    ax.set_facecolor("#eeeeee")
    ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=14, color="#666666", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def qualitative_column_titles(n_imr: int) -> list[str]:
    """Column headers of :func:`qualitative_grid` for ``n_imr`` IMR iterations."""
    return [
        "support + mask",
        "query",
        "FG prior",
        "Disc prior",
        *[f"IMR t={t}" for t in range(1, n_imr + 1)],
        "prediction",
        "ground truth",
    ]


def qualitative_grid(episodes: list[EpisodePanels], random_init: bool) -> Figure:
    """Paper Fig. 5 style grid: one row per episode, one column per stage.

    Columns: support image with its mask (yellow outline), query image, FG prior, Disc prior, the Disc prior
    after each IMR iteration ("IMR t=1..T", T = the most iterations of any episode), the prediction
    (red) on the query, the ground truth (magenta outline, ignore grey) on the query. Priors are drawn as
    ``jet`` heatmaps on a fixed 0..1 scale, stretched from (S, S) to the query's (Hq, Wq) so they
    align with the query (the model squashes the query to a square). Missing priors (baselines, or
    fewer IMR iterations than T) show "n/a". Each row is titled with the episode title and its IoU
    in percent (1 decimal); column headers are on the first row only.

    The returned figure holds one sub-figure per row; ``fig.axes`` lists all
    ``len(episodes) * len(qualitative_column_titles(T))`` axes row by row.
    """
    if not episodes:
        return _empty_figure("Qualitative results", "no episodes to show", random_init)
    n_imr = max(len(ep.imr_disc_priors) for ep in episodes)
    titles = qualitative_column_titles(n_imr)
    ncols = len(titles)
    aspects = [ep.query_image.shape[1] / max(ep.query_image.shape[0], 1) for ep in episodes]
    panel_h = 2.2
    panel_w = panel_h * float(np.clip(np.median(aspects), 0.6, 1.8))
    fig = Figure(
        figsize=(panel_w * ncols + 0.4, (panel_h + 0.55) * len(episodes) + 0.9), layout="constrained"
    )
    rows = fig.subfigures(len(episodes), 1, squeeze=False)[:, 0]
    for r, (ep, sub) in enumerate(zip(episodes, rows, strict=True)):
        axes = sub.subplots(1, ncols, squeeze=False)[0]
        qshape = ep.query_image.shape[:2]
        priors: list[np.ndarray | None] = [ep.prior_fg, ep.prior_disc]
        priors += [ep.imr_disc_priors[t] if t < len(ep.imr_disc_priors) else None for t in range(n_imr)]
        panels: list[tuple[str, np.ndarray | None]] = [
            ("image", _outline_overlay(ep.support_image, ep.support_mask, _SUPPORT_COLOR)),
            ("image", ep.query_image),
            *[("prior", p) for p in priors],
            ("image", overlay(ep.query_image, np.asarray(ep.pred).astype(bool), _PRED_COLOR)),
            ("image", _outline_overlay(ep.query_image, ep.gt, _GT_COLOR)),
        ]
        for c, (ax, (kind, data)) in enumerate(zip(axes, panels, strict=True)):
            if data is None:
                _na_panel(ax)
            elif kind == "prior":
                ax.imshow(_resize_prior(data, qshape), cmap=_PRIOR_CMAP, vmin=0.0, vmax=1.0)
                ax.axis("off")
            else:
                ax.imshow(data)
                ax.axis("off")
            if r == 0:
                ax.set_title(titles[c], fontsize=10)
        sub.suptitle(f"{ep.title} - IoU {100.0 * ep.iou:.1f}%", fontsize=11, x=0.01, ha="left")
    _suptitle(fig, "Qualitative results", random_init)
    return fig


# ----------------------------------------------------------------------------------------------- 2. ablation


def ablation_bar_chart(ablation: pd.DataFrame, random_init: bool) -> Figure:
    """Mean mIoU (percent) per variant, one panel (axes) per (dataset, shot), one bar per variant.

    Expects the ablation columns ``variant, dataset, shot, miou, diff, low, high, excludes_zero,
    reference``. Error bars: the paired bootstrap 95% CI of the difference to the reference, shifted
    onto the variant's own mean, i.e. ``[miou + low - diff, miou + high - diff]``. They show the
    uncertainty of the comparison, not of the absolute mIoU; the reference bar (hatched) has none.
    NaN CI bounds draw no error bar; a bound on the wrong side of ``diff`` is clipped to zero length.
    Each bar is labelled with its mIoU; a trailing ``*`` marks variants whose CI excludes zero.
    Panels are sorted by (dataset, shot); variants keep their order of first appearance.
    """
    _require(
        ablation,
        ["variant", "dataset", "shot", "miou", "diff", "low", "high", "excludes_zero", "reference"],
        "ablation",
    )
    title = "Ablation: mean mIoU over folds"
    if ablation.empty:
        return _empty_figure(title, "no ablation rows", random_init)
    keys = sorted({(d, int(s)) for d, s in zip(ablation["dataset"], ablation["shot"], strict=True)})
    nrows, ncols = _grid(len(keys), 3)
    n_var = max(ablation.groupby(["dataset", "shot"])["variant"].nunique())
    fig = Figure(figsize=(max(4.0, 0.75 * n_var + 1.5) * ncols, 4.6 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    palette = sns.color_palette("tab10")
    for ax, (dataset, shot) in zip(axes, keys, strict=False):
        df = ablation[(ablation["dataset"] == dataset) & (ablation["shot"] == shot)]
        df = df.drop_duplicates("variant", keep="first")
        variants = _ordered_unique(df["variant"])
        refs = _ordered_unique(df["reference"].dropna())
        ref = refs[0] if refs else None
        miou = 100.0 * df["miou"].to_numpy(dtype=float)
        diff = df["diff"].to_numpy(dtype=float)
        lower = 100.0 * np.clip(np.nan_to_num(diff - df["low"].to_numpy(dtype=float), nan=0.0), 0.0, None)
        upper = 100.0 * np.clip(np.nan_to_num(df["high"].to_numpy(dtype=float) - diff, nan=0.0), 0.0, None)
        is_ref = np.array([v == ref for v in variants])
        colors = [palette[i % len(palette)] for i in range(len(variants))]
        x = np.arange(len(variants))
        bars = ax.bar(x, miou, color=colors, edgecolor="black", linewidth=0.6)
        for bar, ref_bar in zip(bars, is_ref, strict=True):
            if ref_bar:
                bar.set_hatch("//")
        ax.errorbar(x, miou, yerr=np.vstack([lower, upper]), fmt="none", ecolor="black", capsize=4, lw=1)
        excl = df["excludes_zero"].fillna(False).astype(bool).to_numpy()
        for xi, m, up, star in zip(x, miou, upper, excl, strict=True):
            if np.isfinite(m):
                label = f"{m:.1f}" + ("*" if star else "")
                ax.text(
                    xi,
                    m + up + 0.6,
                    label,
                    ha="center",
                    va="bottom",
                    fontsize=9,
                    fontweight="bold" if star else None,
                )
        ax.set_xticks(x, [f"{v}\n(ref)" if r else str(v) for v, r in zip(variants, is_ref, strict=True)])
        ax.tick_params(axis="x", labelrotation=30, labelsize=9)
        for lbl in ax.get_xticklabels():
            lbl.set_horizontalalignment("right")
        top = np.nanmax(miou + upper) if np.isfinite(miou).any() else 1.0
        ax.set_ylim(0, max(top * 1.15 + 2.0, 5.0))
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"{dataset} {shot}-shot" + (f" (ref: {ref})" if ref is not None else ""), fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in axes[len(keys) :]:
        fig.delaxes(ax)
    fig.supxlabel(
        "Error bars: paired bootstrap 95% CI of the difference to the reference, "
        "centred on the variant's mean. * CI excludes 0.",
        fontsize=8,
    )
    _suptitle(fig, title, random_init)
    return fig


# ----------------------------------------------------------------------------------------------- 3. IMR curve


def imr_curve_data(cells: pd.DataFrame) -> pd.DataFrame:
    """The points of :func:`imr_curve`: columns ``dataset, shot, imr_iters, miou`` (percent).

    Uses rows with ``method == "fssam"`` and finite ``imr_iters``. mIoU is averaged over seeds
    (and over variants sharing an ``imr_iters`` value) within each fold, then over folds, so each
    fold weighs the same.
    """
    _require(cells, ["method", "dataset", "shot", "fold", "imr_iters", "miou"], "cells")
    df = cells[(cells["method"] == "fssam") & np.isfinite(pd.to_numeric(cells["imr_iters"], errors="coerce"))]
    if df.empty:
        return pd.DataFrame(columns=["dataset", "shot", "imr_iters", "miou"])
    per_fold = df.groupby(["dataset", "shot", "imr_iters", "fold"], as_index=False)["miou"].mean()
    out = per_fold.groupby(["dataset", "shot", "imr_iters"], as_index=False)["miou"].mean()
    out["miou"] = 100.0 * out["miou"]
    return out.sort_values(["dataset", "shot", "imr_iters"], ignore_index=True)


MIN_Y_SPAN = 10.0
"""The least span (points) of a line plot's y axis: a zoomed axis makes 0.2 points look like a trend."""


def honest_ylim(lows: list[float], highs: list[float], min_span: float = MIN_Y_SPAN) -> tuple[float, float]:
    """y limits (percent) that hold every point and whisker, span at least ``min_span`` points,
    centred on the data, and stay within [0, 100]."""
    lo, hi = float(np.nanmin(lows)), float(np.nanmax(highs))
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    if lo < 0:
        lo, hi = 0.0, max(hi - lo, min_span)
    if hi > 100:
        lo, hi = min(lo - (hi - 100), 100 - min_span), 100.0
    return max(lo, 0.0), min(hi, 100.0)


def imr_curve(cells: pd.DataFrame, random_init: bool, ci: pd.DataFrame | None = None) -> Figure:
    """mIoU (percent) vs number of IMR iterations, one line per (dataset, shot).

    Only FSSAM cells (``method == "fssam"``) with a finite ``imr_iters`` are used; the points are
    :func:`imr_curve_data` (mean over seeds within each fold, then over folds). Lines are labelled
    ``"<dataset> <shot>-shot"``; x ticks are the integer iteration counts present. ``ci`` (columns
    ``dataset, shot, imr_iters, low, high``, percent) draws each point's 95% CI as an error bar;
    points without one say so in the caption. The y axis spans at least :data:`MIN_Y_SPAN` points
    (:func:`honest_ylim`) and the caption prints its range.
    """
    title = "mIoU vs IMR iterations (FSSAM)"
    data = imr_curve_data(cells)
    if data.empty:
        return _empty_figure(title, "no FSSAM cells with IMR iterations", random_init)
    if ci is not None and not ci.empty:
        data = data.merge(ci[["dataset", "shot", "imr_iters", "low", "high"]], how="left")
    else:
        data = data.assign(low=np.nan, high=np.nan)
    fig = Figure(figsize=(6.5, 4.8), layout="constrained")
    ax = fig.subplots()
    for (dataset, shot), g in data.groupby(["dataset", "shot"], sort=True):
        (line,) = ax.plot(g["imr_iters"], g["miou"], marker="o", label=f"{dataset} {int(shot)}-shot")
        has = g[np.isfinite(g["low"]) & np.isfinite(g["high"])]
        if not has.empty:
            # a percentile CI need not hold the point (few episodes, class-wise mean): no negative bar
            err = np.clip(np.vstack([has["miou"] - has["low"], has["high"] - has["miou"]]), 0, None)
            ax.errorbar(
                has["imr_iters"], has["miou"], yerr=err, fmt="none", ecolor=line.get_color(), capsize=4
            )
    iters = sorted({int(round(v)) for v in data["imr_iters"]})
    ax.xaxis.set_major_locator(FixedLocator(iters))
    lows = data["low"].where(np.isfinite(data["low"]), data["miou"])
    highs = data["high"].where(np.isfinite(data["high"]), data["miou"])
    y0, y1 = honest_ylim(list(lows), list(highs))
    ax.set_ylim(y0, y1)
    ax.set_xlabel("IMR iterations")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    missing = int((~(np.isfinite(data["low"]) & np.isfinite(data["high"]))).sum())
    caption = f"error bars: 95% bootstrap CI over episodes (and seeds); y axis {y0:.1f} to {y1:.1f}"
    if missing:
        caption += f"; {missing} point(s) without a CI"
    ax.set_title(caption, fontsize=8, color="#444444")
    _suptitle(fig, title, random_init)
    return fig


# ----------------------------------------------------------------------------------------------- 4. per class


def per_class_bars(per_class: pd.DataFrame, dataset: str, shot: int, random_init: bool) -> Figure:
    """Per-class IoU (percent, mean over seeds) of ``dataset`` / ``shot``: one subplot per fold.

    Expects ``variant, dataset, fold, shot, seed, class, class_name, iou``. Within a fold the x axis
    holds that fold's test classes (sorted by class id, names rotated), bars grouped by variant
    (hue, order of first appearance, same colours in every fold). Subplots are stacked vertically
    (folds hold different classes). The legend sits on the first subplot.
    """
    _require(per_class, ["variant", "dataset", "fold", "shot", "class", "class_name", "iou"], "per_class")
    title = f"Per-class IoU: {dataset} {shot}-shot"
    df = per_class[(per_class["dataset"] == dataset) & (per_class["shot"] == shot)]
    if df.empty:
        return _empty_figure(title, f"no per-class rows for {dataset} {shot}-shot", random_init)
    df = df.assign(iou=100.0 * df["iou"].astype(float))
    variants = _ordered_unique(df["variant"])
    folds = sorted(int(f) for f in df["fold"].unique())
    palette = dict(zip(variants, sns.color_palette("tab10", len(variants)), strict=True))
    n_cls = max(df.groupby("fold")["class"].nunique())
    width = max(6.0, n_cls * (0.35 * len(variants) + 0.3) + 1.5)
    fig = Figure(figsize=(width, 3.4 * len(folds) + 0.9), layout="constrained")
    axes = fig.subplots(len(folds), 1, squeeze=False)[:, 0]
    for i, (ax, fold) in enumerate(zip(axes, folds, strict=True)):
        fd = df[df["fold"] == fold]
        means = fd.groupby(["variant", "class", "class_name"], as_index=False, sort=False)["iou"].mean()
        classes = means[["class", "class_name"]].drop_duplicates("class").sort_values("class")
        order = [str(n) for n in classes["class_name"]]
        means = means.assign(class_name=means["class_name"].astype(str))
        hue_order = [v for v in variants if v in set(means["variant"])]
        sns.barplot(
            data=means,
            x="class_name",
            y="iou",
            hue="variant",
            order=order,
            hue_order=hue_order,
            palette=palette,
            errorbar=None,
            ax=ax,
            legend=i == 0,
        )
        ax.set_title(f"fold {fold}", fontsize=11)
        ax.set_xlabel("")
        ax.set_ylabel("IoU (%)")
        ax.set_ylim(0, 100)
        ax.tick_params(axis="x", labelrotation=35)
        for lbl in ax.get_xticklabels():
            lbl.set_horizontalalignment("right")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        if i == 0 and ax.get_legend() is not None:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), title="variant", fontsize=9)
    _suptitle(fig, title, random_init)
    return fig


# ----------------------------------------------------------------------------------------------- 5. heatmap


def fold_variant_table(cells: pd.DataFrame, dataset: str, shot: int, metric: str = "miou") -> pd.DataFrame:
    """Variants (rows, order of first appearance) x folds (columns, sorted) of ``metric`` in percent.

    Each value is the mean over seeds; the extra ``"mean"`` column is the mean over the folds
    present for that variant (NaN folds skipped).
    """
    _require(cells, ["variant", "dataset", "shot", "fold", metric], "cells")
    df = cells[(cells["dataset"] == dataset) & (cells["shot"] == shot)]
    variants = _ordered_unique(df["variant"])
    table = df.pivot_table(index="variant", columns="fold", values=metric, aggfunc="mean", dropna=False)
    table = 100.0 * table.reindex(index=variants, columns=sorted(table.columns))
    table.columns = [str(int(c)) for c in table.columns]
    table["mean"] = table.mean(axis=1, skipna=True)
    table.columns.name = "fold"
    return table


def fold_variant_heatmap(
    cells: pd.DataFrame, dataset: str, shot: int, metric: str = "miou", random_init: bool = False
) -> Figure:
    """Heatmap of :func:`fold_variant_table`: variants (rows) x folds + "mean" (columns).

    Cells are annotated with the value in percent, 1 decimal (missing combinations stay blank); a
    white line separates the "mean" column. Colour scale: ``viridis`` anchored at 0..100 (never the
    table's own range, which makes 0.2 points look like everything); the caption prints the range
    the values actually span.
    """
    title = f"{metric} (%) per fold: {dataset} {shot}-shot"
    table = fold_variant_table(cells, dataset, shot, metric)
    if table.empty:
        return _empty_figure(title, f"no cells for {dataset} {shot}-shot", random_init)
    annot = table.map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    fig = Figure(
        figsize=(1.1 * table.shape[1] + 3.5, 0.55 * table.shape[0] + 2.0),
        layout="constrained",
    )
    ax = fig.subplots()
    sns.heatmap(
        table,
        annot=annot.to_numpy(),
        fmt="",
        cmap="viridis",
        vmin=0.0,
        vmax=100.0,
        linewidths=0.5,
        linecolor="white",
        cbar_kws={"label": f"{metric} (%)"},
        ax=ax,
    )
    ax.axvline(table.shape[1] - 1, color="white", lw=4)
    finite = table.to_numpy(dtype=float)[np.isfinite(table.to_numpy(dtype=float))]
    if finite.size:
        ax.set_title(
            f"colour scale 0 to 100; values span {finite.min():.1f} to {finite.max():.1f}",
            fontsize=9,
            color="#444444",
        )
    ax.set_xlabel("fold")
    ax.set_ylabel("variant")
    ax.tick_params(axis="y", labelrotation=0)
    _suptitle(fig, title, random_init)
    return fig
