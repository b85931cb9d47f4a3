"""``fssbench compare EXP_A EXP_B [...]``: the same cells of several experiments side by side.

The table a researcher builds when comparing two checkpoints or two code versions: for each
(variant, dataset, shot) that both experiments ran on the same manifests, the mean mIoU of each,
the difference B - A and its paired-bootstrap 95% CI over episodes (each fold's manifest resampled
within classes, the same episodes for both, replicates averaged over folds). Cells whose manifest
only one experiment has are counted, not compared.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import FssBenchError
from benchmark.evaluation.metrics import paired_bootstrap_diff_over_folds
from benchmark.io_utils import write_text_atomic
from benchmark.records.tracking import Tracker
from reports.collect import ExperimentData, collect_experiment, manifest_classes
from reports.tables import Table, _num, difference_cells, provenance


def compare_frame(a: ExperimentData, b: ExperimentData, n_boot: int = 1000) -> pd.DataFrame:
    """One row per (variant, dataset, shot) of ``a`` that ``b`` also ran: mIoU of each over the
    paired cells, ``diff`` = B - A and its CI (fractions), pairs and unpaired cells."""
    rows = []
    for (variant, ds, shot), ga in a.cells.groupby(["variant", "dataset", "shot"], sort=False):
        gb = b.cells[(b.cells["variant"] == variant) & (b.cells["dataset"] == ds) & (b.cells["shot"] == shot)]
        if gb.empty:
            continue
        by_manifest = gb.drop_duplicates("manifest_sha256").set_index("manifest_sha256")
        paired = ga[ga["manifest_sha256"].isin(by_manifest.index)].drop_duplicates("manifest_sha256")
        pairs = [
            (
                b.episodes[by_manifest.loc[r["manifest_sha256"], "run_id"]],
                a.episodes[r["run_id"]],
                manifest_classes(a, r["run_id"]),
            )
            for _, r in paired.iterrows()
        ]
        res = paired_bootstrap_diff_over_folds(pairs, n_boot=n_boot) if pairs else None
        b_paired = by_manifest.loc[list(paired["manifest_sha256"])] if pairs else gb.iloc[:0]
        rows.append(
            {
                "variant": variant,
                "dataset": ds,
                "shot": int(shot),
                "miou_a": float(paired["miou"].mean()) if pairs else np.nan,
                "miou_b": float(b_paired["miou"].mean()) if pairs else np.nan,
                "diff": res["diff"] if res else np.nan,
                "low": res["low"] if res else np.nan,
                "high": res["high"] if res else np.nan,
                "excludes_zero": bool(res["excludes_zero"]) if res else False,
                "pairs": len(pairs),
                "unpaired": len(ga) + len(gb) - 2 * len(pairs),
            }
        )
    if not rows:
        raise FssBenchError(
            f"experiments {a.name!r} and {b.name!r} share no (variant, dataset, shot): nothing to compare"
        )
    return pd.DataFrame(rows)


def compare_table(a: ExperimentData, b: ExperimentData, frame: pd.DataFrame) -> Table:
    cells, values = [], []
    for _, r in frame.iterrows():
        diff, ci = difference_cells(
            100 * r["diff"], 100 * r["low"], 100 * r["high"], bool(r["excludes_zero"])
        )
        cells.append([_num(100 * r["miou_a"]), _num(100 * r["miou_b"]), diff, ci, str(int(r["pairs"]))])
        values.append(
            [
                100 * r["miou_a"],
                100 * r["miou_b"],
                100 * r["diff"],
                100 * r["low"],
                100 * r["high"],
                int(r["pairs"]),
            ]
        )
    unpaired = int(frame["unpaired"].sum())
    footer = [
        f"A = {a.name}, B = {b.name}. Δ = B − A, mIoU points over the cells both ran on the same manifest; "
        "95% paired bootstrap CI over episodes (each fold's manifest resampled within classes, 1000 "
        "resamples), * = CI excludes 0."
    ]
    if unpaired:
        footer.append(f"{unpaired} cell(s) ran on a manifest only one experiment has: not compared.")
    both = pd.concat([a.cells.assign(study=a.name), b.cells.assign(study=b.name)])
    footer += provenance(a, both)
    return Table(
        title=f"{b.name} against {a.name}: mIoU (%) on the same cells",
        name=f"compare-{a.name}-vs-{b.name}",
        columns=[
            ("", "mIoU A"),
            ("", "mIoU B"),
            ("", "Δ (B − A)"),
            ("", "95% CI of Δ"),
            ("", "paired manifests"),
        ],
        row_header="variant / dataset / shot",
        rows=[f"{r['variant']} / {r['dataset']} / {r['shot']}-shot" for _, r in frame.iterrows()],
        cells=cells,
        values=values,
        footer=footer,
        csv_columns=[
            "miou_a_pct",
            "miou_b_pct",
            "delta_pts",
            "ci_low_pts",
            "ci_high_pts",
            "paired_manifests",
        ],
    )


def compare_experiments(
    experiments: list[str], tracking_uri: str | None = None, out: Path | None = None
) -> list[Table]:
    """Each experiment after the first against the first; tables written to ``out`` (md, tex, csv)."""
    if len(experiments) < 2:
        raise FssBenchError("compare: give at least two experiments, e.g. fssbench compare EXP_A EXP_B")
    tracker = Tracker(tracking_uri, create=False)
    with tempfile.TemporaryDirectory(prefix="fssbench-compare-") as tmp:
        data = [collect_experiment(tracker, e, Path(tmp) / str(i)) for i, e in enumerate(experiments)]
    tables = [compare_table(data[0], other, compare_frame(data[0], other)) for other in data[1:]]
    if out is not None:
        for t in tables:
            write_text_atomic(Path(out) / f"{t.name}.md", t.to_markdown())
            write_text_atomic(Path(out) / f"{t.name}.tex", t.to_latex())
            write_text_atomic(Path(out) / f"{t.name}.csv", t.to_csv())
    return tables
