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
when ``epochs <= 100`` and after epoch index 100 otherwise; :func:`benchmark.trainer.validation_due`);
``workers`` and ``dist_timeout_s`` do not change the trained weights and are left out of the
training's identity (a run may resume with other values), as are ``max_iters`` and
``checkpoint_every``.

The crop size is the model's ``image_size``. ``val.kind: test`` (select on the test episodes, as the
authors did) is refused unless ``--select-on-test`` is given, and then tagged everywhere.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.data.classes import COCO_SPLITS, DATASETS, NUM_FOLDS
from benchmark.episodes.manifests import HOLDOUT_FRACTION, VAL_SOURCES
from benchmark.errors import FssBenchError
from benchmark.file_paths import resolve_paths, train_path_fields
from benchmark.io_utils import canonical_json
from benchmark.methods import get_method, get_trainable, trainable_method_names
from benchmark.study import (
    _blame_override,
    apply_overrides,
    check_checkpoint_file,
    did_you_mean,
    prepared_root,
)
from fssam.augment import AugmentConfig

TOP_LEVEL = ("name", "description", "method", "data", "fold", "shot", "split", "model", "train", "val")
DEFAULT_METHOD = "fssam"  # a training file without ``method:``
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 300,
    "batch_size": 2,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "power": 0.9,
    "seed": 321,
    "max_iters": None,
    "checkpoint_every": 100,
    "workers": 4,
    "dist_timeout_s": 7200,
    "augment": {},
}
# what does not change the trained weights (left out of the training's identity)
RUN_ONLY = ("checkpoint_every", "max_iters", "workers", "dist_timeout_s")
VAL_CADENCES = ("authors", "epoch")
AUGMENT_DEFAULTS: dict[str, Any] = {
    "scale": [0.9, 1.1],
    "rotate": 10.0,
    "rotate_p": 0.5,
    "blur_p": 0.5,
    "flip_p": 0.5,
    "fg_keep": 0.85,
    "crop_tries": 32,  # the release: a first crop + up to 31 re-draws (fssam/augment.py)
}
VAL_DEFAULTS: dict[str, Any] = {
    "episodes": 1000,
    "every": "authors",
    "patience": 100,
    "seed": 321,
    "kind": "val",
    "source": "val",
    "holdout_fraction": None,
}


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


def _number(
    value: Any, where: str, lo: float | None = None, integer: bool = False, nullable: bool = False
) -> Any:
    if value is None and nullable:
        return None
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (not integer or isinstance(value, int))
    )
    if not ok or (lo is not None and value < lo):
        kind = "an integer" if integer else "a number"
        raise FssBenchError(f"{where}: expected {kind}{f' >= {lo}' if lo is not None else ''}, got {value!r}")
    return value


def _section(raw: Any, defaults: dict[str, Any], where: str) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise FssBenchError(f"{where}: expected a mapping")
    for key in raw:
        if key not in defaults:
            raise FssBenchError(
                f"{where}.{key}: unknown field{did_you_mean(key, defaults)}; known: {sorted(defaults)}"
            )
    return {**copy.deepcopy(defaults), **raw}


def parse_train(raw: dict[str, Any], source: str = "<train>", base_dir: Path | None = None) -> TrainSpec:
    """Validate a training dict; raises FssBenchError naming the field."""
    if not isinstance(raw, dict):
        raise FssBenchError(f"{source}: a training file must be a YAML mapping")
    for key in raw:
        if key not in TOP_LEVEL:
            raise FssBenchError(
                f"{source}: {key}: unknown field{did_you_mean(key, TOP_LEVEL)}; known: {list(TOP_LEVEL)}"
            )
    base_dir = base_dir or Path.cwd()
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise FssBenchError(f"{source}: name: expected a non-empty string (the MLflow experiment)")
    method = raw.get("method", DEFAULT_METHOD)
    try:
        get_trainable(method)
    except FssBenchError as e:
        raise FssBenchError(f"{source}: method: {e}") from None
    data = raw.get("data")
    if not isinstance(data, dict) or len(data) != 1:
        raise FssBenchError(
            f"{source}: data: expected one dataset -> prepared root, e.g. {{pascal: data/pascal}}"
        )
    ((dataset, root_text),) = data.items()
    if dataset not in DATASETS:
        raise FssBenchError(f"{source}: data.{dataset}: unknown dataset; expected one of {list(DATASETS)}")
    root = prepared_root(dataset, root_text, source, base_dir)
    fold = _number(raw.get("fold", 0), f"{source}: fold", 0, integer=True)
    if fold >= NUM_FOLDS:
        raise FssBenchError(f"{source}: fold: {fold} is out of range [0, {NUM_FOLDS - 1}]")
    shot = _number(raw.get("shot", 1), f"{source}: shot", 1, integer=True)
    split = raw.get("split", "interleaved")
    if split not in COCO_SPLITS:
        raise FssBenchError(f"{source}: split: {split!r} is not one of {list(COCO_SPLITS)}")

    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise FssBenchError(f"{source}: model: expected a mapping of {method} settings")
    entry = get_method(method)
    trainable = [get_method(m) for m in trainable_method_names()]
    refused = dict.fromkeys(key for e in trainable for key in e.trainable.refused)  # ordered, unique
    for key in (*refused, "device"):
        if model.get(key):
            raise FssBenchError(
                f"{source}: model.{key}: training starts from the pretrained SAM 2 (and DINOv2) weights; "
                + ("the device is a command-line option (--device)" if key == "device" else "remove it")
            )
    # like a study's model defaults: the method takes the settings it has (a training file serves
    # every trainable method alike); a key that no trainable method has is a typo
    known = set().union(*(e.all_defaults for e in trainable))
    for key in model:
        if key not in known:
            raise FssBenchError(
                f"{source}: model.{key}: unknown setting for every trainable method{did_you_mean(key, known)}; "
                f"known: {sorted(known)}"
            )
    settings = entry.resolve(
        {k: v for k, v in model.items() if k in entry.all_defaults}, where=f"{source}: model"
    )
    if settings.get("random_init"):
        settings.update({key: None for key in entry.checkpoints})
    for key in entry.checkpoints:
        if settings.get(key):
            path = Path(str(settings[key]))
            settings[key] = str(path if path.is_absolute() else base_dir / path)
    try:
        sources = entry.weight_sources(settings)
    except FssBenchError as e:
        raise FssBenchError(f"{source}: model.{e}") from None
    for role, path in sources.items():
        if not path.startswith("random-init:"):
            check_checkpoint_file(path, f"{source}: model.{role}_checkpoint")

    train = _section(raw.get("train"), TRAIN_DEFAULTS, f"{source}: train")
    for key, lo in (
        ("epochs", 1),
        ("batch_size", 1),
        ("checkpoint_every", 1),
        ("seed", 0),
        ("workers", 0),
        ("dist_timeout_s", 1),
    ):
        _number(train[key], f"{source}: train.{key}", lo, integer=True)
    _number(train["max_iters"], f"{source}: train.max_iters", 1, integer=True, nullable=True)
    for key in ("lr", "weight_decay", "power"):
        _number(train[key], f"{source}: train.{key}", 0)
    train["lr"], train["weight_decay"], train["power"] = (
        float(train["lr"]),
        float(train["weight_decay"]),
        float(train["power"]),
    )
    aug = _section(train["augment"], AUGMENT_DEFAULTS, f"{source}: train.augment")
    scale = aug["scale"]
    if not (
        isinstance(scale, list)
        and len(scale) == 2
        and all(isinstance(x, (int, float)) for x in scale)
        and 0 < scale[0] <= scale[1]
    ):
        raise FssBenchError(
            f"{source}: train.augment.scale: expected [low, high] with 0 < low <= high, got {scale!r}"
        )
    for key in ("rotate_p", "blur_p", "flip_p", "fg_keep"):
        value = _number(aug[key], f"{source}: train.augment.{key}", 0)
        if value > 1:
            raise FssBenchError(
                f"{source}: train.augment.{key}: a probability or fraction in [0, 1], got {value}"
            )
    _number(aug["rotate"], f"{source}: train.augment.rotate", 0)
    _number(aug["crop_tries"], f"{source}: train.augment.crop_tries", 1, integer=True)
    train["augment"] = aug
    augment = AugmentConfig(
        scale=(float(scale[0]), float(scale[1])),
        rotate=float(aug["rotate"]),
        rotate_p=float(aug["rotate_p"]),
        blur_p=float(aug["blur_p"]),
        flip_p=float(aug["flip_p"]),
        crop=int(settings["image_size"]),
        fg_keep=float(aug["fg_keep"]),
        crop_tries=int(aug["crop_tries"]),
    )
    val = _section(raw.get("val"), VAL_DEFAULTS, f"{source}: val")
    _number(val["episodes"], f"{source}: val.episodes", 1, integer=True)
    _number(val["patience"], f"{source}: val.patience", 1, integer=True)
    _number(val["seed"], f"{source}: val.seed", 0, integer=True)
    if val["every"] not in VAL_CADENCES:
        _number(val["every"], f"{source}: val.every (iterations, 'authors' or 'epoch')", 1, integer=True)
    if val["kind"] not in ("val", "test"):
        raise FssBenchError(f"{source}: val.kind: {val['kind']!r} is not one of ['val', 'test']")
    if val["source"] not in VAL_SOURCES:
        raise FssBenchError(f"{source}: val.source: {val['source']!r} is not one of {list(VAL_SOURCES)}")
    if val["source"] == "train-holdout":
        if val["kind"] != "val":
            raise FssBenchError(f"{source}: val.source: train-holdout applies to val.kind: val only")
        if val["holdout_fraction"] is None:
            val["holdout_fraction"] = HOLDOUT_FRACTION
        fraction = val["holdout_fraction"]
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise FssBenchError(
                f"{source}: val.holdout_fraction: expected a number in (0, 1), got {fraction!r}"
            )
    elif val["holdout_fraction"] is not None:
        raise FssBenchError(f"{source}: val.holdout_fraction: applies to val.source: train-holdout only")
    return TrainSpec(
        name=name.strip(),
        description=str(raw.get("description", "")),
        source=source,
        method=method,
        dataset=dataset,
        data_root=root,
        fold=fold,
        shot=shot,
        split=split,
        settings=settings,
        train=train,
        augment=augment,
        val=val,
        raw=raw,
    )


def load_train(path: Path, overrides: list[str] | None = None) -> TrainSpec:
    """Read, override and validate a training file. Its paths resolve relative to its folder, those
    of overrides against the working directory (:mod:`benchmark.file_paths`)."""
    path = Path(path)
    if not path.is_file():
        raise FssBenchError(f"{path}: training file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise FssBenchError(f"{path}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if isinstance(raw, dict):
        raw = resolve_paths(raw, train_path_fields, path.parent)
    raw = apply_overrides(raw, overrides or [], train_path_fields)
    try:
        return parse_train(raw, source=str(path), base_dir=path.parent)
    except FssBenchError as e:
        raise _blame_override(e, str(path), overrides or []) from None


def check_select_on_test(spec: TrainSpec, allow: bool) -> None:
    if spec.selects_on_test and not allow:
        raise FssBenchError(
            f"{spec.source}: val.kind: test would select the checkpoint on the test episodes that reports "
            "score (the authors did; the numbers are then not test results); use val.kind: val, or pass "
            "--select-on-test, which tags the run fss.tuned_on_test=true"
        )
