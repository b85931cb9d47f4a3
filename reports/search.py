"""The search section of a report: the Optuna searches an experiment holds, read from MLflow.

A search is a parent run tagged ``fss.kind = search`` with one nested run per trial
(``fss.kind = trial``: its parameters, ``fss.trial_state``, the ``objective`` metric and
``episodes_run``) and, as artifacts under ``search/``, Optuna's plots and the best-params study file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports.tables import METRIC_LABELS, Table

TUNED_ON_TEST_WARNING = (
    "TUNED ON TEST EPISODES: a search of this experiment chose its parameters on the test manifests "
    "(--allow-test-tuning, tag fss.tuned_on_test=true). Its numbers are not unbiased test results."
)


@dataclass
class SearchData:
    run_id: str
    name: str
    optuna_study: str
    metric: str
    kind: str
    tuned_on_test: bool
    random_init: bool
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    plots: list[Path] = field(default_factory=list)


def _runs(client: Any, experiment_id: str, kind: str) -> list[Any]:
    out, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=f"tags.`fss.kind` = '{kind}'", max_results=1000, page_token=token
        )
        out.extend(page)
        token = page.token
        if not token:
            return out


def collect_searches(client: Any, experiment_id: str, download_dir: Path) -> list[SearchData]:
    """Every search of the experiment with its trials (by trial number) and downloaded plots."""
    trials_by_parent: dict[str, list[Any]] = {}
    for r in _runs(client, experiment_id, "trial"):
        trials_by_parent.setdefault(r.data.tags.get("mlflow.parentRunId", ""), []).append(r)
    out = []
    for parent in sorted(_runs(client, experiment_id, "search"), key=lambda r: r.info.start_time):
        tags, params = parent.data.tags, parent.data.params
        metric = params.get("metric", "miou")
        rows = []
        for r in trials_by_parent.get(parent.info.run_id, []):
            t, m = r.data.tags, r.data.metrics
            rows.append(
                {
                    "number": int(t.get("fss.trial_number", -1)),
                    "state": t.get("fss.trial_state", r.info.status),
                    "value": m.get("objective"),
                    "episodes_run": m.get("episodes_run"),
                    "params": dict(r.data.params),
                    "tuned_on_test": t.get("fss.tuned_on_test") == "true",
                }
            )
        rows.sort(key=lambda row: row["number"])
        done = [row for row in rows if row["state"] == "COMPLETE" and row["value"] is not None]
        maximize = params.get("direction", "maximize") == "maximize"
        best = (max if maximize else min)(done, key=lambda row: row["value"]) if done else None
        plots = []
        try:
            for art in client.list_artifacts(parent.info.run_id, "search"):
                if art.path.endswith(".png"):
                    dst = download_dir / tags.get("fss.optuna_study", parent.info.run_id)
                    dst.mkdir(parents=True, exist_ok=True)
                    local = client.download_artifacts(parent.info.run_id, art.path, str(dst))
                    plots.append(Path(local))
        except Exception:
            plots = []
        out.append(
            SearchData(
                run_id=parent.info.run_id,
                name=tags.get("fss.search", parent.info.run_name or ""),
                optuna_study=tags.get("fss.optuna_study", ""),
                metric=metric,
                kind=tags.get("fss.kind_of_manifests", params.get("kind", "val")),
                tuned_on_test=tags.get("fss.tuned_on_test") == "true"
                or any(r["tuned_on_test"] for r in rows),
                random_init=tags.get("fss.random_init") == "true",
                trials=rows,
                best=best,
                plots=plots,
            )
        )
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(search: SearchData) -> Table:
    """One row per trial: state, objective (percent), episodes run and each parameter."""
    names = sorted({k for row in search.trials for k in row["params"]})
    columns = [
        ("", "state"),
        ("", f"{METRIC_LABELS.get(search.metric, search.metric)} (%)"),
        ("", "episodes"),
    ] + [("params", n) for n in names]
    cells, values, bold = [], [], []
    best_number = search.best["number"] if search.best else None
    for row in search.trials:
        v = row["value"]
        pct = 100 * v if v is not None and not math.isnan(v) else None
        eps = row["episodes_run"]
        text = [row["state"], "-" if pct is None else f"{pct:.1f}", "-" if eps is None else str(int(eps))]
        text += [_fmt(_number(row["params"].get(n, "-"))) for n in names]
        cells.append(text)
        values.append(
            [
                row["state"],
                pct if pct is not None else float("nan"),
                eps,
                *[row["params"].get(n) for n in names],
            ]
        )
        bold.append([row["number"] == best_number] * len(columns))
    footer = [
        f"Optuna study {search.optuna_study!r}; objective on {search.kind} manifests; best trial in bold."
    ]
    if search.tuned_on_test:
        footer.insert(0, "WARNING: TUNED ON TEST EPISODES.")
    if search.random_init:
        footer.insert(0, "RANDOM-INIT WEIGHTS: numbers check the pipeline only.")
    return Table(
        title=f"Search {search.name}: trials",
        name=f"search-{search.optuna_study}",
        columns=columns,
        row_header="trial",
        rows=[str(row["number"]) for row in search.trials],
        cells=cells,
        values=values,
        bold=bold,
        footer=footer,
    )


def _number(text: Any) -> Any:
    """MLflow params are strings: numbers back to numbers for formatting."""
    if not isinstance(text, str):
        return text
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
