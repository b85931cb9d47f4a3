"""Training files: episodic fine-tuning of one method on one fold, validated before any work.

A training file is YAML (see ``ablations/train/``)::

    name: fssam-pascal-train            # the MLflow experiment
    method: fssam                       # or naive_sam2: any method with the Trainable capability
    data: {pascal: ../../data/pascal}   # one dataset -> its prepared root (relative to this file)
    fold: 0
    shot: 1
    model: {sam2_checkpoint: ..., dinov2_checkpoint: ..., image_size: 512}   # the method's settings
    train:                              # the authors' recipe (spec section 8) by default
      epochs: 300
      batch_size: 2                     # per process (x processes under torchrun)
      lr: 0.001
      weight_decay: 0.0
      power: 0.9                        # poly decay per iteration
      seed: 321
      max_iters: null                   # stop after this many iterations (short runs)
      augment: {scale: [0.9, 1.1], rotate: 10, rotate_p: 0.5, blur_p: 0.5, flip_p: 0.5, fg_keep: 0.85}
      checkpoint_every: 100             # iterations between resumable checkpoints
      workers: 4                        # background processes decoding and augmenting episodes
      dist_timeout_s: 7200              # how long torchrun ranks wait for each other (validation)
    val:                                # model selection on VALIDATION episodes (base classes)
      episodes: 1000
      every: authors                    # the release's cadence; or epoch, or a number of iterations
      patience: 100                     # epochs (every: authors|epoch) or validations (every: N)
      seed: 321
      source: val                       # val split | train-holdout (a held-out slice training skips)
      holdout_fraction: 0.1             # train-holdout only: the share of the train split held out

``val.every: authors`` is the release's cadence (every epoch's end, plus mid-epoch in every epoch
when ``epochs <= 100`` and after epoch index 100 otherwise; :func:`benchmark.jobs.train.validation.validation_due`);
``workers`` and ``dist_timeout_s`` do not change the trained weights and are left out of the
training's identity (a run may resume with other values), as are ``max_iters`` and
``checkpoint_every``.

The crop size is the model's ``image_size``. ``val.kind: test`` (select on the test episodes, as the
authors did) is refused unless ``--select-on-test`` is given, and then tagged everywhere.

The schema is :class:`TrainFile` (pydantic), its ``train:``, ``train.augment:`` and ``val:`` blocks
:class:`TrainBlock`, :class:`AugmentBlock` and :class:`ValBlock`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PlainValidator, ValidationInfo, model_validator

from benchmark.data.classes import COCO_SPLITS, DATASETS, NUM_FOLDS
from benchmark.episodes.manifests import HOLDOUT_FRACTION, VAL_SOURCES
from benchmark.errors import FssBenchError
from benchmark.file_paths import train_path_fields
from benchmark.io_utils import canonical_json
from benchmark.methods import get_method, get_trainable, trainable_method_names
from benchmark.specs.errors import did_you_mean, in_file, invalid, located, validate
from benchmark.specs.fields import (
    UNSET,
    Block,
    FileSchema,
    check_weights,
    context,
    data_root,
    is_number,
    non_empty_text,
    number,
    one_of,
)
from benchmark.specs.overrides import blame_override, read_overridden
from fssam.augment import AugmentConfig

TOP_LEVEL = ("name", "description", "method", "data", "fold", "shot", "split", "model", "train", "val")
DEFAULT_METHOD = "fssam"  # a training file without ``method:``
# what does not change the trained weights (left out of the training's identity)
RUN_ONLY = ("checkpoint_every", "max_iters", "workers", "dist_timeout_s")
VAL_CADENCES = ("authors", "epoch")


@dataclass
class TrainSpec:
    name: str
    description: str
    source: str
    method: str
    dataset: str
    data_root: Path
    fold: int
    shot: int
    split: str
    settings: dict[str, Any]  # the method's resolved settings
    train: dict[str, Any]
    augment: AugmentConfig
    val: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def random_init(self) -> bool:
        return bool(self.settings.get("random_init"))

    @property
    def selects_on_test(self) -> bool:
        return self.val["kind"] == "test"

    def identity(self) -> dict[str, Any]:
        """What the trained weights depend on (a resume file must come from the same)."""
        t = {k: v for k, v in self.train.items() if k not in RUN_ONLY}
        return {
            "method": self.method,
            "dataset": self.dataset,
            "data_root": str(self.data_root),
            "fold": self.fold,
            "shot": self.shot,
            "split": self.split,
            "settings": {k: v for k, v in sorted(self.settings.items()) if k != "precision"},
            "train": t,
            "val": self.val,
        }

    @property
    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()


def _scale(value: Any) -> list[float]:
    ok = isinstance(value, list) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value)
    if not ok or not 0 < value[0] <= value[1]:
        raise invalid(f"expected [low, high] with 0 < low <= high, got {value!r}")
    return value


def _fraction(value: Any) -> float:
    """A probability or fraction: a number in [0, 1]."""
    if not is_number(value) or value < 0:
        raise invalid(f"expected a number >= 0, got {value!r}")
    if value > 1:
        raise invalid(f"a probability or fraction in [0, 1], got {value}")
    return value


class AugmentBlock(Block):
    """``train.augment:`` the release's augmentation (fssam/augment.py)."""

    not_a_mapping = "expected a mapping"
    listed = "sorted"

    scale: Annotated[list[float], PlainValidator(_scale)] = Field(default_factory=lambda: [0.9, 1.1])
    rotate: Annotated[float, number("float", 0)] = 10.0
    rotate_p: Annotated[float, PlainValidator(_fraction)] = 0.5
    blur_p: Annotated[float, PlainValidator(_fraction)] = 0.5
    flip_p: Annotated[float, PlainValidator(_fraction)] = 0.5
    fg_keep: Annotated[float, PlainValidator(_fraction)] = 0.85
    crop_tries: Annotated[int, number("int", 1)] = 32  # the release: a first crop + up to 31 re-draws


class TrainBlock(Block):
    """``train:`` the authors' recipe (spec section 8) by default."""

    not_a_mapping = "expected a mapping"
    listed = "sorted"

    epochs: Annotated[int, number("int", 1)] = 300
    batch_size: Annotated[int, number("int", 1)] = 2
    lr: Annotated[float, number("float", 0, convert=True)] = 1e-3
    weight_decay: Annotated[float, number("float", 0, convert=True)] = 0.0
    power: Annotated[float, number("float", 0, convert=True)] = 0.9
    seed: Annotated[int, number("int", 0)] = 321
    max_iters: Annotated[int | None, number("int", 1, nullable=True, null_said=False)] = None
    checkpoint_every: Annotated[int, number("int", 1)] = 100
    workers: Annotated[int, number("int", 0)] = 4
    dist_timeout_s: Annotated[int, number("int", 1)] = 7200
    augment: AugmentBlock = None


def _every(value: Any) -> int | str:
    if value not in VAL_CADENCES and (not is_number(value, integer=True) or value < 1):
        raise in_file(
            f"val.every (iterations, 'authors' or 'epoch'): expected an integer >= 1, got {value!r}"
        )
    return value


class ValBlock(Block):
    """``val:`` model selection on validation episodes (base classes)."""

    not_a_mapping = "expected a mapping"
    listed = "sorted"

    episodes: Annotated[int, number("int", 1)] = 1000
    every: Annotated[int | str, PlainValidator(_every)] = "authors"
    patience: Annotated[int, number("int", 1)] = 100
    seed: Annotated[int, number("int", 0)] = 321
    kind: Annotated[str, one_of(("val", "test"))] = "val"
    source: Annotated[str, one_of(VAL_SOURCES)] = "val"
    holdout_fraction: Any = None

    @model_validator(mode="after")
    def _holdout(self) -> ValBlock:
        if self.source != "train-holdout":
            if self.holdout_fraction is not None:
                raise invalid("applies to val.source: train-holdout only", "holdout_fraction")
            return self
        if self.kind != "val":
            raise invalid("train-holdout applies to val.kind: val only", "source")
        if self.holdout_fraction is None:
            self.holdout_fraction = HOLDOUT_FRACTION
        if not is_number(self.holdout_fraction) or not 0 < self.holdout_fraction < 1:
            raise invalid(f"expected a number in (0, 1), got {self.holdout_fraction!r}", "holdout_fraction")
        return self


def _method(value: Any) -> str:
    try:
        get_trainable(value)
    except FssBenchError as e:
        raise invalid(str(e)) from None
    return value


def _data(value: Any, info: ValidationInfo) -> tuple[str, Path]:
    if not isinstance(value, dict) or len(value) != 1:
        raise invalid("expected one dataset -> prepared root, e.g. {pascal: data/pascal}")
    ((dataset, root),) = value.items()
    if dataset not in DATASETS:
        raise invalid(f"unknown dataset; expected one of {list(DATASETS)}", dataset)
    return dataset, data_root(dataset, root, info)


def _fold(value: Any) -> int:
    if not is_number(value, integer=True) or value < 0:
        raise invalid(f"expected an integer >= 0, got {value!r}")
    if value >= NUM_FOLDS:
        raise invalid(f"{value} is out of range [0, {NUM_FOLDS - 1}]")
    return value


def _model(value: Any, info: ValidationInfo) -> dict[str, Any]:
    """The method's resolved settings from ``model:``, its weights checked."""
    method = info.data.get("method")
    model = value or {}
    if not isinstance(model, dict):
        raise invalid(f"expected a mapping of {method} settings")
    trainable = [get_method(m) for m in trainable_method_names()]
    refused = dict.fromkeys(key for e in trainable for key in e.trainable.refused)  # ordered, unique
    for key in (*refused, "device"):
        if model.get(key):
            raise invalid(
                "training starts from the pretrained SAM 2 (and DINOv2) weights; "
                + ("the device is a command-line option (--device)" if key == "device" else "remove it"),
                key,
            )
    # like a study's model defaults: the method takes the settings it has (a training file serves
    # every trainable method alike); a key that no trainable method has is a typo
    known = set().union(*(e.all_defaults for e in trainable))
    for key in model:
        if key not in known:
            raise invalid(
                f"unknown setting for every trainable method{did_you_mean(key, known)}; known: {sorted(known)}",
                key,
            )
    if method is None:  # the method failed: that is the error
        return model
    try:
        return _settings(get_method(method), model, context(info, "source", ""), context(info, "base_dir"))
    except FssBenchError as e:
        raise located(str(e)) from None


def _settings(entry: Any, model: dict[str, Any], source: str, base_dir: Path | None) -> dict[str, Any]:
    settings = entry.resolve(
        {k: v for k, v in model.items() if k in entry.all_defaults}, where=f"{source}: model"
    )
    if settings.get("random_init"):
        settings.update({key: None for key in entry.checkpoints})
    for key in entry.checkpoints:
        if settings.get(key):
            path = Path(str(settings[key]))
            settings[key] = str(path if path.is_absolute() else (base_dir or Path.cwd()) / path)
    try:
        sources = entry.weight_sources(settings)
    except FssBenchError as e:
        raise FssBenchError(f"{source}: model.{e}") from None
    check_weights(sources, lambda role: f"{source}: model.{role}_checkpoint")
    return settings


class TrainFile(FileSchema):
    """The schema of a training file, checked field by field in this order."""

    what = "training file"
    known = TOP_LEVEL

    name: Annotated[str, non_empty_text(" (the MLflow experiment)")] = UNSET
    description: Any = ""
    method: Annotated[str, PlainValidator(_method)] = DEFAULT_METHOD
    data: Annotated[tuple[str, Path], PlainValidator(_data)] = UNSET
    fold: Annotated[int, PlainValidator(_fold)] = 0
    shot: Annotated[int, number("int", 1)] = 1
    split: Annotated[str, one_of(COCO_SPLITS)] = "interleaved"
    model: Annotated[dict[str, Any], PlainValidator(_model)] = None
    train: TrainBlock = None
    val: ValBlock = None

    def to_spec(self, raw: dict[str, Any], source: str) -> TrainSpec:
        """The :class:`TrainSpec` this file describes (``raw``: the file after overrides)."""
        train = self.train.values()
        aug = train["augment"]
        augment = AugmentConfig(
            scale=(float(aug["scale"][0]), float(aug["scale"][1])),
            rotate=float(aug["rotate"]),
            rotate_p=float(aug["rotate_p"]),
            blur_p=float(aug["blur_p"]),
            flip_p=float(aug["flip_p"]),
            crop=int(self.model["image_size"]),
            fg_keep=float(aug["fg_keep"]),
            crop_tries=int(aug["crop_tries"]),
        )
        return TrainSpec(
            name=self.name.strip(),
            description=str(self.description),
            source=source,
            method=self.method,
            dataset=self.data[0],
            data_root=self.data[1],
            fold=self.fold,
            shot=self.shot,
            split=self.split,
            settings=self.model,
            train=train,
            augment=augment,
            val=self.val.values(),
            raw=raw,
        )


def parse_train(raw: dict[str, Any], source: str = "<train>", base_dir: Path | None = None) -> TrainSpec:
    """Validate a training dict; raises FssBenchError naming the field."""
    return validate(TrainFile, raw, source, base_dir=base_dir or Path.cwd()).to_spec(raw, source)


def load_train(path: Path, overrides: list[str] | None = None) -> TrainSpec:
    """Read, override and validate a training file. Its paths resolve relative to its folder, those
    of overrides against the working directory (:mod:`benchmark.file_paths`)."""
    path = Path(path)
    raw = read_overridden(path, "training file", train_path_fields, overrides or [])
    try:
        return parse_train(raw, source=str(path), base_dir=path.parent)
    except FssBenchError as e:
        raise blame_override(e, str(path), overrides or []) from None


def check_select_on_test(spec: TrainSpec, allow: bool) -> None:
    if spec.selects_on_test and not allow:
        raise FssBenchError(
            f"{spec.source}: val.kind: test would select the checkpoint on the test episodes that reports "
            "score (the authors did; the numbers are then not test results); use val.kind: val, or pass "
            "--select-on-test, which tags the run fss.tuned_on_test=true"
        )
