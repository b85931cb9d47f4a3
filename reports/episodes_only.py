"""``fssbench report --episodes-only``: only the Episodes view, as ``episodes.html``, for large
studies (no tables, no figures, nothing logged to MLflow)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmark.records.tracking import Tracker, git_commit
from reports.build import RANDOM_INIT_WARNING
from reports.collect import collect_experiments
from reports.explorer import explorer_data
from reports.explorer_page import episodes_section
from reports.html import write_html
from reports.tables import reference_variant


def build_episodes_page(
    experiment: str | list[str],
    out: Path | None = None,
    tracking_uri: str | None = None,
    reference: str | None = None,
    tracker: Tracker | None = None,
) -> tuple[Path, list[str]]:
    """``fssbench report --episodes-only``: write only ``<out>/episodes.html`` (self-contained; no
    tables, no figures, nothing logged to MLflow) and give its path and the notes."""
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    name = "+".join(names)
    tracker = tracker or Tracker(tracking_uri, create=False)
    out = Path(out or Path("reports-out") / name).absolute()
    with tempfile.TemporaryDirectory(prefix="fssbench-report-") as tmp:
        data = collect_experiments(tracker, names, Path(tmp))
    payload = explorer_data(data, tracker, reference_variant(data, reference))
    footer = f"fssam-bench episodes of MLflow experiment {name!r} ({tracker.uri}), code {git_commit()}."
    warning = RANDOM_INIT_WARNING if data.random_init else None
    path = write_html(
        out / "episodes.html",
        f"fssbench episodes: {name}",
        [episodes_section(payload)],
        warning=warning,
        footer=footer,
    )
    return path, list(payload["notes"])
