"""Study files: which variants, datasets, folds, shots and seeds to run, validated before any work.

A study file is YAML (see ``ablations/``)::

    name: component-ablation              # the MLflow experiment
    data: {pascal: data/pascal}           # dataset -> prepared data root
    protocol: fssam                       # episode protocol (fssam | hsnet)
    folds: [0, 1, 2, 3]
    shots: [1, 5]
    seeds: [321]                          # one manifest per seed
    episodes: 1000                        # per manifest (null: the protocol's default)
    split: interleaved                    # COCO class split
    model: {...}                          # defaults for every variant (FSSAMConfig fields, checkpoints, device)
    variants:
      fssam: {}                           # method fssam with the defaults
      no-imr: {imr_iters: 0}
      naive: {method: naive_sam2}

Model settings are ``FSSAMConfig`` fields plus ``device`` (auto | cpu | cuda[:i]) and
``fssam_checkpoint``, the authors' trained checkpoint, a template that may use ``{dataset}``,
``{fold}``, ``{shot}`` and ``{arch}`` (FSSAM for 1 shot, FSSAM5s otherwise), e.g.
``exp/{dataset}/{arch}/split{fold}/small/snapshot/best_{shot}shot.pth``. A variant may override any
model setting. ``key=value`` overrides from the command line use dotted paths
(``episodes=20``, ``model.random_init=true``, ``variants.fssam.imr_iters=2``).
"""

from __future__ import annotations

import copy
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from benchmark.data.classes import COCO_SPLITS, DATASETS, NUM_FOLDS
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes import PROTOCOLS
from benchmark.errors import FssBenchError
from fssam.config import FSSAMConfig

METHODS = ("fssam", "naive_sam2")
MODEL_EXTRA_FIELDS = ("device", "fssam_checkpoint")
CHECKPOINT_FIELDS = ("sam2_checkpoint", "dinov2_checkpoint", "fssam_checkpoint")
TOP_LEVEL = ("name", "description", "data", "protocol", "folds", "shots", "seeds", "episodes", "split", "model",
             "variants")  # fmt: skip


@dataclass(frozen=True)
class Variant:
    name: str
    method: str
    settings: dict[str, Any]  # resolved model settings: FSSAMConfig fields + device + fssam_checkpoint

    def fssam_config(self) -> FSSAMConfig:
        return FSSAMConfig.from_dict({k: v for k, v in self.settings.items() if k not in MODEL_EXTRA_FIELDS})

    def checkpoint_for(self, dataset: str, fold: int, shot: int) -> str | None:
        """The authors' checkpoint path of a cell (template filled in), or None."""
        template = self.settings.get("fssam_checkpoint")
        if not template or self.method != "fssam":
            return None
        return str(template).format(
            dataset=dataset, fold=fold, shot=shot, arch="FSSAM" if shot == 1 else "FSSAM5s"
        )


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

    @property
    def random_init(self) -> bool:
        return any(v.settings.get("random_init") for v in self.variants)


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        if not isinstance(cur.get(k), dict):
            cur[k] = {}
        cur = cur[k]
    cur[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (values parsed as YAML) to a copy of the study dict."""
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
        _set_dotted(out, key.strip(), parsed)
    return out


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
            raise FssBenchError(f"{key}: {v} is out of range [{lo}, {hi}]")
    return list(dict.fromkeys(value))


def check_checkpoint_file(path: str, where: str) -> None:
    """Fail early, naming the study field, if a checkpoint is missing or not a PyTorch file."""
    p = Path(path)
    if not p.is_file():
        raise FssBenchError(f"{where}: checkpoint {p} not found")
    try:
        ok = zipfile.is_zipfile(p) and any(n.endswith("data.pkl") for n in zipfile.ZipFile(p).namelist())
    except OSError as e:
        raise FssBenchError(f"{where}: checkpoint {p} is unreadable ({e})") from None
    if not ok:
        raise FssBenchError(f"{where}: {p} is not a PyTorch checkpoint (expected a torch.save zip file)")


def parse_study(raw: dict[str, Any], source: str = "<study>", base_dir: Path | None = None) -> Study:
    """Validate a study dict. Raises FssBenchError naming the offending field."""
    if not isinstance(raw, dict):
        raise FssBenchError(f"{source}: a study file must be a YAML mapping")
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise FssBenchError(f"{source}: unknown field(s) {unknown}; known: {list(TOP_LEVEL)}")
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
            raise FssBenchError(f"{source}: data.{ds}: unknown dataset; expected one of {list(DATASETS)}")
        path = Path(str(root)) if Path(str(root)).is_absolute() else base_dir / str(root)
        try:
            prepared = PreparedDataset(path)
        except FssBenchError as e:
            raise FssBenchError(f"{source}: data.{ds}: {e}") from None
        if prepared.dataset != ds:
            raise FssBenchError(f"{source}: data.{ds}: {path} holds a prepared {prepared.dataset!r} dataset")
        roots[ds] = path
    protocol = raw.get("protocol", "fssam")
    if protocol not in PROTOCOLS:
        raise FssBenchError(f"{source}: protocol: {protocol!r} is not one of {sorted(PROTOCOLS)}")
    folds = _int_list({"folds": raw.get("folds", [0, 1, 2, 3])}, "folds", 0, NUM_FOLDS - 1)
    shots = _int_list({"shots": raw.get("shots", [1])}, "shots", 1, None)
    seeds = _int_list({"seeds": raw.get("seeds", [PROTOCOLS[protocol]["seed"]])}, "seeds")
    episodes = raw.get("episodes")
    if episodes is not None and (not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1):
        raise FssBenchError(f"{source}: episodes: expected a positive integer or null, got {episodes!r}")
    split = raw.get("split", "interleaved")
    if split not in COCO_SPLITS:
        raise FssBenchError(f"{source}: split: {split!r} is not one of {list(COCO_SPLITS)}")

    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise FssBenchError(f"{source}: model: expected a mapping of model settings")
    allowed = {f.name for f in fields(FSSAMConfig)} | set(MODEL_EXTRA_FIELDS)
    for key in model:
        if key not in allowed:
            raise FssBenchError(f"{source}: model.{key}: unknown setting; known: {sorted(allowed)}")
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise FssBenchError(f"{source}: variants: expected a non-empty mapping name -> switches")
    variants = []
    for vname, switches in variants_raw.items():
        switches = switches or {}
        if not isinstance(switches, dict):
            raise FssBenchError(f"{source}: variants.{vname}: expected a mapping of switches")
        method = switches.get("method", "fssam")
        if method not in METHODS:
            raise FssBenchError(
                f"{source}: variants.{vname}.method: {method!r} is not one of {list(METHODS)}"
            )
        for key in switches:
            if key != "method" and key not in allowed:
                raise FssBenchError(
                    f"{source}: variants.{vname}.{key}: unknown switch; known: {sorted(allowed)}"
                )
        settings = {**model, **{k: v for k, v in switches.items() if k != "method"}}
        settings.setdefault("device", "auto")
        if settings.get("random_init"):  # random weights replace any checkpoint (tests, demos, timing)
            for key in CHECKPOINT_FIELDS:
                settings.pop(key, None)
        for key in CHECKPOINT_FIELDS:
            if settings.get(key) and not Path(str(settings[key])).is_absolute():
                settings[key] = str(base_dir / str(settings[key]))
        variant = Variant(str(vname), method, settings)
        try:
            variant.fssam_config()
        except FssBenchError as e:
            raise FssBenchError(f"{source}: variants.{vname}: {e}") from None
        _check_weights(variant, roots, folds, shots, source)
        variants.append(variant)
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
    )


def _check_weights(
    variant: Variant, roots: dict[str, Path], folds: list[int], shots: list[int], source: str
) -> None:
    s, where = variant.settings, f"{source}: variants.{variant.name}"
    if s.get("random_init"):
        return
    if variant.method == "fssam" and s.get("fssam_checkpoint"):
        for ds in roots:
            for fold in folds:
                for shot in shots:
                    check_checkpoint_file(variant.checkpoint_for(ds, fold, shot), f"{where}.fssam_checkpoint")
        return
    if not s.get("sam2_checkpoint"):
        raise FssBenchError(
            f"{where}: no weights: set model.sam2_checkpoint (and model.dinov2_checkpoint), or "
            "model.fssam_checkpoint, or model.random_init: true for random weights (tests and demos only)"
        )
    check_checkpoint_file(s["sam2_checkpoint"], f"{where}.sam2_checkpoint")
    if variant.method == "fssam" and variant.fssam_config().needs_dinov2:
        if not s.get("dinov2_checkpoint"):
            raise FssBenchError(
                f"{where}.dinov2_checkpoint: prior {s.get('prior', 'disc')!r} needs DINOv2 weights"
            )
        check_checkpoint_file(s["dinov2_checkpoint"], f"{where}.dinov2_checkpoint")


def load_study(path: Path, overrides: list[str] | None = None) -> Study:
    """Read, override and validate a study file (relative paths resolve against the working directory)."""
    path = Path(path)
    if not path.is_file():
        raise FssBenchError(f"{path}: study file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise FssBenchError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    raw = apply_overrides(raw or {}, overrides or [])
    return parse_study(raw, source=str(path), base_dir=Path.cwd())
