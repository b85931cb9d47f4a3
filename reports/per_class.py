"""The per-class view: each class's IoU per variant with a 95% CI, classes sorted by where the method
matters most (the spread between variants).

Needs only the per-episode tables (``episodes.parquet``: ``class``, ``I_fg``, ``U_fg``), so it works
for runs made before predictions were stored. For a class and a variant:

- IoU: the class's accumulated IoU ``sum I_fg / sum U_fg`` over its episodes in each cell (fold,
  seed) where it has episodes, the mean over seeds (of the mean over folds, when a class is in
  several);
- 95% CI: :func:`benchmark.evaluation.metrics.seed_bootstrap_ci` on the class's episodes alone, i.e.
  a percentile bootstrap that resamples the class's episodes within each cell and, with several
  seeds, the seeds (as the main tables do);
- spread: ``max - min`` of the variants' IoUs of the class; classes are sorted by it, largest first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.data.classes import class_names
from benchmark.evaluation.metrics import EPISODE_COLUMNS, seed_bootstrap_ci
from reports.collect import ExperimentData
from reports.tables import Table, _dataset_name, _num, provenance


def class_episodes(data: ExperimentData, dataset: str, shot: int) -> pd.DataFrame:
    """Every episode of the (dataset, shot) cells, long: ``variant``, ``fold``, ``seed``, ``run_id``
    and the per-episode table's :data:`EPISODE_COLUMNS` (a run that stands for two variants, twice)."""
    cells = data.cells[(data.cells["dataset"] == dataset) & (data.cells["shot"] == shot)]
    parts = [
        data.episodes[row.run_id][list(EPISODE_COLUMNS)].assign(
            variant=row.variant, fold=int(row.fold), seed=int(row.seed), run_id=row.run_id
        )
        for row in cells.itertuples()
        if row.run_id in data.episodes
    ]
    cols = ["variant", "fold", "seed", "run_id", *EPISODE_COLUMNS]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def class_iou_ci(
    episodes: pd.DataFrame, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Per (variant, class): ``iou``, ``low``, ``high`` (fractions) and ``episodes`` (count).

    Args:
        episodes: :func:`class_episodes`' frame (``variant``, ``fold``, ``seed``, ``run_id`` and
            :data:`EPISODE_COLUMNS`).
        n_boot, confidence, seed: the bootstrap's (module docstring).

    Returns:
        One row per (variant, class) with episodes, in order of first appearance of the variant and
        then by class id.
    """
    rows = []
    variants = list(dict.fromkeys(episodes["variant"]))
    for v in variants:
        ev = episodes[episodes["variant"] == v]
        for c in sorted(set(ev["class"])):
            ec = ev[ev["class"] == c]
            cells: dict[int, list] = {}
            # one cell per run: an experiment can hold two runs of a (fold, seed), e.g. before and
            # after a code change that changed the cell key (the main tables count both, too)
            for (s, _f, _r), t in ec.groupby(["seed", "fold", "run_id"], sort=True):
                cells.setdefault(int(s), []).append((t[list(EPISODE_COLUMNS)], [int(c)]))
            if len({len(x) for x in cells.values()}) > 1:  # uneven folds per seed: each cell alone
                cells = {i: [x] for i, x in enumerate(x for xs in cells.values() for x in xs)}
            ci = seed_bootstrap_ci(cells, "miou", n_boot=n_boot, confidence=confidence, seed=seed)
            rows.append(
                {"variant": v, "class": int(c), "iou": ci["point"], "low": ci["low"], "high": ci["high"]}
                | {"episodes": len(ec)}
            )
    return pd.DataFrame(rows, columns=["variant", "class", "iou", "low", "high", "episodes"])


def spread_order(ci: pd.DataFrame) -> pd.DataFrame:
    """Wide: one row per class (index), the variants' IoUs as columns (in ``ci``'s order) and
    ``spread`` = max - min over the variants that have the class; sorted by spread, largest first
    (ties by class id)."""
    variants = list(dict.fromkeys(ci["variant"]))
    wide = ci.pivot(index="class", columns="variant", values="iou")[variants]
    wide["spread"] = wide[variants].max(axis=1) - wide[variants].min(axis=1)
    wide = wide.reset_index().sort_values(["spread", "class"], ascending=[False, True], kind="stable")
    return wide.set_index("class")


def per_class_spread_tables(data: ExperimentData, n_boot: int = 1000) -> list[Table]:
    """A ``per-class-spread-<dataset>-<shot>shot`` table per (dataset, shot)."""
    tables = []
    for (ds, shot), cells in data.cells.groupby(["dataset", "shot"], sort=False):
        episodes = class_episodes(data, ds, int(shot))
        if episodes.empty:
            continue
        ci = class_iou_ci(episodes, n_boot=n_boot)
        tables.append(_table(data, ds, int(shot), ci, cells))
    return tables


def _table(data: ExperimentData, ds: str, shot: int, ci: pd.DataFrame, cells: pd.DataFrame) -> Table:
    variants = list(dict.fromkeys(ci["variant"]))
    order = spread_order(ci)
    by = ci.set_index(["variant", "class"])
    names = class_names(ds)
    texts, values = [], []
    for c, row in order.iterrows():
        t, v = [], []
        for var in variants:
            if (var, c) in by.index:
                r = by.loc[(var, c)]
                t.append(f"{_num(100 * r['iou'])} [{_num(100 * r['low'])}, {_num(100 * r['high'])}]")
                v += [100 * r["iou"], 100 * r["low"], 100 * r["high"]]
            else:
                t.append(_num(None))
                v += [np.nan] * 3
        episodes = int(ci[ci["class"] == c]["episodes"].max())
        texts.append([*t, _num(100 * row["spread"]), str(episodes)])
        values.append([*v, 100 * row["spread"], episodes])
    csv = [f"{v}_{x}" for v in variants for x in ("iou_pct", "ci_low_pct", "ci_high_pct")]
    return Table(
        title=f"Per-class IoU (%) and 95% CI per variant on {_dataset_name(ds)}, {shot}-shot, "
        "classes by spread between variants",
        name=f"per-class-spread-{ds}-{shot}shot",
        columns=[("", v) for v in variants] + [("", "spread (pts)"), ("", "episodes")],
        row_header="class",
        rows=[f"{c} {names[c - 1]}" for c in order.index],
        cells=texts,
        values=values,
        footer=[
            "IoU of a class: sum I / sum U over its episodes in each cell, mean over seeds. 95% CI: "
            "percentile bootstrap resampling the class's episodes within each cell (and the seeds, "
            "with several). Spread: max - min of the variants' IoUs; classes sorted by it, largest "
            "first. Episodes: the class's episodes per variant, over folds and seeds.",
            *provenance(data, cells),
        ],
        csv_columns=[*csv, "spread_pts", "episodes"],
    )
