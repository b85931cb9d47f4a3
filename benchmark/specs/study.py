"""Study files: which variants, datasets, folds, shots and seeds to run, validated before any work.

A study file is YAML (see ``ablations/``)::

    name: component-ablation              # the MLflow experiment
    data: {pascal: ../data/pascal}        # dataset -> prepared data root (relative to this file)
    protocol: fssam                       # episode protocol (fssam | hsnet | fssam-exact)
    loader_workers: 32                    # fssam-exact only: the authors' DataLoader workers
    lists: own                            # fssam-exact only: own (the root's) | authors (PASCAL)
    eval: {resolution: original}          # scoring: original | resized (size: 400); default: the protocol's
    folds: [0, 1, 2, 3]
    shots: [1, 5]
    seeds: [321]                          # one manifest per seed; {count: 5, base: 123}: BAM's draw
    episodes: 1000                        # per manifest (null: the protocol's default)
    split: interleaved                    # COCO class split
    val_source: val                       # searches' val manifests: val split | train-holdout
    holdout_fraction: 0.1                 # train-holdout only: the share of the train split held out
    batch_size: 1                         # episodes per forward (how, not what: not in the cell key)
    cache: {dtype: fp32, max_gb: null, stages_gb: 1}  # feature storage, disk bound, shared stages
    resources: {gpus_per_cell: null, cpus_per_cell: 1}  # --engine ray: what each worker reserves
    model: {...}                          # defaults for every variant (FSSAMConfig fields, checkpoints, device)
    variants:
      fssam: {}                           # method fssam with the defaults
      no-imr: {imr_iters: 0}
      naive: {method: naive_sam2}

A variant's ``method`` is a registered method (``benchmark.methods``: fssam, naive_sam2,
mean_colour, all_foreground); each method validates its own switches, and its resolved settings
(every default filled in) are what a cell records (:mod:`benchmark.specs.variants`). ``model`` holds
defaults for every variant: a variant takes those its method accepts (a key no method of the study
accepts is an error), plus ``device`` (auto | cpu | cuda[:i]). FSSAM's ``fssam_checkpoint``, the
authors' trained checkpoint, is a template that may use ``{dataset}``, ``{fold}``, ``{shot}`` and
``{arch}`` (FSSAM for 1 shot, FSSAM5s otherwise), e.g.
``exp/{dataset}/{arch}/split{fold}/small/snapshot/best_{shot}shot.pth``. ``key=value`` overrides
from the command line use dotted paths (``episodes=20``, ``model.random_init=true``,
``variants.fssam.imr_iters=2``). Paths in the file (data roots, checkpoints) resolve relative to its
folder, paths on the command line against the working directory (:mod:`benchmark.file_paths`).

The schema is :class:`StudyFile` (pydantic): its fields are checked in the order they are declared
and the first bad one is the error (:mod:`benchmark.specs.errors`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PlainValidator, ValidationInfo

from benchmark.data.classes import COCO_SPLITS, DATASETS, NUM_FOLDS
from benchmark.device import FEATURE_DTYPE_NAMES, check_device
from benchmark.episodes import get_protocol, protocol_names
from benchmark.episodes.manifests import HOLDOUT_FRACTION, SEED_MAX, VAL_SOURCES, check_seed
from benchmark.episodes.protocols.fssam_exact import EXACT_LISTS
from benchmark.errors import FssBenchError
from benchmark.file_paths import study_path_fields
from benchmark.methods import get_method, method_names
from benchmark.specs.errors import did_you_mean, in_file, invalid, located, validate
from benchmark.specs.fields import (
    UNSET,
    Block,
    FileSchema,
    context,
    data_root,
    int_list,
    int_list_field,
    is_number,
    non_empty_text,
    number,
    one_of,
)
from benchmark.specs.overrides import blame_override, read_overridden
from benchmark.specs.variants import HARNESS_FIELDS, Cells, Variant, parse_variant

TOP_LEVEL = (  # the fields as the documentation lists them (checked in StudyFile's order)
    "name",
    "description",
    "data",
    "protocol",
    "folds",
    "shots",
    "seeds",
    "episodes",
    "split",
    "batch_size",
    "loader_workers",
    "lists",
    "val_source",
    "holdout_fraction",
    "eval",
    "cache",
    "resources",
    "model",
    "variants",
)
CACHE_FIELDS = {
    "dtype": "storage dtype of cached frozen features: fp32 | fp16 | bf16 (changes the numbers, so it is in the cell key)",
    "max_gb": "bound on the disk feature cache, least recently used files evicted (null: unbounded)",
    "stages_gb": "memory for episode stages shared across variants (support memory, priors, IMR); 0: off",
}
RESOURCE_FIELDS = {
    "gpus_per_cell": "GPUs each Ray worker reserves (null: 1 on a cluster with GPUs, else 0)",
    "cpus_per_cell": "CPUs each Ray worker reserves, its torch threads (default 1)",
}


@dataclass(frozen=True)
class CacheSettings:
    """A study's ``cache:`` block (see :data:`CACHE_FIELDS`)."""

    dtype: str = "fp32"
    max_gb: float | None = None
    stages_gb: float = 1.0


@dataclass(frozen=True)
class Resources:
    """A study's ``resources:`` block (see :data:`RESOURCE_FIELDS`): how, not what (not in the key)."""

    gpus_per_cell: float | None = None
    cpus_per_cell: float = 1.0


@dataclass
class Study:
    name: str
    data: dict[str, Path]
    protocol: str
    folds: list[int]
    shots: list[int]
    seeds: list[int]
    episodes: int | None
    split: str
    variants: list[Variant]
    description: str = ""
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    cache: CacheSettings = field(default_factory=CacheSettings)
    resources: Resources = field(default_factory=Resources)
    loader_workers: int = 32
    lists: str = "own"
    eval_resolution: str | None = None
    eval_size: int | None = None
    val_source: str = "val"  # where kind-val manifests (searches) draw from
    holdout_fraction: float | None = None  # val_source train-holdout only (default 0.1)
    file_text: str = ""  # the study file as written (the parent run's artifact)
    overrides: tuple[str, ...] = ()  # the command-line key=value overrides, in order

    @property
    def random_init(self) -> bool:
        return any(v.settings.get("random_init") for v in self.variants)

    def resolved(self) -> dict[str, Any]:
        """The study as it runs: the file with the overrides applied, and every variant's resolved
        settings (method defaults included)."""
        variants = {v.name: {"method": v.method, "device": v.device, **v.settings} for v in self.variants}
        return {**self.raw, "variants": variants}


def bam_seeds(value: Any) -> Any:
    """``seeds: {count: N, base: B}`` -> BAM's evaluation seeds: ``setup_seed(B)`` then
    ``np.random.randint(0, 1000, N)`` (BAM: base 123, 5 seeds -> [510, 365, 382, 322, 988]); a list
    (or one integer) is returned as it is."""
    if not isinstance(value, dict):
        return value
    if set(value) != {"count", "base"} or not all(is_number(value[k], integer=True) for k in value):
        raise FssBenchError(f"seeds: expected a list of integers or {{count: N, base: B}}, got {value!r}")
    if not 1 <= value["count"] <= 1000:
        raise FssBenchError(f"seeds.count must be in 1..1000, got {value['count']}")
    check_seed(value["base"], "seeds.base")
    import numpy as np

    seeds = [int(x) for x in np.random.RandomState(value["base"]).randint(0, 1000, value["count"])]
    if len(set(seeds)) != len(seeds):
        raise FssBenchError(f"seeds {value}: BAM's draw repeats a seed ({seeds}); choose another base")
    return seeds


class CacheBlock(Block):
    """``cache:`` (see :data:`CACHE_FIELDS`)."""

    dtype: Annotated[str, one_of(FEATURE_DTYPE_NAMES)] = "fp32"
    max_gb: Annotated[float | None, number("float", 0, nullable=True, convert=True)] = None
    stages_gb: Annotated[float, number("float", 0, convert=True)] = 1.0


class ResourcesBlock(Block):
    """``resources:`` (see :data:`RESOURCE_FIELDS`)."""

    gpus_per_cell: Annotated[float | None, number("float", 0, nullable=True, convert=True)] = None
    cpus_per_cell: Annotated[float, number("float", 0, above=True, convert=True)] = 1.0


def _data(value: Any, info: ValidationInfo) -> dict[str, Path]:
    if not isinstance(value, dict) or not value:
        raise invalid("expected a mapping dataset -> prepared data root, e.g. {pascal: data/pascal}")
    roots = {}
    for ds, root in value.items():
        if ds not in DATASETS:
            raise invalid(
                f"unknown dataset{did_you_mean(ds, DATASETS)}; expected one of {list(DATASETS)}", ds
            )
        roots[ds] = data_root(ds, root, info)
    return roots


def _seeds(value: Any, info: ValidationInfo) -> list[int]:
    if value is UNSET:
        protocol = info.data.get("protocol")
        value = [get_protocol(protocol).default_seed] if protocol in protocol_names() else [0]
    try:
        value = bam_seeds(value)
    except FssBenchError as e:
        raise in_file(str(e)) from None
    return int_list(value, 0, SEED_MAX)


def _protocol_option(value: Any, info: ValidationInfo, default: Any) -> Any:
    """A setting that only some protocols take (their ``user_options``): refused under another
    protocol, ``default`` if absent."""
    if value is UNSET:
        return default
    protocol, key = info.data.get("protocol"), info.field_name
    if protocol is not None and key not in get_protocol(protocol).user_options:
        takes = [p for p in protocol_names() if key in get_protocol(p).user_options]
        raise invalid(f"applies to protocol {' or '.join(takes)} only (protocol is {protocol})")
    return value


def _protocol(value: Any) -> str:
    """A registered protocol's name (registered when the study is read, so user protocols count)."""
    names = protocol_names()
    try:
        known = value in names
    except TypeError:  # unhashable: a list or a mapping
        known = False
    if not known:
        raise invalid(f"{value!r} is not one of {names}{did_you_mean(value, names)}")
    return value


def _loader_workers(value: Any, info: ValidationInfo) -> int:
    value = _protocol_option(value, info, 32)
    if not is_number(value, integer=True) or value < 0:
        raise invalid(f"expected an integer >= 0, got {value!r}")
    return value


def _lists(value: Any, info: ValidationInfo) -> str:
    value = _protocol_option(value, info, "own")
    if value not in EXACT_LISTS:
        raise invalid(f"{value!r} is not one of {list(EXACT_LISTS)}")
    others = sorted(set(info.data.get("data") or {}) - {"pascal"})
    if value == "authors" and others:
        raise invalid(
            "authors: the FSSAM release's lists shipped here are PASCAL's, but the study "
            f"also runs {others}; use lists: own"
        )
    return value


def _holdout_fraction(value: Any, info: ValidationInfo) -> float | None:
    val_source = info.data.get("val_source")
    if value is None:
        return HOLDOUT_FRACTION if val_source == "train-holdout" else None
    if val_source != "train-holdout":
        raise invalid(f"applies to val_source: train-holdout only (val_source is {val_source})")
    if not is_number(value) or not 0 < value < 1:
        raise invalid(f"expected a number in (0, 1), got {value!r}")
    return value


def _eval(value: Any, info: ValidationInfo) -> dict[str, Any]:
    ev = value or {}
    if not isinstance(ev, dict) or set(ev) - {"resolution", "size"}:
        raise invalid(f"expected {{resolution: original|resized, size: 400}}, got {ev!r}")
    protocol = info.data.get("protocol")
    try:
        for ds in (info.data.get("data") or {}) if protocol else ():  # now, not at the first manifest
            get_protocol(protocol).evaluation(ds, ev.get("resolution"), ev.get("size"))
    except FssBenchError as e:
        raise invalid(str(e)) from None
    return ev


def _model(value: Any) -> dict[str, Any]:
    """Defaults for every variant: a key no registered method accepts is a typo."""
    model = value or {}
    if not isinstance(model, dict):
        raise invalid("expected a mapping of model settings")
    known = set(HARNESS_FIELDS).union(*(get_method(m).all_defaults for m in method_names()))
    for key in model:
        if key not in known:
            raise invalid(
                f"unknown setting for every method{did_you_mean(key, known)}; known: {sorted(known)}", key
            )
    return model


def _variants(value: Any, info: ValidationInfo) -> list[Variant] | dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise invalid("expected a non-empty mapping name -> switches")
    for vname, switches in value.items():
        if switches is not None and not isinstance(switches, dict):
            raise invalid("expected a mapping of switches", vname)
        method = (switches or {}).get("method", "fssam")
        if method not in method_names():
            raise invalid(
                f"{method!r} is not one of {method_names()}{did_you_mean(method, method_names())}",
                vname,
                "method",
            )
    needed = ("data", "folds", "shots", "model")
    if any(k not in info.data for k in needed):  # an earlier field failed: that is the error
        return value
    cells = Cells(tuple(info.data["data"]), tuple(info.data["folds"]), tuple(info.data["shots"]))
    source, base_dir = context(info, "source", ""), context(info, "base_dir") or Path.cwd()
    try:
        return [
            parse_variant(str(n), s or {}, info.data["model"], cells, source, base_dir)
            for n, s in value.items()
        ]
    except FssBenchError as e:
        raise located(str(e)) from None


class StudyFile(FileSchema):
    """The schema of a study file, checked field by field in this order."""

    what = "study file"
    known = TOP_LEVEL

    name: Annotated[str, non_empty_text()] = UNSET
    description: Any = ""
    data: Annotated[dict[str, Path], PlainValidator(_data)] = UNSET
    protocol: Annotated[str, PlainValidator(_protocol)] = "fssam"
    folds: Annotated[list[int], int_list_field(0, NUM_FOLDS - 1)] = Field(
        default_factory=lambda: [0, 1, 2, 3]
    )
    shots: Annotated[list[int], int_list_field(1, None)] = Field(default_factory=lambda: [1])
    seeds: Annotated[list[int], PlainValidator(_seeds)] = UNSET
    episodes: Annotated[int | None, number("int", 1, nullable=True, what="a positive integer")] = None
    split: Annotated[str, one_of(COCO_SPLITS)] = "interleaved"
    batch_size: Annotated[int, number("int", 1, what="a positive integer")] = 1
    cache: CacheBlock = None  # null: every default
    resources: ResourcesBlock = None
    loader_workers: Annotated[int, PlainValidator(_loader_workers)] = UNSET
    lists: Annotated[str, PlainValidator(_lists)] = UNSET
    val_source: Annotated[str, one_of(VAL_SOURCES)] = "val"
    holdout_fraction: Annotated[float | None, PlainValidator(_holdout_fraction)] = None
    eval: Annotated[dict[str, Any], PlainValidator(_eval)] = None
    model: Annotated[dict[str, Any], PlainValidator(_model)] = None
    variants: Annotated[list[Variant], PlainValidator(_variants)] = UNSET

    def to_study(self, source: str, raw: dict[str, Any]) -> Study:
        """The :class:`Study` this file describes (``raw``: the file after overrides)."""
        ev = self.eval
        return Study(
            name=self.name.strip(),
            data=self.data,
            protocol=self.protocol,
            folds=self.folds,
            shots=self.shots,
            seeds=self.seeds,
            episodes=self.episodes,
            split=self.split,
            variants=self.variants,
            description=str(self.description),
            source=source,
            raw=raw,
            batch_size=self.batch_size,
            cache=CacheSettings(**self.cache.values()),
            resources=Resources(**self.resources.values()),
            loader_workers=self.loader_workers,
            lists=self.lists,
            eval_resolution=ev.get("resolution"),
            eval_size=ev.get("size"),
            val_source=self.val_source,
            holdout_fraction=self.holdout_fraction,
        )


def parse_study(raw: dict[str, Any], source: str = "<study>", base_dir: Path | None = None) -> Study:
    """Validate a study dict. Raises FssBenchError naming the offending field."""
    spec = validate(StudyFile, raw, source, base_dir=base_dir or Path.cwd())
    return spec.to_study(source, raw)


def with_device(study: Study, device: str, where: str = "--device") -> Study:
    """The study with every variant on ``device`` (validated now, naming ``where``)."""
    check_device(device, where)
    return dataclasses.replace(
        study, variants=[dataclasses.replace(v, device=device) for v in study.variants]
    )


def load_study(path: Path, overrides: list[str] | None = None) -> Study:
    """Read, override and validate a study file. Its paths resolve relative to its folder, those of
    overrides against the working directory (:mod:`benchmark.file_paths`)."""
    path = Path(path)
    raw = read_overridden(path, "study file", study_path_fields, overrides or [])
    try:
        study = parse_study(raw, source=str(path), base_dir=path.parent)
    except FssBenchError as e:
        raise blame_override(e, str(path), overrides or []) from None
    study.file_text, study.overrides = path.read_text(encoding="utf-8"), tuple(overrides or ())
    return study
