"""The MLflow run of a training (``fss.kind = train``), written by process 0 only: created with the
training file's params and provenance tags (or set RUNNING again on ``--resume``), the curves
(``loss``, ``lr``, ``grad_norm`` per iteration, buffered and logged in batches; ``val_miou`` per
validation), and at the end the best checkpoint (its hash tag, ``best.pth`` and its record
``best.pth.json`` as artifacts) and the run's status."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.io_utils import write_text_atomic
from benchmark.records.tracking import Tracker, flat_params, git_commit, package_versions, standard_tags
from benchmark.specs.train import TrainSpec

CURVES = ("loss", "lr", "grad_norm")
BATCH = 900  # metrics per log_batch call (MLflow takes at most 1000)


@dataclass(frozen=True)
class TrainingFacts:
    """What the run records besides the training file: the processes and device, the validation
    manifest's and the code's hashes, the base weights (role -> file hash or random-init id), the
    parameter counts and the schedule."""

    world_size: int
    device: str
    val_manifest_sha256: str
    code_sha256: str
    base_weights: dict[str, str]
    trainable_params: int
    frozen_params: int
    iterations_per_epoch: int
    iterations: int


def training_tags(spec: TrainSpec, facts: TrainingFacts) -> dict[str, str]:
    """The run's tags: what was trained on what, how it was selected, and its provenance."""
    return {
        "fss.kind": "train",
        "fss.method": spec.method,
        "fss.dataset": spec.dataset,
        "fss.fold": str(spec.fold),
        "fss.shot": str(spec.shot),
        "fss.random_init": str(spec.random_init).lower(),
        "fss.tuned_on_test": str(spec.selects_on_test).lower(),
        "fss.selected_on": spec.val["kind"],
        "fss.world_size": str(facts.world_size),
        "fss.train_sha256": spec.sha256,
        "fss.git_commit": git_commit(),
        "fss.versions": json.dumps(package_versions()),
        "fss.device": facts.device,
        "fss.data_root": str(spec.data_root),
        "fss.val_manifest_sha256": facts.val_manifest_sha256,
        "fss.code_sha256": facts.code_sha256,
        **{f"fss.weights.{role}": v for role, v in facts.base_weights.items()},
        **standard_tags(spec.source),
    }


def training_params(spec: TrainSpec, facts: TrainingFacts) -> dict[str, Any]:
    """The run's params: the model settings (less the seed), ``train.*``, ``val.*`` and the counts."""
    params = flat_params("", {k: v for k, v in spec.settings.items() if k != "seed"}) | flat_params(
        "train.", dict(spec.train)
    )
    return (
        params
        | flat_params("val.", spec.val)
        | {
            "method": spec.method,
            "dataset": spec.dataset,
            "data_root": str(spec.data_root),
            "fold": spec.fold,
            "shot": spec.shot,
            "init_seed": spec.settings.get("seed"),
            "trainable_params": facts.trainable_params,
            "frozen_params": facts.frozen_params,
            "iterations_per_epoch": facts.iterations_per_epoch,
            "iterations": facts.iterations,
        }
    )


class TrainingRecords:
    """The run ``run_id`` of a training in ``tracker``; curves are buffered until :meth:`flush`, and
    a step already logged (before a resume) is never logged again."""

    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker, self.run_id = tracker, run_id
        self._buffer: list[tuple[str, float, int]] = []
        history = tracker.client.get_metric_history(run_id, "loss")
        self.logged_until = max((m.step for m in history), default=0)

    @classmethod
    def open(
        cls, tracking_uri: str | None, spec: TrainSpec, out: Path, facts: TrainingFacts, run_id: str | None
    ) -> TrainingRecords:
        """The resumed run ``run_id`` set RUNNING again, or a new run in the experiment ``spec.name``
        with its tags, params and the training file's identity (``<out>/config.json``, an artifact)."""
        tracker = Tracker(tracking_uri)
        exp = tracker.experiment_id(spec.name)
        if run_id is not None:
            tracker.client.update_run(run_id, status="RUNNING")
            return cls(tracker, run_id)
        run = tracker.client.create_run(
            exp,
            run_name=f"train {spec.method} {spec.dataset} fold{spec.fold} {spec.shot}shot",
            tags=training_tags(spec, facts),
        )
        run_id = run.info.run_id
        tracker.log_params(run_id, training_params(spec, facts))
        config = out / "config.json"
        write_text_atomic(config, json.dumps(spec.identity(), indent=2, sort_keys=True, default=str))
        tracker.client.log_artifact(run_id, str(config))
        return cls(tracker, run_id)

    def curves(self, step: int, **values: float) -> None:
        """Buffer the curves' ``values`` at ``step`` (dropped if the step was logged before a resume)."""
        if step > self.logged_until:
            self._buffer += [(name, value, step) for name, value in values.items()]

    def flush(self) -> None:
        """Log the buffered curves, in batches."""
        if not self._buffer:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, s) for k, v, s in self._buffer]
        for j in range(0, len(metrics), BATCH):
            self.tracker.client.log_batch(self.run_id, metrics=metrics[j : j + BATCH], synchronous=True)
        self._buffer.clear()

    def validation(self, miou: float, step: int) -> None:
        """A validation's mIoU (``val_miou``) after ``step`` iterations."""
        self.tracker.client.log_metric(self.run_id, "val_miou", miou, step=step)

    def checkpoint(self, best: Path, meta: dict[str, Any]) -> None:
        """The best checkpoint: its record ``best.pth.json`` beside it (hash, run, store and the
        checkpoint's ``meta``), the ``fss.checkpoint_sha256`` tag and both files as artifacts."""
        from fssam.hashing import file_sha256

        sha = file_sha256(best)
        record = best.with_name(best.name + ".json")
        write_text_atomic(
            record,
            json.dumps(
                {"sha256": sha, "mlflow_run_id": self.run_id, "tracking_uri": self.tracker.uri, **meta},
                indent=2,
                default=str,
            ),
        )
        self.tracker.client.set_tag(self.run_id, "fss.checkpoint_sha256", sha)
        self.tracker.client.log_artifact(self.run_id, str(best), "checkpoint")
        self.tracker.client.log_artifact(self.run_id, str(record), "checkpoint")

    def end(self, status: str) -> None:
        """The buffered curves logged, then the run ended with ``status``."""
        self.flush()
        self.tracker.end_run(self.run_id, status)
