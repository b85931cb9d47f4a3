"""Re-scoring from stored predictions: metrics that need the masks, without re-running a cell.

Every cell run since issue 28 keeps its predicted masks (``predictions.parquet``: ``episode``,
``height``, ``width``, ``counts``, COCO RLE at the scored size). For each such run the report
rebuilds the run's manifest, loads each episode's scored target exactly as the cell did
(:meth:`benchmark.evaluation.loader.ImageStore.scored` on the manifest's evaluation), decodes the
mask and computes per episode:

- the I/U counts (:func:`benchmark.evaluation.scoring.count_row`), which must equal the run's
  ``episodes.parquet`` (else :class:`RescoreMismatch`, naming the run);
- the boundary IoU counts ``I_bd``, ``U_bd`` (:func:`benchmark.evaluation.mask_metrics.boundary_counts`);
- the foreground ``area`` of the target at label size and its COCO ``size_bin``.

The per-episode frame of a run is cached as ``<cache_dir>/<run_id>-v<RESCORE_VERSION>.parquet``
(the report's ``rescored/`` folder), so a second report reads it instead of recomputing. A run
without predictions (made before issue 28), or whose data root or manifest is not available here,
is named in a note; the report goes on.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.prepared import PreparedDataset
from benchmark.episodes.manifest import Manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.loader import ImageStore
from benchmark.evaluation.mask_metrics import boundary_counts, size_bin_of_area
from benchmark.evaluation.metrics import EPISODE_COLUMNS
from benchmark.evaluation.predictions import rle_to_mask
from benchmark.evaluation.scoring import count_row
from benchmark.io_utils import write_bytes_atomic
from reports.collect import ExperimentData

RESCORE_VERSION = 1
"""Bump when what a re-scored frame holds or how it is computed changes (old caches are ignored)."""
RESCORED_COLUMNS: tuple[str, ...] = (*EPISODE_COLUMNS, "I_bd", "U_bd", "area", "size_bin")
PREDICTIONS = "predictions.parquet"


class RescoreMismatch(FssBenchError):
    """A stored prediction does not give back the counts its cell recorded."""


@dataclass
class Rescored:
    """The re-scored per-episode frames (run id -> frame of :data:`RESCORED_COLUMNS`), the runs that
    could not be re-scored (``notes``) and the seconds spent computing (cache hits excluded)."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    computed_episodes: int = 0


def rescore_episodes(
    manifest: Manifest, store: ImageStore, predictions: pd.DataFrame, table: pd.DataFrame, run: str
) -> pd.DataFrame:
    """Re-score one cell's stored predictions.

    Args:
        manifest: the cell's manifest (its episodes, images and evaluation).
        store: an image store of the cell's prepared root.
        predictions: ``predictions.parquet`` (``episode``, ``height``, ``width``, ``counts``).
        table: the cell's per-episode table (``episodes.parquet``, :data:`EPISODE_COLUMNS`).
        run: how errors name the cell (its run id).

    Returns:
        One row per episode in ``predictions``' order, columns :data:`RESCORED_COLUMNS`.

    Raises:
        RescoreMismatch: an episode missing from either side, a mask of another size than its
        scored target, or counts that differ from ``table``'s.
    """
    episodes = {e.id: e for e in manifest.episodes}
    count_cols = list(EPISODE_COLUMNS[2:])  # I_bg, U_bg, I_fg, U_fg
    recorded = dict(
        zip(
            table["episode"].astype(int),
            map(tuple, table[count_cols].to_numpy(dtype=int).tolist()),
            strict=True,
        )
    )
    if sorted(predictions["episode"]) != sorted(recorded):
        raise RescoreMismatch(f"run {run}: predictions.parquet and episodes.parquet hold different episodes")
    evaluation = manifest.evaluation
    resized = evaluation.resolution == "resized"
    rows = []
    for rec in predictions.itertuples(index=False):
        ep = episodes[int(rec.episode)]
        label = manifest.images[ep.query][1]
        scored = store.scored(label, ep.cls, evaluation)
        if (int(rec.height), int(rec.width)) != scored.shape:
            raise RescoreMismatch(
                f"run {run}, episode {rec.episode}: stored mask is {rec.height} x {rec.width}, "
                f"its scored target {scored.shape[0]} x {scored.shape[1]}"
            )
        mask = rle_to_mask({"size": [int(rec.height), int(rec.width)], "counts": rec.counts})
        counts = count_row(mask, scored)
        want = recorded[int(rec.episode)]
        if counts != want:
            raise RescoreMismatch(
                f"run {run}, episode {rec.episode}: the stored prediction gives I/U {counts}, "
                f"episodes.parquet holds {want} (I_bg, U_bg, I_fg, U_fg)"
            )
        i_bd, u_bd = boundary_counts(mask, scored.target())
        # the object's area at label size: the scored target's unless it was resized (hsnet)
        area = int(np.count_nonzero(store.label(label) == ep.cls)) if resized else scored.n_fg
        rows.append((int(rec.episode), ep.cls, *counts, i_bd, u_bd, area, size_bin_of_area(area)))
    frame = pd.DataFrame(rows, columns=list(RESCORED_COLUMNS))
    ints = [c for c in RESCORED_COLUMNS if c != "size_bin"]
    return frame.astype({c: "int64" for c in ints})


def _cell_label(data: ExperimentData, run_id: str) -> str:
    """``variant[,variant], fold k, n-shot`` of a cell run."""
    rows = data.cells[data.cells["run_id"] == run_id]
    first = rows.iloc[0]
    return f"{','.join(rows['variant'])}, fold {int(first['fold'])}, {int(first['shot'])}-shot"


def rescore_experiment(data: ExperimentData, tracker, cache_dir: Path) -> Rescored:
    """Re-score every cell run of ``data`` that has stored predictions (cached under
    ``cache_dir``); the others are named in :attr:`Rescored.notes`. A mismatch between a stored
    prediction and its recorded counts raises :class:`RescoreMismatch`."""
    out = Rescored()
    with tempfile.TemporaryDirectory(prefix="fssbench-rescore-") as tmp:
        for run_id in dict.fromkeys(data.cells["run_id"]):
            cached = Path(cache_dir) / f"{run_id}-v{RESCORE_VERSION}.parquet"
            if cached.is_file():
                out.frames[run_id] = pd.read_parquet(cached)
                continue
            names = {a.path for a in tracker.client.list_artifacts(run_id)}
            if PREDICTIONS not in names:
                out.notes.append(
                    f"run {run_id} ({_cell_label(data, run_id)}) has no stored predictions: "
                    "re-run the cell to re-score it"
                )
                continue
            start = time.perf_counter()
            try:
                frame = _rescore_run(data, tracker, run_id, Path(tmp))
            except RescoreMismatch:
                raise
            except (FssBenchError, KeyError, OSError, ValueError) as e:  # missing params, files, data
                out.notes.append(f"run {run_id} ({_cell_label(data, run_id)}) not re-scored: {e}")
                continue
            out.seconds += time.perf_counter() - start
            out.computed_episodes += len(frame)
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(cached, frame.to_parquet(index=False))
            out.frames[run_id] = frame
    return out


def _rescore_run(data: ExperimentData, tracker, run_id: str, download_dir: Path) -> pd.DataFrame:
    """:func:`rescore_episodes` of one tracked cell run (its data root must be readable here)."""
    from reports.episodes import _manifest_for

    params = tracker.client.get_run(run_id).data.params
    recorded = params.get("data_root", "")  # empty: never the working directory
    if not recorded or not (Path(recorded) / "dataset.json").is_file():
        raise FssBenchError(f"its data root {recorded or '(not recorded)'} is not available here")
    root = Path(recorded)
    try:
        manifest = _manifest_for(data, run_id, params)
    except (FssBenchError, KeyError, ValueError):
        raise FssBenchError("its manifest cannot be rebuilt here (data changed?)") from None
    local = tracker.client.download_artifacts(run_id, PREDICTIONS, str(download_dir / run_id))
    predictions = pd.read_parquet(local)
    return rescore_episodes(
        manifest, ImageStore(PreparedDataset(root)), predictions, data.episodes[run_id], run_id
    )
