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
(every default filled in) are what a cell records. ``model`` holds defaults for every variant: a
variant takes those its method accepts (a key no method of the study accepts is an error), plus
``device`` (auto | cpu | cuda[:i]). FSSAM's ``fssam_checkpoint``, the authors' trained checkpoint,
is a template that may use ``{dataset}``, ``{fold}``, ``{shot}`` and ``{arch}`` (FSSAM for 1 shot,
FSSAM5s otherwise), e.g. ``exp/{dataset}/{arch}/split{fold}/small/snapshot/best_{shot}shot.pth``. ``key=value`` overrides from the command line use dotted paths
(``episodes=20``, ``model.random_init=true``, ``variants.fssam.imr_iters=2``). Paths in the file
(data roots, checkpoints) resolve relative to its folder, paths on the command line against the
working directory (:mod:`benchmark.file_paths`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.data.classes import COCO_SPLITS, DATASETS, NUM_FOLDS
from benchmark.data.prepared import PreparedDataset
from benchmark.device import FEATURE_DTYPE_NAMES, check_device
from benchmark.episodes import get_protocol, protocol_names
from benchmark.episodes.manifests import HOLDOUT_FRACTION, SEED_MAX, VAL_SOURCES, check_seed
from benchmark.episodes.protocols.fssam_exact import EXACT_LISTS
from benchmark.errors import FssBenchError
from benchmark.file_paths import PathFields, override_value, resolve_paths, study_path_fields
from benchmark.lockfile import check_against_lock
from benchmark.methods import MethodEntry, fill_templates, get_method, method_names

TOP_LEVEL = (
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


@dataclass(frozen=True)
class CacheSettings:
    """A study's ``cache:`` block (see :data:`CACHE_FIELDS`)."""

    dtype: str = "fp32"
    max_gb: float | None = None
    stages_gb: float = 1.0


RESOURCE_FIELDS = {
    "gpus_per_cell": "GPUs each Ray worker reserves (null: 1 on a cluster with GPUs, else 0)",
    "cpus_per_cell": "CPUs each Ray worker reserves, its torch threads (default 1)",
}


@dataclass(frozen=True)
class Resources:
    """A study's ``resources:`` block (see :data:`RESOURCE_FIELDS`): how, not what (not in the key)."""

    gpus_per_cell: float | None = None
    cpus_per_cell: float = 1.0


HARNESS_FIELDS = ("device",)  # model-block settings that belong to the harness, not to a method


@dataclass(frozen=True)
class Variant:
    """A named method with its resolved settings (every setting of the method, defaults included;
    checkpoint templates not yet filled in) and the device it runs on."""

    name: str
    method: str
    settings: dict[str, Any]
    device: str = "auto"
    explicit: frozenset[str] = frozenset()  # the settings the study sets (the rest are defaults)

    def cell_settings(
        self,
        dataset: str,
        fold: int,
        shot: int,
        settings: dict[str, Any] | None = None,
        explicit: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """The settings of one cell: checkpoint templates filled in for (dataset, fold, shot); an
        FSSAM cell that loads the authors' FSSAM5s checkpoint (K > 1) runs ``kshot_mode: released``,
        the K-shot path it was trained with, unless the study sets ``kshot_mode``. ``settings`` replace
        the variant's (a search trial's), ``explicit`` names settings set beyond the study's."""
        base = self.settings if settings is None else settings
        out = fill_templates(get_method(self.method), base, dataset=dataset, fold=fold, shot=shot)
        if "kshot_mode" not in self.explicit | explicit and shot > 1:
            if loads_fssam5s(self.method, out, shot):
                out["kshot_mode"] = "released"
            trained = (
                trained_kshot_mode(out) if "kshot_mode" in get_method(self.method).all_defaults else None
            )
            if trained is not None:  # a checkpoint of `fssbench train` runs the path it was trained with
                out["kshot_mode"] = trained
        return out


def trained_kshot_mode(settings: dict[str, Any]) -> str | None:
    """The K-shot path a fine-tuned checkpoint was trained with, from the record ``fssbench train``
    writes beside it (``best.pth.json``: ``kshot_mode``); None without a local record."""
    path = settings.get("finetuned_checkpoint")
    record = Path(f"{path}.json") if path and not str(path).startswith(MLFLOW_URI_PREFIX) else None
    if record is None or not record.is_file():
        return None
    try:
        mode = json.loads(record.read_text()).get("kshot_mode")
    except (ValueError, OSError, AttributeError):
        return None
    return mode if mode in ("intended", "released") else None


def loads_fssam5s(method: str, settings: dict[str, Any], shot: int) -> bool:
    """Whether a cell (settings with templates filled in) loads one of the authors' 5-shot
    checkpoints, trained with the released K-shot path (spec bug B2): a K > 1 FSSAM cell whose
    checkpoint path names the authors' ``FSSAM5s`` folder (what ``{arch}`` fills in at K > 1)."""
    checkpoint = settings.get("fssam_checkpoint")
    return method == "fssam" and shot > 1 and bool(checkpoint) and "FSSAM5s" in str(checkpoint)


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


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        if not isinstance(cur.get(k), dict):
            cur[k] = {}
        cur = cur[k]
    cur[keys[-1]] = value


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], path_fields: PathFields | None = None
) -> dict[str, Any]:
    """Apply ``key=value`` overrides (values parsed as YAML) to a copy of a file's dict; with
    ``path_fields``, the paths an override gives resolve against the working directory
    (:mod:`benchmark.file_paths`)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise FssBenchError(
                f"override {item!r} is not key=value (e.g. episodes=20, model.random_init=true)"
            )
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise FssBenchError(f"override {item!r}: value is not valid YAML ({e})") from None
        if path_fields is not None:
            parsed = override_value(key.strip(), parsed, path_fields)
        _set_dotted(out, key.strip(), parsed)
    return out


def bam_seeds(value: Any) -> Any:
    """``seeds: {count: N, base: B}`` -> BAM's evaluation seeds: ``setup_seed(B)`` then
    ``np.random.randint(0, 1000, N)`` (BAM: base 123, 5 seeds -> [510, 365, 382, 322, 988]); a list
    (or one integer) is returned as it is."""
    if not isinstance(value, dict):
        return value
    if set(value) != {"count", "base"} or not all(
        isinstance(value[k], int) and not isinstance(value[k], bool) for k in value
    ):
        raise FssBenchError(f"seeds: expected a list of integers or {{count: N, base: B}}, got {value!r}")
    if not 1 <= value["count"] <= 1000:
        raise FssBenchError(f"seeds.count must be in 1..1000, got {value['count']}")
    check_seed(value["base"], "seeds.base")
    import numpy as np

    seeds = [int(x) for x in np.random.RandomState(value["base"]).randint(0, 1000, value["count"])]
    if len(set(seeds)) != len(seeds):
        raise FssBenchError(f"seeds {value}: BAM's draw repeats a seed ({seeds}); choose another base")
    return seeds


def _int_list(raw: dict, key: str, lo: int | None = None, hi: int | None = None) -> list[int]:
    value = raw.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise FssBenchError(f"{key}: expected a non-empty list of integers, got {value!r}")
    for v in value:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise FssBenchError(f"{key}: {v} is out of range: {_range_text(lo, hi)}")
    return list(dict.fromkeys(value))


def _range_text(lo: int | None, hi: int | None) -> str:
    """``each must be >= 1``, ``each must be <= 3`` or ``each must be in 0..3``."""
    if hi is None:
        return f"each must be >= {lo}"
    if lo is None:
        return f"each must be <= {hi}"
    return f"each must be in {lo}..{hi}"


MLFLOW_URI_PREFIX = "runs:/"


def check_checkpoint_file(path: str, where: str) -> None:
    """Fail early, naming the study field, if a checkpoint is missing or not a PyTorch file.
    An MLflow artifact URI (``runs:/<run_id>/<path>``) is checked when the runner downloads it."""
    if str(path).startswith(MLFLOW_URI_PREFIX):
        parts = str(path)[len(MLFLOW_URI_PREFIX) :].split("/", 1)
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise FssBenchError(f"{where}: {path!r} is not an MLflow artifact URI runs:/<run_id>/<path>")
        return
    p = Path(path)
    if not p.is_file() and where.endswith("finetuned_checkpoint"):
        raise FssBenchError(
            f"{where}: fine-tuned checkpoint {p} not found; train it first (fssbench train, README: "
            "Training), point it at another best.pth or a runs:/<run_id>/checkpoint/best.pth URI, or "
            "drop the variant"
        )
    if not p.is_file():
        raise FssBenchError(
            f"{where}: checkpoint {p} not found; fetch it (fssbench fetch weights NAME, or fetch register for "
            "the authors' FSSAM checkpoints; README: Real data and weights), or set model.random_init: true "
            "for a pipeline check"
        )
    check_against_lock(p, where)  # a file fetched or registered must still be the one recorded
    try:
        ok = zipfile.is_zipfile(p) and any(n.endswith("data.pkl") for n in zipfile.ZipFile(p).namelist())
    except OSError as e:
        raise FssBenchError(f"{where}: checkpoint {p} is unreadable ({e})") from None
    if not ok:
        raise FssBenchError(f"{where}: {p} is not a PyTorch checkpoint (expected a torch.save zip file)")


def prepared_root(dataset: str, root: Any, source: str, base_dir: Path) -> Path:
    """The prepared data root of ``data.<dataset>`` (relative to ``base_dir``), checked to hold that dataset."""
    path = Path(str(root)) if Path(str(root)).is_absolute() else base_dir / str(root)
    try:
        prepared = PreparedDataset(path)
    except FssBenchError as e:
        raise FssBenchError(f"{source}: data.{dataset}: {e}") from None
    if prepared.dataset != dataset:
        raise FssBenchError(f"{source}: data.{dataset}: {path} holds a prepared {prepared.dataset!r} dataset")
    return path


def parse_study(raw: dict[str, Any], source: str = "<study>", base_dir: Path | None = None) -> Study:
    """Validate a study dict. Raises FssBenchError naming the offending field."""
    if not isinstance(raw, dict):
        raise FssBenchError(f"{source}: a study file must be a YAML mapping")
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        hint = did_you_mean(unknown[0], TOP_LEVEL)
        more = f" (and {unknown[1:]})" if len(unknown) > 1 else ""
        raise FssBenchError(f"{source}: {unknown[0]}: unknown field{hint}{more}; known: {list(TOP_LEVEL)}")
    base_dir = base_dir or Path.cwd()
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise FssBenchError(f"{source}: name: expected a non-empty string")
    data = raw.get("data")
    if not isinstance(data, dict) or not data:
        raise FssBenchError(
            f"{source}: data: expected a mapping dataset -> prepared data root, e.g. {{pascal: data/pascal}}"
        )
    roots: dict[str, Path] = {}
    for ds, root in data.items():
        if ds not in DATASETS:
            raise FssBenchError(
                f"{source}: data.{ds}: unknown dataset{did_you_mean(ds, DATASETS)}; expected one of {list(DATASETS)}"
            )
        roots[ds] = prepared_root(ds, root, source, base_dir)
    protocol = raw.get("protocol", "fssam")
    if protocol not in protocol_names():
        raise FssBenchError(
            f"{source}: protocol: {protocol!r} is not one of {protocol_names()}{did_you_mean(protocol, protocol_names())}"
        )
    try:
        folds = _int_list({"folds": raw.get("folds", [0, 1, 2, 3])}, "folds", 0, NUM_FOLDS - 1)
        shots = _int_list({"shots": raw.get("shots", [1])}, "shots", 1, None)
        seeds = _int_list(
            {"seeds": bam_seeds(raw.get("seeds", [get_protocol(protocol).default_seed]))},
            "seeds",
            0,
            SEED_MAX,
        )
    except FssBenchError as e:
        raise FssBenchError(f"{source}: {e}") from None
    episodes = raw.get("episodes")
    if episodes is not None and (not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1):
        raise FssBenchError(f"{source}: episodes: expected a positive integer or null, got {episodes!r}")
    split = raw.get("split", "interleaved")
    if split not in COCO_SPLITS:
        raise FssBenchError(f"{source}: split: {split!r} is not one of {list(COCO_SPLITS)}")
    batch_size = raw.get("batch_size", 1)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise FssBenchError(f"{source}: batch_size: expected a positive integer, got {batch_size!r}")
    cache = parse_cache(raw.get("cache"), source)
    resources = parse_resources(raw.get("resources"), source)
    for key in ("loader_workers", "lists"):
        if key in raw and key not in get_protocol(protocol).user_options:
            takes = [p for p in protocol_names() if key in get_protocol(p).user_options]
            raise FssBenchError(
                f"{source}: {key}: applies to protocol {' or '.join(takes)} only (protocol is {protocol})"
            )
    loader_workers = raw.get("loader_workers", 32)
    if not isinstance(loader_workers, int) or isinstance(loader_workers, bool) or loader_workers < 0:
        raise FssBenchError(f"{source}: loader_workers: expected an integer >= 0, got {loader_workers!r}")
    lists = raw.get("lists", "own")
    if lists not in EXACT_LISTS:
        raise FssBenchError(f"{source}: lists: {lists!r} is not one of {list(EXACT_LISTS)}")
    if lists == "authors" and set(roots) - {"pascal"}:
        raise FssBenchError(
            f"{source}: lists: authors: the FSSAM release's lists shipped here are PASCAL's, but the study "
            f"also runs {sorted(set(roots) - {'pascal'})}; use lists: own"
        )
    val_source = raw.get("val_source", "val")
    if val_source not in VAL_SOURCES:
        raise FssBenchError(f"{source}: val_source: {val_source!r} is not one of {list(VAL_SOURCES)}")
    holdout_fraction = raw.get("holdout_fraction")
    if holdout_fraction is not None:
        if val_source != "train-holdout":
            raise FssBenchError(
                f"{source}: holdout_fraction: applies to val_source: train-holdout only (val_source is {val_source})"
            )
        ok = isinstance(holdout_fraction, (int, float)) and not isinstance(holdout_fraction, bool)
        if not ok or not 0 < holdout_fraction < 1:
            raise FssBenchError(
                f"{source}: holdout_fraction: expected a number in (0, 1), got {holdout_fraction!r}"
            )
    elif val_source == "train-holdout":
        holdout_fraction = HOLDOUT_FRACTION
    ev = raw.get("eval") or {}
    if not isinstance(ev, dict) or set(ev) - {"resolution", "size"}:
        raise FssBenchError(
            f"{source}: eval: expected {{resolution: original|resized, size: 400}}, got {ev!r}"
        )
    try:
        for ds in roots:  # validated now, not when the first manifest is built
            get_protocol(protocol).evaluation(ds, ev.get("resolution"), ev.get("size"))
    except FssBenchError as e:
        raise FssBenchError(f"{source}: eval: {e}") from None

    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise FssBenchError(f"{source}: model: expected a mapping of model settings")
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise FssBenchError(f"{source}: variants: expected a non-empty mapping name -> switches")
    for vname, switches in variants_raw.items():
        if switches is not None and not isinstance(switches, dict):
            raise FssBenchError(f"{source}: variants.{vname}: expected a mapping of switches")
        method = (switches or {}).get("method", "fssam")
        if method not in method_names():
            raise FssBenchError(
                f"{source}: variants.{vname}.method: {method!r} is not one of {method_names()}"
                + did_you_mean(method, method_names())
            )
    # model-level defaults go to the variants whose method accepts them; a key no registered method
    # accepts is a typo
    known = set(HARNESS_FIELDS).union(*(get_method(m).all_defaults for m in method_names()))
    for key in model:
        if key not in known:
            raise FssBenchError(
                f"{source}: model.{key}: unknown setting for every method{did_you_mean(key, known)}; "
                f"known: {sorted(known)}"
            )
    variants = [
        _parse_variant(str(vname), switches or {}, model, roots, folds, shots, source, base_dir)
        for vname, switches in variants_raw.items()
    ]
    return Study(
        name=name.strip(),
        data=roots,
        protocol=protocol,
        folds=folds,
        shots=shots,
        seeds=seeds,
        episodes=episodes,
        split=split,
        variants=variants,
        description=str(raw.get("description", "")),
        source=source,
        raw=raw,
        batch_size=batch_size,
        cache=cache,
        resources=resources,
        loader_workers=loader_workers,
        lists=lists,
        eval_resolution=ev.get("resolution"),
        eval_size=ev.get("size"),
        val_source=val_source,
        holdout_fraction=holdout_fraction,
    )


def _block(raw: Any, fields: dict[str, str], where: str) -> dict[str, Any]:
    """A study's settings block (``cache:``, ``resources:``): a mapping of known fields ({} if absent)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FssBenchError(f"{where}: expected a mapping with fields {list(fields)}")
    for key in raw:
        if key not in fields:
            raise FssBenchError(
                f"{where}.{key}: unknown field{did_you_mean(key, fields)}; known: {list(fields)}"
            )
    return raw


def _number(
    raw: dict[str, Any], key: str, default: float | None, where: str, allow_null: bool, positive: bool = False
) -> float | None:
    """A number field of a settings block: >= 0 (> 0 when ``positive``), or null when allowed."""
    value = raw.get(key, default)
    if value is None and allow_null:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or value < 0
        or (positive and value == 0)
    ):
        bound = "> 0" if positive else ">= 0"
        raise FssBenchError(
            f"{where}.{key}: expected a number {bound}{' or null' if allow_null else ''}, got {value!r}"
        )
    return float(value)


def parse_resources(raw: Any, source: str) -> Resources:
    """A study's ``resources:`` block, validated field by field."""
    raw = _block(raw, RESOURCE_FIELDS, f"{source}: resources")
    gpus = _number(raw, "gpus_per_cell", None, f"{source}: resources", allow_null=True)
    cpus = _number(raw, "cpus_per_cell", 1.0, f"{source}: resources", allow_null=False, positive=True)
    return Resources(gpus, cpus or 1.0)  # cpus is > 0 here


def parse_cache(raw: Any, source: str) -> CacheSettings:
    """A study's ``cache:`` block, validated field by field."""
    if raw is None:
        return CacheSettings()
    raw = _block(raw, CACHE_FIELDS, f"{source}: cache")
    dtype = raw.get("dtype", "fp32")
    if dtype not in FEATURE_DTYPE_NAMES:
        raise FssBenchError(f"{source}: cache.dtype: {dtype!r} is not one of {list(FEATURE_DTYPE_NAMES)}")
    where = f"{source}: cache"
    return CacheSettings(
        dtype, _number(raw, "max_gb", None, where, True), _number(raw, "stages_gb", 1.0, where, False) or 0.0
    )


def _parse_variant(
    vname: str,
    switches: dict[str, Any],
    model: dict[str, Any],
    roots: dict[str, Path],
    folds: list[int],
    shots: list[int],
    source: str,
    base_dir: Path,
) -> Variant:
    """One variant: the model defaults the method accepts, the variant's switches over them, each
    validated by the method itself; weights checked for every cell before any work."""
    where = f"{source}: variants.{vname}"
    entry = get_method(switches.get("method", "fssam"))
    own = {k: v for k, v in switches.items() if k not in ("method", *HARNESS_FIELDS)}
    inherited = {k: v for k, v in model.items() if k in entry.all_defaults}
    device = str(switches.get("device", model.get("device", "auto")))
    check_device(device, f"{where}.device" if "device" in switches else f"{source}: model.device")
    settings = entry.resolve({**inherited, **own}, where=where)
    if settings.get("random_init"):  # random weights replace the base checkpoints (tests, demos, timing)
        trained = settings.get("fssam_checkpoint")
        if trained:  # the authors' trained model would be silently replaced, its cells found "done"
            raise FssBenchError(
                f"{where}: random_init is true but fssam_checkpoint is {trained!r}: random weights would "
                "replace the trained checkpoint; drop one (e.g. add model.fssam_checkpoint=null)"
            )
        settings.update({key: None for key in entry.checkpoints if key not in entry.overlays})
    for key in entry.checkpoints:
        value = settings.get(key)
        if value and not str(value).startswith(MLFLOW_URI_PREFIX) and not Path(str(value)).is_absolute():
            settings[key] = str(base_dir / str(value))
    variant = Variant(vname, entry.name, settings, device, frozenset(inherited) | frozenset(own))
    for ds in roots:
        for fold in folds:
            for shot in shots:
                try:
                    sources = entry.weight_sources(variant.cell_settings(ds, fold, shot))
                except FssBenchError as e:
                    raise FssBenchError(f"{where}.{e}") from None
                for role, path in sources.items():
                    if not path.startswith("random-init:"):
                        check_checkpoint_file(path, f"{where}.{_checkpoint_field(entry, role)}")

    if (
        variant.method == "fssam"
        and settings.get("kshot_mode") == "intended"
        and "kshot_mode" in variant.explicit
    ):
        cells = [(ds, fold, shot) for ds in roots for fold in folds for shot in shots]
        k = sorted({c[2] for c in cells if loads_fssam5s(variant.method, variant.cell_settings(*c), c[2])})
        if k:
            warnings.warn(
                f"{where}: kshot_mode intended with the authors' FSSAM5s checkpoints ({k}-shot cells), which "
                "were trained with the released K-shot path; drop kshot_mode to run them as trained",
                UserWarning,
                stacklevel=2,
            )
    return variant


def _checkpoint_field(entry: MethodEntry, role: str) -> str:
    """The setting that names the weights of ``role`` (``sam2`` -> ``sam2_checkpoint``)."""
    for key in entry.checkpoints:
        if key.startswith(role):
            return key
    return role


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
    if not path.is_file():
        raise FssBenchError(f"{path}: study file not found")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise FssBenchError(
            f"{where}: not valid YAML: {what}; fix the file at that line and column"
        ) from None
    raw = raw or {}
    if isinstance(raw, dict):
        raw = resolve_paths(raw, study_path_fields, path.parent)
    raw = apply_overrides(raw, overrides or [], study_path_fields)
    try:
        study = parse_study(raw, source=str(path), base_dir=path.parent)
    except FssBenchError as e:
        raise _blame_override(e, str(path), overrides or []) from None
    study.file_text, study.overrides = text, tuple(overrides or ())
    return study


def _blame_override(error: FssBenchError, source: str, overrides: list[str]) -> FssBenchError:
    """If the bad field came from a command-line override, say so instead of blaming the file."""
    text = str(error)
    if not text.startswith(f"{source}: "):
        return error
    rest = text[len(source) + 2 :]
    field = rest.split(":", 1)[0].strip()
    for item in reversed(overrides):
        key = item.split("=", 1)[0].strip()
        if field == key or field.startswith(key + ".") or key.startswith(field + "."):
            return FssBenchError(f"command-line override {item!r}: {rest}")
    return error


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
