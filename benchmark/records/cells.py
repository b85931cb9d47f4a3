"""The MLflow records of cells: one run per cell, whichever engine ran it.

:class:`CellRecords` is the only code that writes a cell's MLflow run: its params and tags
(:meth:`CellRecords.params_and_tags`), the run itself (:meth:`CellRecords.open`), the outcome
(:func:`record_outcome`: metrics, artifacts and FINISHED, or the error as ``fss.error`` and
FAILED / KILLED), a failure with no run yet (:meth:`CellRecords.record_failure`), a cell reused
from another experiment, and the study's parent run. The local engine opens the run before the
cell runs (an interrupted cell is marked KILLED); a remote engine opens it when the answer comes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.device import resolve_device
from benchmark.episodes.manifest import Manifest
from benchmark.evaluation.cell import CellSpec, code_hash
from benchmark.methods import get_method
from benchmark.plan import Cell
from benchmark.records.tracking import CELL_KEY_TAG, Tracker, flat_params, git_commit, package_versions
from benchmark.specs.study import Study


@dataclass(frozen=True)
class CellOutcome:
    """What running a cell gave: ``metrics`` and ``artifacts`` ((file, artifact path) pairs) with
    ``status`` FINISHED, or ``error`` (the ``fss.error`` text) with FAILED or KILLED."""

    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    peak_mem_kind: str = ""
    error: str = ""

    @classmethod
    def finished(
        cls, metrics: dict[str, float], artifacts: list[tuple[Path, str | None]], peak_mem_kind: str
    ) -> CellOutcome:
        return cls("FINISHED", dict(metrics), list(artifacts), peak_mem_kind)

    @classmethod
    def failed(cls, error: str, status: str = "FAILED") -> CellOutcome:
        return cls(status, error=error)


def record_outcome(tracker: Tracker, run_id: str, outcome: CellOutcome) -> None:
    """The one place a cell's outcome is written to its run ``run_id`` (opened by
    :meth:`CellRecords.open`): finished (metrics, ``fss.peak_mem_kind``, artifacts, FINISHED) or
    failed (``fss.error``, FAILED or KILLED)."""
    if outcome.status == "FINISHED":
        tracker.finish_cell(
            run_id, outcome.metrics, outcome.artifacts, {"fss.peak_mem_kind": outcome.peak_mem_kind}
        )
    else:
        tracker.fail_cell(run_id, outcome.error, status=outcome.status)


class CellRecords:
    """The cell runs of one study in its experiment ``exp`` under the parent run ``parent`` (set by
    :meth:`start_parent`). ``manifest``: path -> the manifest (read once by the caller)."""

    def __init__(self, tracker: Tracker, study: Study, exp: str, manifest: Callable[[Path], Manifest]):
        self.tracker, self.study, self.exp, self.manifest = tracker, study, exp, manifest
        self.parent = ""

    # --------------------------------------------------------------------------------- the parent
    def start_parent(self, cells: int) -> str:
        """The invocation's parent run (``<study> <date time>``) with the study file, its overrides
        and the study as it runs as artifacts under ``study/``."""
        study = self.study
        self.parent = self.tracker.start_parent(
            self.exp,
            run_name=f"{study.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={
                "fss.study": study.name,
                "fss.random_init": str(study.random_init).lower(),
                "fss.git_commit": git_commit(),
                "fss.versions": json.dumps(package_versions()),
                "fss.study_file": study.source,
            },
            params=flat_params("study.", {k: v for k, v in study.raw.items() if k != "variants"})
            | {"study.variants": ",".join(v.name for v in study.variants), "study.cells": cells},
        )
        return self.parent

    def log_study(self) -> None:
        log_study_record(self.tracker, self.parent, self.study)

    def end_parent(self, status: str) -> None:
        self.tracker.end_run(self.parent, status)

    # ---------------------------------------------------------------------------------- cell runs
    def params_and_tags(
        self, cell: Cell, key: str, weights: dict[str, str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The params and tags of a cell's MLflow run (whichever engine runs it)."""
        spec, study = cell.spec, self.study
        manifest = self.manifest(spec.manifest_path)
        device = resolve_device(spec.device)
        resolved = {
            "method": spec.method,
            # the method's own `seed` (random-init weights) is logged as init_seed: `seed` is the episodes'
            **{("init_seed" if k == "seed" else k): v for k, v in spec.settings.items()},
            "dataset": cell.dataset,
            "data_root": str(spec.data_root),
            "fold": cell.fold,
            "shot": cell.shot,
            "seed": cell.seed,
            "protocol": study.protocol,
            "episodes": manifest.num_episodes,
            "split": study.split,
            "device": str(device),
            "precision_effective": spec.precision,
            "batch_size": spec.batch_size,
            "feature_dtype": spec.feature_dtype,
        }
        tags = {
            CELL_KEY_TAG: key,
            "fss.variant": cell.variant,
            "fss.method": spec.method,
            "fss.dataset": cell.dataset,
            "fss.fold": str(cell.fold),
            "fss.shot": str(cell.shot),
            "fss.seed": str(cell.seed),
            "fss.manifest_sha256": manifest.sha256,
            "fss.study": study.name,
            "fss.study_file": study.source,
            "fss.random_init": str(bool(spec.settings.get("random_init"))).lower(),
            "fss.git_commit": git_commit(),
            "fss.versions": json.dumps(package_versions()),
            "fss.device": str(device),
            "fss.code_sha256": code_hash(),
            "fss.metric_units": "fraction",  # metrics are in [0, 1]; printed tables and cells.csv use percent
            **{f"fss.weights.{k}": v for k, v in weights.items()},
        }
        tags |= trained_by(cell.spec)
        return flat_params("", resolved), tags

    def open(
        self, cell: Cell, key: str, weights: dict[str, str], extra_tags: dict[str, str] | None = None
    ) -> str:
        """A RUNNING child run for the cell (the caller holds the cell's lock; earlier unfinished
        runs of the cell are deleted, so each cell has one run)."""
        params, tags = self.params_and_tags(cell, key, weights)
        return self.tracker.start_cell(self.exp, self.parent, cell.name, params, tags | (extra_tags or {}))

    def record(self, run_id: str, outcome: CellOutcome) -> None:
        """The cell's outcome in its run (:func:`record_outcome`)."""
        record_outcome(self.tracker, run_id, outcome)

    def record_failure(
        self,
        cell: Cell,
        key: str,
        weights: dict[str, str],
        error: str,
        extra_tags: dict[str, str] | None = None,
    ) -> str:
        """A FAILED run for a cell that has none yet (its worker failed or was lost)."""
        run_id = self.open(cell, key, weights, extra_tags)
        self.record(run_id, CellOutcome.failed(error))
        return run_id

    def copy(self, source: Any, cell: Cell, key: str, weights: dict[str, str]) -> str:
        """The finished run ``source`` of another experiment, recorded as this cell's (``fss.reused_from``)."""
        params, tags = self.params_and_tags(cell, key, weights)
        return self.tracker.copy_cell(source, self.exp, cell.name, params, tags)

    def delete_runs(self, key: str) -> None:
        """--force: every earlier run of the cell, finished ones included (the lock holder only)."""
        for r in self.tracker.cell_runs(self.exp, key):
            self.tracker.client.delete_run(r.info.run_id)

    def also_variants(self, run_id: str, variants: list[str]) -> None:
        """``fss.also_variants``: other variants that resolved to this very cell (the run stands for them)."""
        self.tracker.client.set_tag(run_id, "fss.also_variants", ",".join(variants))


def log_study_record(tracker: Tracker, run_id: str, study: Study) -> None:
    """The study parent run's artifacts under ``study/``: the file as written (``study-file.yaml``),
    the command-line overrides in order (``overrides.txt``, one per line) and the study as it runs
    (``resolved.yaml``: overrides applied, every variant's resolved settings)."""
    import yaml

    tracker.client.log_text(run_id, study.file_text, "study/study-file.yaml")
    tracker.client.log_text(run_id, "".join(f"{o}\n" for o in study.overrides), "study/overrides.txt")
    resolved = yaml.safe_dump(json.loads(json.dumps(study.resolved(), default=str)), sort_keys=False)
    tracker.client.log_text(run_id, resolved, "study/resolved.yaml")


def trained_by(spec: CellSpec) -> dict[str, str]:
    """``fss.trained_by``: the MLflow training run of a fine-tuned checkpoint, from the record
    ``fssbench train`` writes beside it (``best.pth.json``)."""
    for key in get_method(spec.method).overlays:
        path = spec.settings.get(key)
        record = Path(f"{path}.json") if path else None
        if record is not None and record.is_file():
            try:
                run_id = json.loads(record.read_text()).get("mlflow_run_id")
            except ValueError:
                continue
            if run_id:
                return {"fss.trained_by": str(run_id)}
    return {}
