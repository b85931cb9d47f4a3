"""Validation during training: when (:func:`validation_due`), on what (:func:`validation_manifest`:
the fold's base classes on the val split, or a held-out slice of the train list) and how
(:class:`Validator`: process 0 scores the manifest with the cell function, through the local engine
as a search trial's cells are, shares the value and keeps the best weights as ``best.pth``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmark.engines.base import CellDone, CellHooks, CellJob
from benchmark.engines.local import LocalEngine
from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import save_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.cell import CellSpec
from benchmark.jobs.train.distributed import Collectives
from benchmark.jobs.train.state import Progress
from benchmark.methods import TrainableMethod, get_trainable
from benchmark.records.training import TrainingRecords
from benchmark.specs.train import TrainSpec
from benchmark.workspace import Workspace


def validation_due(done: int, per_epoch: int, epochs: int, every: str | int) -> bool:
    """Whether to validate after ``done`` iterations (counted from 1).

    * ``every="authors"``, the cadence of the authors' ``train.py``: at the end of every epoch, and
      within epoch ``e`` (0-based) after its step of index ``round(per_epoch / 2)`` (Python's
      rounding, half to even; the release's ``SubEpoch_val``) when ``epochs <= 100`` or ``e > 100``.
      A mid-epoch point that falls on the epoch's last step validates once.
    * ``every="epoch"``: at the end of every epoch only.
    * ``every=N``: every ``N`` iterations.
    """
    if every not in ("authors", "epoch"):
        return done % int(every) == 0
    epoch, step = divmod(done - 1, per_epoch)  # step: the 0-based index of the step in its epoch
    if step == per_epoch - 1:
        return True
    return every == "authors" and (epochs <= 100 or epoch > 100) and step == round(per_epoch / 2)


def validation_manifest(spec: TrainSpec, out: Path, write: bool) -> Path:
    """The path of the training's validation manifest under ``<out>/manifests`` (written there when
    ``write``: by process 0)."""
    holdout = (
        {"val_source": spec.val["source"], "holdout_fraction": spec.val["holdout_fraction"]}
        if spec.val["kind"] == "val"
        else {}
    )
    request = ManifestRequest(
        spec.data_root,
        spec.fold,
        spec.shot,
        seed=spec.val["seed"],
        episodes=spec.val["episodes"],
        kind=spec.val["kind"],
        coco_split=spec.split,
        dataset=spec.dataset,
        **holdout,
    )
    m = build_manifest(get_protocol("fssam"), request)
    path = out / "manifests" / f"{spec.val['kind']}-fold{spec.fold}-{spec.shot}shot-n{m.num_episodes}.json"
    if write:
        save_manifest(m, path)
    return path


def trained_path(spec: TrainSpec) -> dict[str, Any]:
    """The K-shot path the weights were trained (and validated) with, for the checkpoint's record."""
    mode = spec.settings.get("kshot_mode")
    return {"kshot_mode": mode} if mode is not None and spec.shot > 1 else {}


class ValidationFailed(RuntimeError):
    """A validation cell raised an error other than a user error: its text and its traceback."""


def validation_error(done: CellDone) -> Exception:
    """The error a failed validation answer raises: a user error's own text (the engine keeps no
    traceback for one) as a :class:`FssBenchError`, else :class:`ValidationFailed` with the error's
    type, text and traceback."""
    if not done.traceback:
        return FssBenchError(done.error)
    return ValidationFailed(f"{done.error}\n{done.traceback}")


class Validator:
    """Scores ``manifest`` on process 0 (in ``workspace``: its feature cache and cell lock), shares
    the value with the other processes through ``coll`` and records it: in the progress, in MLflow
    (``records``, process 0) and, when it improves, as ``<out>/best.pth``.

    The cell runs on the local engine (:class:`~benchmark.engines.local.LocalEngine`), never a
    remote one: it scores the live model in training, which cannot travel to another process. It
    keeps no journal (each validation scores a different model: none may resume from an earlier
    one's episodes) and writes no artifacts."""

    def __init__(
        self,
        spec: TrainSpec,
        out: Path,
        device: torch.device,
        manifest: Path,
        workspace: Workspace,
        coll: Collectives,
        rank: int,
        log: Callable[[str], None],
    ):
        self.spec, self.out, self.device, self.manifest = spec, out, device, manifest
        self.workspace, self.coll, self.rank, self.log = workspace, coll, rank, log

    def score(self, model: TrainableMethod) -> float:
        """Process 0's validation mIoU, on every process (the others wait in the broadcast)."""
        value = torch.zeros(1, dtype=torch.float64)
        if self.rank == 0:
            model.eval()
            try:
                done = self.answer(model)
            finally:
                for module in model.trainable_modules().values():
                    module.train()
            value[0] = done.summary["miou"]
        return float(self.coll.broadcast(value, 0)[0])

    def job(self) -> CellJob:
        """The validation cell: the training's method and settings on the validation manifest,
        keyed by the training file's hash; no journal, no artifacts."""
        spec = self.spec
        cell = CellSpec(
            spec.method, dict(spec.settings), self.manifest, spec.data_root, str(self.device), "val"
        )
        key = f"train-validation-{spec.sha256}"
        return CellJob(f"{spec.name} validation", key, cell, artifacts=False, qualitative=0, journal=False)

    def answer(self, model: TrainableMethod) -> CellDone:
        """The engine's answer for :meth:`job` scored with ``model`` (in eval mode); a failed one
        raises (:func:`validation_error`)."""
        engine = LocalEngine(progress=False, log=self.log, method=model)
        (done,) = engine.run([self.job()], self.workspace, CellHooks(), "validation")
        if not done.ok:
            raise validation_error(done)
        return done

    def validate(
        self, model: TrainableMethod, progress: Progress, per_epoch: int, records: TrainingRecords | None
    ) -> bool:
        """Validate after ``progress.done`` iterations; update ``progress.best`` and ``.history``;
        return whether the value improved on the best."""
        done, spec = progress.done, self.spec
        miou = self.score(model)
        epochs = done / per_epoch
        progress.history.append({"iteration": done, "epoch": epochs, "val_miou": miou})
        improved = progress.best is None or miou > progress.best["value"]
        if improved:
            progress.best = {"value": miou, "iteration": done}
            if self.rank == 0:
                meta = {"iteration": done, "val_miou": miou, "train_sha256": spec.sha256}
                meta |= {"mlflow_run_id": progress.run_id, **trained_path(spec)}
                get_trainable(spec.method).save(
                    model, self.out / "best.pth", spec.method, dict(spec.settings), meta
                )
        if records is not None:
            records.validation(miou, done)
        if self.rank == 0:
            self.log(
                f"iteration {done} (epoch {epochs:.2f}): validation mIoU {100 * miou:.2f}"
                + (" (best)" if improved else "")
            )
        return improved
