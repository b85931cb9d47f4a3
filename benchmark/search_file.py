"""Search files: an Optuna search over one variant's switches, validated before any work.

A search file is YAML (see ``ablations/searches/``)::

    name: fssam-inference-pascal        # the default Optuna study name
    experiment: fssam-inference-pascal  # the MLflow experiment (default: the name)
    study: ../main-table.yaml           # the base study: a study file (relative to this file) or an inline mapping
    variant: fssam                      # whose switches are searched (default: the first variant)
    kind: val                           # the manifests the objective runs on (val | test)
    episodes: 200                       # per validation manifest (default: the study's)
    space:
      imr_iters: {type: int, low: 0, high: 6}
      scma_scale: {type: float, low: 1, high: 30, log: true}
      prior: {type: categorical, choices: [disc, fg]}
      threshold: {type: float, low: 0.3, high: 0.7}
    objective: {metric: miou, direction: maximize, datasets: [pascal], folds: [0, 1, 2, 3], shots: [1]}
    sampler: {type: tpe, seed: 0}       # tpe | random | cmaes | grid
    pruner: {type: median, startup_trials: 5, warmup_steps: 0}  # median | none | successive_halving | wilcoxon
    report_every: 50                    # episodes between intermediate values (trial.report)
    trials: 40                          # trials in total (a grid defaults to its size)

``kind: val`` manifests hold the fold's base classes on val-split images without any pixel of a
novel class (or on a held-out slice of the train split: ``study.val_source=train-holdout``): model
selection that never looks at a novel class or at the test episodes reports use. ``kind: test`` is refused unless the
command is given ``--allow-test-tuning`` (then everything is tagged ``fss.tuned_on_test=true``).

Command-line ``key=value`` overrides use dotted paths into this file (``trials=6``,
``space.imr_iters.high=4``); ``study.X`` reaches into the base study even when it is a path
(``study.model.random_init=true``, ``study.data.pascal=DIR``), and ``study=PATH`` re-points the
base study. Paths in the file resolve relative to its folder, paths on the command line against the
working directory (:mod:`benchmark.file_paths`).
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.episodes import get_protocol
from benchmark.episodes.manifests import VAL_RULE
from benchmark.errors import FssBenchError
from benchmark.file_paths import resolve_paths, search_path_fields, study_path_fields
from benchmark.io_utils import canonical_json
from benchmark.methods import get_method
from benchmark.study import Study, Variant, _blame_override, apply_overrides, did_you_mean, parse_study

TOP_LEVEL = (
    "name",
    "description",
    "experiment",
    "study",
    "variant",
    "kind",
    "episodes",
    "space",
    "objective",
    "sampler",
    "pruner",
    "report_every",
    "trials",
)
PARAM_TYPES = ("int", "float", "categorical")
SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "none", "successive_halving", "wilcoxon")
METRICS = ("miou", "fb_iou")
DIRECTIONS = ("maximize", "minimize")
NOT_SEARCHABLE = ("random_init", "seed", "precision")  # the weights and the arithmetic, not a switch
PRUNER_FIELDS = {
    "median": {"startup_trials": 5, "warmup_steps": 0},
    "none": {},
    "successive_halving": {"min_resource": None, "reduction_factor": 4},
    "wilcoxon": {"p_threshold": 0.1, "startup_steps": 2},
}
MAX_GRID = 10_000


@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    grid: tuple[Any, ...] = ()  # the values a grid sampler walks (int ranges and categoricals: all)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log, step=self.step)
        if self.grid:
            out["grid"] = list(self.grid)
        return out


@dataclass
class SearchSpec:
    name: str
    experiment: str
    description: str
    source: str
    study: Study  # the base study with the objective's folds, shots and episodes
    variant: Variant  # the searched variant (its resolved settings are the starting point)
    kind: str
    space: dict[str, Param]
    metric: str
    direction: str
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    report_every: int
    trials: int
    raw: dict[str, Any] = field(default_factory=dict)  # the search file after overrides
    study_raw: dict[str, Any] = field(default_factory=dict)  # the base study after overrides
    study_file: str | None = None  # the base study's path, when it was one

    @property
    def grid(self) -> dict[str, list[Any]]:
        return {p.name: list(p.grid) for p in self.space.values()}

    @property
    def tuned_on_test(self) -> bool:
        return self.kind == "test"

    def identity(self) -> dict[str, Any]:
        """What the numbers of a trial depend on besides its parameters: a resumed Optuna study
        must have been created by the same search (sampler, pruner and trial count may change)."""
        s = self.study
        return {
            "space": {k: p.to_json() for k, p in sorted(self.space.items())},
            "metric": self.metric,
            "direction": self.direction,
            "kind": self.kind,
            "method": self.variant.method,
            "settings": {k: v for k, v in sorted(self.variant.settings.items()) if k not in self.space},
            "data": {k: str(v) for k, v in sorted(s.data.items())},
            "protocol": s.protocol,
            "folds": s.folds,
            "shots": s.shots,
            "seeds": s.seeds,
            "episodes": s.episodes,
            "split": s.split,
            **(
                {"val_rule": VAL_RULE, "val_source": s.val_source, "holdout_fraction": s.holdout_fraction}
                if self.kind == "val"
                else {}
            ),
        }

    @property
    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_param(name: str, raw: Any, where: str) -> Param:
    if not isinstance(raw, dict):
        raise FssBenchError(
            f"{where}: expected a mapping such as {{type: int, low: 0, high: 6}} or "
            "{type: categorical, choices: [disc, fg]}"
        )
    known = ("type", "low", "high", "log", "step", "choices", "grid")
    for key in raw:
        if key not in known:
            raise FssBenchError(
                f"{where}.{key}: unknown field{did_you_mean(key, known)}; known: {list(known)}"
            )
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        raise FssBenchError(f"{where}.type: {kind!r} is not one of {list(PARAM_TYPES)}")
    grid = raw.get("grid")
    if grid is not None and (not isinstance(grid, list) or not grid):
        raise FssBenchError(f"{where}.grid: expected a non-empty list of values")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise FssBenchError(f"{where}.choices: expected a non-empty list")
        if not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
            raise FssBenchError(f"{where}.choices: only strings, numbers, booleans and null can be choices")
        if len(set(map(repr, choices))) != len(choices):
            raise FssBenchError(f"{where}.choices: {choices} has duplicates")
        for key in ("low", "high", "log", "step"):
            if key in raw:
                raise FssBenchError(f"{where}.{key}: a categorical parameter has only choices")
        return Param(name, kind, choices=tuple(choices), grid=tuple(grid or choices))
    if "choices" in raw:
        raise FssBenchError(f"{where}.choices: only for type: categorical")
    low, high, step, log = raw.get("low"), raw.get("high"), raw.get("step"), raw.get("log", False)
    for key, value in (("low", low), ("high", high)):
        if not _number(value) or (kind == "int" and not isinstance(value, int)):
            raise FssBenchError(
                f"{where}.{key}: expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}"
            )
    if low > high:
        raise FssBenchError(f"{where}: low {low} is above high {high}")
    if not isinstance(log, bool):
        raise FssBenchError(f"{where}.log: expected true or false")
    if log and low <= 0:
        raise FssBenchError(f"{where}.log: a log scale needs low > 0, got low {low}")
    if step is not None:
        if not _number(step) or step <= 0 or (kind == "int" and not isinstance(step, int)):
            raise FssBenchError(
                f"{where}.step: expected a positive {'integer' if kind == 'int' else 'number'}"
            )
        if log:
            raise FssBenchError(f"{where}: step and log cannot be combined (Optuna's rule)")
    if kind == "int":
        low, high, step = int(low), int(high), int(step or 1)
        values = tuple(range(low, high + 1, step))
    else:
        low, high = float(low), float(high)
        values = tuple(float(v) for v in grid) if grid else ()
    if grid is not None:
        for v in grid:
            if not _number(v) or not low <= v <= high or (kind == "int" and not isinstance(v, int)):
                raise FssBenchError(f"{where}.grid: {v!r} is not a {kind} in [{low}, {high}]")
        values = tuple(grid)
    return Param(name, kind, low, high, log, step, (), values)


def _extremes(p: Param) -> list[Any]:
    return list(p.choices) if p.type == "categorical" else [p.low, p.high, *p.grid]


def _section(
    raw: dict[str, Any], key: str, types: tuple[str, ...], default: str, where: str
) -> dict[str, Any]:
    value = raw.get(key) or {"type": default}
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise FssBenchError(f"{where}: {key}: expected a mapping such as {{type: {default}}}")
    kind = value.get("type", default)
    if kind not in types:
        raise FssBenchError(
            f"{where}: {key}.type: {kind!r} is not one of {list(types)}{did_you_mean(kind, types)}"
        )
    return {**value, "type": kind}


def _positive(raw: dict[str, Any], key: str, where: str, default: int | None) -> int | None:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FssBenchError(f"{where}: {key}: expected a positive integer, got {value!r}")
    return value


def parse_search(
    raw: dict[str, Any], source: str = "<search>", base_dir: Path | None = None, study_file: str | None = None
) -> SearchSpec:
    """Validate a search dict (its ``study`` already a mapping). Raises FssBenchError naming the field."""
    if not isinstance(raw, dict):
        raise FssBenchError(f"{source}: a search file must be a YAML mapping")
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise FssBenchError(
            f"{source}: {unknown[0]}: unknown field{did_you_mean(unknown[0], TOP_LEVEL)}; known: {list(TOP_LEVEL)}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise FssBenchError(f"{source}: name: expected a non-empty string")
    experiment = raw.get("experiment", name)
    if not isinstance(experiment, str) or not experiment.strip():
        raise FssBenchError(f"{source}: experiment: expected a non-empty string (the MLflow experiment)")
    study_raw = raw.get("study")
    if not isinstance(study_raw, dict):
        raise FssBenchError(f"{source}: study: expected a study file path or an inline study mapping")
    kind = raw.get("kind", "val")
    if kind not in ("val", "test"):
        raise FssBenchError(f"{source}: kind: {kind!r} is not one of ['val', 'test']")

    objective = raw.get("objective") or {}
    if not isinstance(objective, dict):
        raise FssBenchError(f"{source}: objective: expected a mapping {{metric, direction, folds, shots}}")
    objective_fields = ("metric", "direction", "datasets", "folds", "shots")
    for key in objective:
        if key not in objective_fields:
            raise FssBenchError(
                f"{source}: objective.{key}: unknown field{did_you_mean(key, objective_fields)}; known: {list(objective_fields)}"
            )
    metric = objective.get("metric", "miou")
    if metric not in METRICS:
        raise FssBenchError(f"{source}: objective.metric: {metric!r} is not one of {list(METRICS)}")
    direction = objective.get("direction", "maximize")
    if direction not in DIRECTIONS:
        raise FssBenchError(f"{source}: objective.direction: {direction!r} is not one of {list(DIRECTIONS)}")

    study_dict = copy.deepcopy(study_raw)
    variants_raw = study_dict.get("variants")
    vname = raw.get("variant")
    if isinstance(variants_raw, dict) and variants_raw:
        if vname is None:
            vname = next(iter(variants_raw))
        if vname not in variants_raw:
            names = list(variants_raw)
            raise FssBenchError(
                f"{source}: variant: {vname!r} is not a variant of the study{did_you_mean(vname, names)}; variants: {names}"
            )
        study_dict["variants"] = {vname: variants_raw[vname]}  # the others' weights are not needed here
    if "datasets" in objective:  # the objective's datasets: a subset of the study's
        wanted, have = objective["datasets"], study_dict.get("data") or {}
        if isinstance(wanted, str):
            wanted = [wanted]
        if not isinstance(wanted, list) or not wanted or any(d not in have for d in wanted):
            raise FssBenchError(
                f"{source}: objective.datasets: expected a non-empty list of the study's datasets {list(have)}, got {wanted!r}"
            )
        study_dict["data"] = {d: have[d] for d in wanted}
    for key in ("folds", "shots"):
        if key in objective:
            study_dict[key] = objective[key]
    episodes = _positive(raw, "episodes", source, None)
    if episodes is not None:
        study_dict["episodes"] = episodes
    where_study = f"{source}: study" if study_file is None else study_file
    try:
        study = parse_study(study_dict, source=where_study, base_dir=base_dir)
    except FssBenchError as e:
        text = str(e)
        for key in ("folds", "shots"):  # the objective's folds and shots replace the study's
            if key in objective and text.startswith(f"{where_study}: {key}:"):
                raise FssBenchError(f"{source}: objective.{text[len(where_study) + 2 :]}") from None
        raise

    if kind not in get_protocol(study.protocol).kinds:
        raise FssBenchError(
            f"{source}: kind: val with protocol {study.protocol}, which reproduces the authors' test episodes "
            "only; search on protocol fssam (study.protocol=fssam) or set kind: test"
        )
    variant = study.variants[0]
    entry = get_method(variant.method)

    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise FssBenchError(f"{source}: space: expected a non-empty mapping switch -> range")
    space: dict[str, Param] = {}
    for pname, praw in space_raw.items():
        where = f"{source}: space.{pname}"
        if pname not in entry.all_defaults:
            raise FssBenchError(
                f"{where}: not a switch of method {variant.method!r} (variant {vname}){did_you_mean(pname, entry.all_defaults)}; "
                f"searchable: {sorted(k for k in entry.all_defaults if k not in entry.checkpoints and k not in NOT_SEARCHABLE)}"
            )
        if pname in entry.checkpoints or pname in NOT_SEARCHABLE:
            raise FssBenchError(
                f"{where}: {pname} selects weights or arithmetic, not a switch; it cannot be searched"
            )
        param = _parse_param(str(pname), praw, where)
        for value in _extremes(param):  # the method itself validates every end of the range
            try:
                entry.resolve({**variant.settings, pname: value})
            except FssBenchError as e:
                raise FssBenchError(
                    f"{where}: the value {value!r} is refused: {str(e).split(': ', 1)[-1]}"
                ) from None
        space[str(pname)] = param

    sampler = _section(raw, "sampler", SAMPLERS, "tpe", source)
    allowed = {"type", "seed"} | ({"startup_trials"} if sampler["type"] in ("tpe", "cmaes") else set())
    for key in sampler:
        if key not in allowed:
            raise FssBenchError(
                f"{source}: sampler.{key}: not an option of the {sampler['type']} sampler; options: {sorted(allowed)}"
            )
    seed = sampler.get("seed", None if sampler["type"] == "grid" else 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise FssBenchError(f"{source}: sampler.seed: expected an integer, got {seed!r}")
    sampler["seed"] = seed
    if sampler["type"] == "grid":
        for p in space.values():
            if not p.grid:
                raise FssBenchError(
                    f"{source}: space.{p.name}: a grid sampler needs its values: add grid: [...] "
                    "(int ranges and categoricals are walked completely)"
                )
        size = math.prod(len(p.grid) for p in space.values())
        if size > MAX_GRID:
            raise FssBenchError(f"{source}: space: the grid has {size} points (more than {MAX_GRID})")
    if sampler["type"] == "cmaes" and any(p.type == "categorical" for p in space.values()):
        raise FssBenchError(
            f"{source}: sampler.type: cmaes samples numbers only; space has categorical "
            f"{[p.name for p in space.values() if p.type == 'categorical']} (use tpe, random or grid)"
        )

    pruner = _section(raw, "pruner", PRUNERS, "median", source)
    fields = PRUNER_FIELDS[pruner["type"]]
    for key in pruner:
        if key != "type" and key not in fields:
            raise FssBenchError(
                f"{source}: pruner.{key}: not an option of the {pruner['type']} pruner; options: {sorted(fields)}"
            )
    pruner = {**fields, **pruner}
    for key, value in pruner.items():
        if key in ("type", "min_resource") and (value is None or key == "type"):
            continue
        if key == "p_threshold":
            if not _number(value) or not 0 < value < 1:
                raise FssBenchError(f"{source}: pruner.p_threshold: expected a number in (0, 1)")
        elif (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < (2 if key == "reduction_factor" else 0)
        ):
            raise FssBenchError(
                f"{source}: pruner.{key}: expected an integer >= {2 if key == 'reduction_factor' else 0}"
            )

    report_every = _positive(raw, "report_every", source, 25)
    default_trials = math.prod(len(p.grid) for p in space.values()) if sampler["type"] == "grid" else 20
    trials = _positive(raw, "trials", source, default_trials)
    assert report_every is not None and trials is not None
    return SearchSpec(
        name=name.strip(),
        experiment=experiment.strip(),
        description=str(raw.get("description", "")),
        source=source,
        study=study,
        variant=variant,
        kind=kind,
        space=space,
        metric=metric,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        report_every=report_every,
        trials=trials,
        raw=raw,
        study_raw=study_raw,
        study_file=study_file,
    )


def _read_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FssBenchError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise FssBenchError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None


def load_search(path: Path, overrides: list[str] | None = None) -> SearchSpec:
    """Read, override and validate a search file. Its ``study`` path (and an inline study's paths)
    resolve relative to the search file's folder, the paths inside a study file relative to that
    file, and those of overrides (``study=PATH`` re-points the base study) against the working
    directory (:mod:`benchmark.file_paths`)."""
    path = Path(path)
    overrides = list(overrides or [])
    raw = _read_yaml(path, "search file") or {}
    if not isinstance(raw, dict):
        raise FssBenchError(f"{path}: a search file must be a YAML mapping")
    raw = resolve_paths(raw, search_path_fields, path.parent)
    repoint = [o for o in overrides if o.split("=", 1)[0].strip() == "study"]
    raw = apply_overrides(raw, repoint, search_path_fields)  # study=PATH before the study is read
    study_file = None
    if isinstance(raw.get("study"), str):
        study_path = Path(raw["study"])
        study_file = _shown(study_path)
        if not study_path.is_file():
            said = (
                f"command-line override {repoint[-1]!r}: study file {study_file} not found (a path on "
                "the command line resolves against the working directory)"
                if repoint
                else f"{path}: study: study file {study_file} not found (a file's paths resolve "
                "relative to its folder)"
            )
            raise FssBenchError(said)
        study_raw = _read_yaml(study_path, "study file") or {}
        if isinstance(study_raw, dict):
            study_raw = resolve_paths(study_raw, study_path_fields, study_path.parent)
        raw = {**raw, "study": study_raw}
    rest = [o for o in overrides if o not in repoint]
    raw = apply_overrides(raw, rest, search_path_fields)
    try:
        return parse_search(raw, source=str(path), base_dir=path.parent, study_file=study_file)
    except FssBenchError as e:
        error = _blame_override(e, str(path), rest)
        if study_file is not None and error is e:  # a field of the base study set by study.X=...
            error = _blame_override(
                e, study_file, [o[len("study.") :] for o in rest if o.startswith("study.")]
            )
        raise error from None


def _shown(path: Path) -> str:
    """``path`` as a message shows it: relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
