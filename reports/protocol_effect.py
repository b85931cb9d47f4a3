"""The protocol effect: one method's mIoU under several episode protocols and scorings, and how far
each is from a reference scoring, with a CI.

An experiment holds cells of several scorings when several study files of one ``name`` ran the same
variants under different protocols or ``eval`` settings (e.g. ``ablations/field/protocol-*.yaml``);
:mod:`reports.collect` then suffixes each variant with its scoring (``gfsam@hsnet-1024``) and keeps
the study's name in ``base_variant``. The episodes differ between protocols (and the manifests
between scorings), so the episode-level pairing of the ablation table does not apply. The unit that
both scorings share is the class: each (fold, class) of the folds both ran has a class IoU under
each scoring (accumulated over that cell's episodes of the class; the mean over seeds with several),
and the difference is paired per (fold, class). Δ is the mean of those differences, which equals the
difference of the two fold-mean mIoUs when every fold's classes are present. Its CI is a percentile
bootstrap over classes, resampled within each fold (as the fold mean is an average of per-fold class
means); it covers the choice of classes, not the episode noise within a class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.evaluation.metrics import _percentiles
from reports.collect import ExperimentData
from reports.scoring import Scoring
from reports.tables import Table, _dataset_name, _fmt, difference_cells, provenance

REFERENCE_SCORING = Scoring("fssam", "original")
"""The scoring the differences are taken from when the experiment has it (the suite's own)."""


def paired_class_bootstrap(
    diffs_by_fold: dict[int, np.ndarray], n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Percentile bootstrap of the mean over folds of the mean per-class difference.

    ``diffs_by_fold``: fold -> (k,) per-class differences (A - B) of that fold's classes. Each
    replicate resamples every fold's classes with replacement (independently per fold), averages
    them, then averages over the folds. Returns ``diff`` (the same on the data), ``low``, ``high``,
    ``classes`` (the number of paired units) and ``excludes_zero``.
    """
    folds = [np.asarray(d, dtype=np.float64) for _, d in sorted(diffs_by_fold.items()) if len(d)]
    if not folds:
        raise ValueError("paired_class_bootstrap: no paired classes")
    rng = np.random.default_rng(seed)
    point = float(np.mean([d.mean() for d in folds]))
    per_fold = [d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1) for d in folds]
    low, high = _percentiles(np.mean(per_fold, axis=0), confidence)
    return {
        "diff": point,
        "low": low,
        "high": high,
        "classes": sum(len(d) for d in folds),
        "excludes_zero": bool(low > 0 or high < 0),
    }


def scorings_in_order(cells: pd.DataFrame) -> list[Scoring]:
    """The experiment's scorings: :data:`REFERENCE_SCORING` first when present, then the others by
    protocol and size."""
    found = set(cells["scoring"])
    return sorted(found, key=lambda s: (s != REFERENCE_SCORING, s.protocol, s.resolution, s.size or 0))


def class_ious(data: ExperimentData, variant: str, dataset: str, shot: int) -> pd.Series:
    """(fold, class) -> class IoU of ``variant`` (mean over its seeds), from the cells' per-class metrics."""
    pc = data.per_class
    sel = pc[(pc["variant"] == variant) & (pc["dataset"] == dataset) & (pc["shot"] == shot)]
    return sel.groupby(["fold", "class"])["iou"].mean()


def protocol_effect_frame(
    data: ExperimentData, reference: Scoring | None = None, n_boot: int = 1000
) -> pd.DataFrame:
    """Per (dataset, shot, base variant, scoring): ``miou`` (mean over the cells: folds and seeds) and,
    against the ``reference`` scoring (default: :func:`scorings_in_order`'s first), ``diff``, ``low``,
    ``high`` (fractions), ``excludes_zero`` and ``classes`` (paired (fold, class) units); an empty
    frame when the experiment has one scoring."""
    cells = data.cells
    if "scoring" not in cells or cells["scoring"].nunique() < 2:
        return pd.DataFrame()
    order = scorings_in_order(cells)
    ref = reference or order[0]
    rows = []
    for (ds, shot, base), group in cells.groupby(["dataset", "shot", "base_variant"], sort=False):
        by_scoring = {s: g for s, g in group.groupby("scoring", sort=False)}
        ref_ious = (
            class_ious(data, by_scoring[ref]["variant"].iloc[0], ds, shot) if ref in by_scoring else None
        )
        for scoring in (s for s in order if s in by_scoring):
            mine = by_scoring[scoring]
            row = {
                "dataset": ds,
                "shot": int(shot),
                "base_variant": base,
                "scoring": scoring,
                "reference": ref,
                "miou": float(mine["miou"].mean()),
                "diff": np.nan,
                "low": np.nan,
                "high": np.nan,
                "excludes_zero": False,
                "classes": 0,
            }
            if ref_ious is not None and scoring != ref:
                ious = class_ious(data, mine["variant"].iloc[0], ds, shot)
                paired = (ious - ref_ious).dropna()  # the (fold, class) units both scorings have
                if len(paired):
                    by_fold = {f: paired.xs(f, level="fold").to_numpy() for f in paired.index.unique("fold")}
                    row |= paired_class_bootstrap(by_fold, n_boot=n_boot)
            rows.append(row)
    return pd.DataFrame(rows)


def protocol_effect_table(data: ExperimentData, frame: pd.DataFrame, dataset: str, shot: int) -> Table:
    """The "protocol effect" table of one dataset and shot: a row per method (base variant), per
    scoring its mIoU (%) and, except for the reference, Δ (points) and the 95% CI of Δ."""
    df = frame[(frame["dataset"] == dataset) & (frame["shot"] == shot)]
    ref: Scoring = df["reference"].iloc[0]
    scorings = [s for s in scorings_in_order(data.cells) if s in set(df["scoring"])]
    columns, csv_columns = [], []
    for s in scorings:
        columns.append((s.tag, "mIoU"))
        csv_columns.append(f"{s.tag}_miou_pct")
        if s != ref:
            columns += [(s.tag, "Δ"), (s.tag, "95% CI of Δ")]
            csv_columns += [f"{s.tag}_delta_pts", f"{s.tag}_ci_low_pts", f"{s.tag}_ci_high_pts"]
    methods = list(dict.fromkeys(df["base_variant"]))
    cells, values = [], []
    for m in methods:
        text, vals = [], []
        for s in scorings:
            r = df[(df["base_variant"] == m) & (df["scoring"] == s)]
            r = r.iloc[0] if len(r) else None
            text.append(_fmt(100 * r["miou"]) if r is not None else _fmt(None))
            vals.append(100 * r["miou"] if r is not None else np.nan)
            if s != ref:
                if r is None:
                    d, lo, hi, ex = np.nan, np.nan, np.nan, False
                else:
                    d, lo, hi, ex = 100 * r["diff"], 100 * r["low"], 100 * r["high"], bool(r["excludes_zero"])
                diff, ci = difference_cells(d, lo, hi, ex)
                text += [diff, ci]
                vals += [d, lo, hi]
        cells.append(text)
        values.append(vals)
    footer = [
        f"Δ = mIoU under the scoring − under {ref.tag} ({ref.text}), mIoU points. The episodes differ "
        "between protocols, so Δ is paired by class: the unit is a (fold, class) of the folds both ran, "
        "its class IoU under each scoring (mean over seeds); 95% percentile bootstrap over classes, "
        "resampled within each fold (1000 resamples); * = CI excludes 0. The CI covers the choice of "
        "classes, not the episode noise within a class.",
        *(f"{s.tag}: {s.text}." for s in scorings),
    ] + provenance(data, data.cells[(data.cells["dataset"] == dataset) & (data.cells["shot"] == shot)])
    return Table(
        title=f"Protocol effect on {_dataset_name(dataset)}, {shot}-shot: mIoU (%) per protocol and "
        f"scoring, Δ against {ref.tag} (paired by class)",
        name=f"protocol-effect-{dataset}-{shot}shot",
        columns=columns,
        row_header="method",
        rows=methods,
        cells=cells,
        values=values,
        footer=footer,
        csv_columns=csv_columns,
    )


def protocol_effect_tables(data: ExperimentData, n_boot: int = 1000) -> list[Table]:
    """A protocol-effect table per (dataset, shot) when the experiment has several scorings, else none."""
    frame = protocol_effect_frame(data, n_boot=n_boot)
    if frame.empty:
        return []
    return [
        protocol_effect_table(data, frame, ds, int(shot))
        for (ds, shot), _ in frame.groupby(["dataset", "shot"], sort=False)
    ]
