"""Tracked runs -> DataFrames: what every table and figure of a report is computed from.

Only FINISHED cell runs (``fss.kind = cell``) count. Per-episode tables come from each run's
``episodes.parquet`` artifact, so confidence intervals are computed from the same numbers the
metrics were.

Every cell row names how it was scored (``protocol``, ``scoring``: :class:`reports.scoring.Scoring`,
from the run's ``protocol`` param and its manifest's evaluation). An experiment that holds cells of
several scorings (several study files of one name, e.g. the protocol study) has each variant's
name suffixed with the scoring's tag (``gfsam@hsnet-1024``; ``base_variant`` keeps ``gfsam``), so no
table averages numbers scored differently; an experiment of one scoring keeps its variant names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.data.classes import class_names
from benchmark.errors import FssBenchError
from reports.scoring import UNKNOWN_RESOLUTION, Scoring


@dataclass
class ExperimentData:
    name: str
    experiment_id: str
    cells: pd.DataFrame  # one row per cell run
    per_class: pd.DataFrame  # long: variant, dataset, fold, shot, seed, class, class_name, iou
    episodes: dict[str, pd.DataFrame] = field(default_factory=dict)  # run_id -> per-episode table
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> config.json

    @property
    def random_init(self) -> bool:
        return bool(self.cells["random_init"].any())


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def collect_experiment(tracker, experiment: str, download_dir: Path) -> ExperimentData:
    """Read every finished cell run of ``experiment`` and its per-episode table and config."""
    return collect_experiments(tracker, [experiment], download_dir)


def collect_experiments(tracker, experiments: list[str], download_dir: Path) -> ExperimentData:
    """Read the finished cell runs of several experiments as one (named ``a+b``, with the first
    one's id): e.g. the protocol study's files, one experiment per protocol. Variants of the same
    name scored differently are told apart (module docstring)."""
    rows: list[tuple[dict[str, Any], dict[str, float]]] = []
    order: list[str] = []
    episodes: dict[str, pd.DataFrame] = {}
    configs: dict[str, dict[str, Any]] = {}
    ids = []
    seen: set[tuple[str, str]] = set()  # (cell key, variant): a cell two experiments hold counts once
    for experiment in experiments:
        exp_id, exp_rows, exp_order = _collect_runs(
            tracker, experiment, download_dir, episodes, configs, seen
        )
        ids.append(exp_id)
        rows += exp_rows
        order = list(dict.fromkeys([*order, *exp_order]))
    order = _separate_scorings(rows, order)
    per_class = [
        pc for row, metrics in rows for pc in _per_class_rows(row, metrics, class_names(row["dataset"]))
    ]
    cells = _cells_frame([row for row, _ in rows], order)
    return ExperimentData("+".join(experiments), ids[0], cells, pd.DataFrame(per_class), episodes, configs)


def _collect_runs(
    tracker,
    experiment: str,
    download_dir: Path,
    episodes: dict,
    configs: dict,
    seen: set[tuple[str, str]] | None = None,
) -> tuple[str, list[tuple[dict[str, Any], dict[str, float]]], list[str]]:
    """``experiment``'s id, its cell rows (a row per variant of each latest cell run, with the run's
    metrics) and its variant order; the runs' tables and configs are added to ``episodes``/``configs``.
    ``seen``: the (cell key, variant) pairs already read from other experiments, which are skipped
    (and the new ones added)."""
    client = tracker.client
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise FssBenchError(f"no experiment {experiment!r} in {tracker.uri}; experiments there: {names}")
    runs = _finished_cell_runs(client, exp.experiment_id, experiment)
    rows = []
    latest = _latest_per_cell(runs)
    seen = set() if seen is None else seen
    for key, r in latest.items():
        fresh = [v for v in variants_of(r) if (key, v) not in seen]
        if not fresh:
            continue
        seen.update((key, v) for v in fresh)
        rid = r.info.run_id
        episodes[rid], configs[rid] = _run_tables(client, rid, download_dir)
        row = _cell_row(r, experiment) | {"scoring": _scoring(client, r, configs[rid], download_dir)}
        for variant in fresh:  # a cell that two variants of the study share counts for both
            rows.append((row | {"variant": variant, "base_variant": variant}, r.data.metrics))
    return exp.experiment_id, rows, _variant_order(latest.values())


def _separate_scorings(rows: list[tuple[dict[str, Any], dict[str, float]]], order: list[str]) -> list[str]:
    """With cells of several scorings, suffix every row's variant with its scoring's tag (in place);
    the variant order to use (each variant's scorings in order of appearance)."""
    if len({row["scoring"] for row, _ in rows}) < 2:
        return order
    for row, _ in rows:
        row["variant"] = f"{row['base_variant']}@{row['scoring'].tag}"
    tags = list(dict.fromkeys(row["scoring"].tag for row, _ in rows))
    return [f"{v}@{t}" for v in order for t in tags]


def _scoring(client, run, config: dict[str, Any], download_dir: Path) -> Scoring:
    """How the cell was scored: its ``protocol`` param and its manifest's evaluation (config.json's
    ``evaluation``; for a run recorded before config.json held it, the ``manifest.json`` artifact)."""
    protocol = run.data.params.get("protocol", "unknown")
    evaluation = config.get("evaluation")
    if evaluation is None:
        try:
            path = client.download_artifacts(
                run.info.run_id, "manifest.json", str(download_dir / run.info.run_id)
            )
            evaluation = json.loads(Path(path).read_text()).get("eval") or {"resolution": "original"}
        except Exception:
            return Scoring(protocol, UNKNOWN_RESOLUTION)
    return Scoring.of(protocol, evaluation)


def _finished_cell_runs(client, experiment_id: str, experiment: str) -> list:
    """Every FINISHED cell run (``fss.kind = cell``) of the experiment, read page by page; raises
    :class:`FssBenchError` when there is none."""
    runs = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string="tags.`fss.kind` = 'cell'", max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    runs = [r for r in runs if r.info.status == "FINISHED"]
    if not runs:
        raise FssBenchError(
            f"experiment {experiment!r} has no finished cell runs; run a study first (fssbench run)"
        )
    return runs


def _latest_per_cell(runs: list) -> dict[str, Any]:
    """The latest-started run of each cell (by tag ``fss.cell_key``; a run without it is its own
    cell), keyed by cell key, in the order each cell first started."""
    latest: dict[str, Any] = {}
    for r in sorted(runs, key=lambda r: r.info.start_time):
        latest[r.data.tags.get("fss.cell_key", r.info.run_id)] = r
    return latest


def _cell_row(run, experiment: str) -> dict[str, Any]:
    """One row of ``ExperimentData.cells`` from a cell run's tags, metrics and params (metrics as
    fractions; ``variant`` is the variant that ran it; ``study`` defaults to ``experiment``)."""
    t, m, p = run.data.tags, run.data.metrics, run.data.params
    return {
        "run_id": run.info.run_id,
        "variant": t["fss.variant"],
        "method": t.get("fss.method", p.get("method")),
        "dataset": t["fss.dataset"],
        "fold": int(t["fss.fold"]),
        "shot": int(t["fss.shot"]),
        "seed": int(t["fss.seed"]),
        "miou": m.get("miou"),
        "fb_iou": m.get("fb_iou"),
        "fg_iou": m.get("fg_iou"),
        "miou_ci_low": m.get("miou_ci_low"),
        "miou_ci_high": m.get("miou_ci_high"),
        "imr_iters": _float(p.get("imr_iters")) if t.get("fss.method", "fssam") == "fssam" else float("nan"),
        "random_init": t.get("fss.random_init") == "true",
        "manifest_sha256": t.get("fss.manifest_sha256"),
        # every weight source of the cell (sam2, dinov2, or fssam for the authors' checkpoint)
        "weights": tuple(sorted(v for k, v in t.items() if k.startswith("fss.weights."))),
        "study": t.get("fss.study", experiment),
        "protocol": p.get("protocol"),
        "cell_key": t.get("fss.cell_key"),
        "episodes_per_s": m.get("episodes_per_s"),
        "data_root": p.get("data_root"),
    }


def _per_class_rows(row: dict[str, Any], metrics: dict[str, float], names: list[str]) -> list[dict[str, Any]]:
    """The rows of ``ExperimentData.per_class`` of one cell row: a row per ``iou_class_<c>`` metric,
    with the class's name from ``names`` (the dataset's class names, class 1 first)."""
    keys = ("variant", "dataset", "fold", "shot", "seed")
    out = []
    for key, value in metrics.items():
        if key.startswith("iou_class_"):
            c = int(key[len("iou_class_") :])
            out.append({k: row[k] for k in keys} | {"class": c, "class_name": names[c - 1], "iou": value})
    return out


def _run_tables(client, run_id: str, download_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A run's per-episode table (artifact ``episodes.parquet``) and its ``config.json`` ({} when
    it has none or it cannot be read), downloaded under ``download_dir/<run_id>``."""
    local = Path(client.download_artifacts(run_id, "episodes.parquet", str(download_dir / run_id)))
    episodes = pd.read_parquet(local)
    try:
        cfg = Path(client.download_artifacts(run_id, "config.json", str(download_dir / run_id)))
        config = json.loads(cfg.read_text())
    except Exception:
        config = {}
    return episodes, config


def _cells_frame(rows: list[dict[str, Any]], order: list[str]) -> pd.DataFrame:
    """``ExperimentData.cells`` from its rows: sorted by dataset, shot, variant (in ``order``, the
    study's), fold and seed, with a fresh index."""
    cells = pd.DataFrame(rows).sort_values(["dataset", "shot", "variant", "fold", "seed"], kind="stable")
    cells["variant"] = pd.Categorical(cells["variant"], categories=order, ordered=True)
    cells = cells.sort_values(["dataset", "shot", "variant", "fold", "seed"], kind="stable").reset_index(
        drop=True
    )
    cells["variant"] = cells["variant"].astype(str)
    return cells


def variants_of(run) -> list[str]:
    """The variants a cell run stands for: the one that ran it, then any that resolved to the same
    cell (tag ``fss.also_variants``, comma-separated)."""
    also = [v for v in run.data.tags.get("fss.also_variants", "").split(",") if v]
    return list(dict.fromkeys([run.data.tags["fss.variant"], *also]))


def _variant_order(runs) -> list[str]:
    """Variants in the order of the study file when known (first appearance in run start order)."""
    seen: dict[str, None] = {}
    for r in sorted(runs, key=lambda r: r.info.start_time):
        for v in variants_of(r):
            seen.setdefault(v, None)
    return list(seen)


def manifest_classes(data: ExperimentData, run_id: str) -> list[int]:
    """The classes of a run's manifest (recorded in its config.json artifact)."""
    from benchmark.data.classes import novel_classes

    cfg = data.configs.get(run_id, {})
    if cfg.get("classes"):
        return [int(c) for c in cfg["classes"]]
    row = data.cells.set_index("run_id").loc[run_id]
    return novel_classes(row["dataset"], int(row["fold"]), cfg.get("class_split") or "interleaved")


def mean_std_over_seeds(cells: pd.DataFrame, metric: str) -> pd.DataFrame:
    g = cells.groupby(["dataset", "shot", "variant", "fold"], sort=False)[metric]
    return g.agg(["mean", "std", "count"]).reset_index()


def nanmean(values) -> float:
    v = np.asarray(list(values), dtype=float)
    return float(np.nanmean(v)) if v.size else float("nan")


PERCENT_COLUMNS = ("miou", "fb_iou", "fg_iou", "miou_ci_low", "miou_ci_high")
"""Metrics that the collected cells hold as fractions and ``cells.csv`` writes in percent."""


def cells_csv_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """The report's ``cells.csv``: the runner's schema for the columns both have (``miou_pct``,
    ``fb_iou_pct``: percent, units in the names), the other metrics likewise in percent
    (``fg_iou_pct``, ``miou_ci_low_pct``, ``miou_ci_high_pct``), and ``weights`` as the cell's
    weight ids joined by ``;`` (not a Python tuple), ``scoring`` as its tag (``hsnet-1024``)."""
    out = cells.copy()
    for name in PERCENT_COLUMNS:
        if name in out:
            out[name] = 100 * pd.to_numeric(out[name], errors="coerce")
    out = out.rename(columns={name: f"{name}_pct" for name in PERCENT_COLUMNS})
    if "weights" in out:
        out["weights"] = [";".join(w) if isinstance(w, (tuple, list)) else w for w in out["weights"]]
    if "scoring" in out:  # its tag, e.g. hsnet-1024
        out["scoring"] = [s.tag if isinstance(s, Scoring) else s for s in out["scoring"]]
    return out
