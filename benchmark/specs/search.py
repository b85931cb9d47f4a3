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

The schema is :class:`SearchFile` (pydantic); the base study is a :class:`~benchmark.specs.study.StudyFile`.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import PlainValidator, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from benchmark.data.classes import NUM_FOLDS
from benchmark.episodes import get_protocol
from benchmark.episodes.manifests import VAL_RULE
from benchmark.errors import FssBenchError
from benchmark.file_paths import resolve_paths, search_path_fields, study_path_fields
from benchmark.io_utils import canonical_json
from benchmark.methods import get_method
from benchmark.specs.errors import did_you_mean, in_file, invalid, located, read_yaml, validate
from benchmark.specs.fields import (
    UNSET,
    Block,
    FileSchema,
    context,
    int_list,
    non_empty_text,
    number,
    one_of,
)
from benchmark.specs.overrides import apply_overrides, blame_override
from benchmark.specs.space import (
    Param,
    ParamBlock,
    check_searchable,
    extremes,
    pruner_section,
    sampler_section,
)
from benchmark.specs.study import Study, Variant, parse_study

TOP_LEVEL = (  # the fields as the documentation lists them (checked in SearchFile's order)
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
METRICS = ("miou", "fb_iou")
DIRECTIONS = ("maximize", "minimize")
POSITIVE = number("int", 1, nullable=True, null_said=False, what="a positive integer")  # null: the default


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


class Objective(Block):
    """``objective:``: what a trial scores; its datasets, folds and shots narrow the study's."""

    not_a_mapping = "expected a mapping {{metric, direction, folds, shots}}"
    empty_is_null = True

    metric: Annotated[str, one_of(METRICS)] = "miou"
    direction: Annotated[str, one_of(DIRECTIONS)] = "maximize"
    datasets: Any = UNSET  # absent: the study's
    folds: Any = UNSET
    shots: Any = UNSET


def _experiment(value: Any, info: ValidationInfo) -> str:
    if value is UNSET:
        value = info.data.get("name")
    if not isinstance(value, str) or not value.strip():
        raise invalid("expected a non-empty string (the MLflow experiment)")
    return value


def _study_mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid("expected a study file path or an inline study mapping")
    return value


def _narrowed_study(raw: dict[str, Any], objective: Objective, vname: Any, episodes: Any) -> dict[str, Any]:
    """The base study reduced to the searched variant and the objective's datasets, folds and shots."""
    study = copy.deepcopy(raw)
    variants = study.get("variants")
    if isinstance(variants, dict) and variants:
        vname = next(iter(variants)) if vname is None else vname
        if isinstance(vname, (list, dict)) or vname not in variants:
            names = list(variants)
            raise in_file(
                f"variant: {vname!r} is not a variant of the study{did_you_mean(vname, names)}; variants: {names}"
            )
        study["variants"] = {vname: variants[vname]}  # the others' weights are not needed here
    if objective.datasets is not UNSET:  # the objective's datasets: a subset of the study's
        wanted, have = objective.datasets, study.get("data") or {}
        wanted = [wanted] if isinstance(wanted, str) else wanted
        if not isinstance(wanted, list) or not wanted or any(d not in have for d in wanted):
            raise in_file(
                f"objective.datasets: expected a non-empty list of the study's datasets {list(have)}, got {wanted!r}"
            )
        study["data"] = {d: have[d] for d in wanted}
    for key in ("folds", "shots"):
        if getattr(objective, key) is not UNSET:
            study[key] = getattr(objective, key)
    if episodes is not None:
        study["episodes"] = episodes
    return study


def _base_study(value: Any, info: ValidationInfo) -> Study:
    """The study the trials run: the file's (inline or read from ``study_file``), narrowed."""
    if any(k not in info.data for k in ("study", "objective", "episodes")):
        return value  # an earlier field failed: that is the error
    objective = info.data["objective"]
    study = _narrowed_study(info.data["study"], objective, info.data.get("variant"), info.data["episodes"])
    study_file = context(info, "study_file")
    where = f"{context(info, 'source')}: study" if study_file is None else study_file
    try:
        study = parse_study(study, source=where, base_dir=context(info, "base_dir"))
    except FssBenchError as e:
        raise located(str(e)) from None
    kind = info.data.get("kind")
    if kind is not None and kind not in get_protocol(study.protocol).kinds:
        raise in_file(
            f"kind: {kind} with protocol {study.protocol}, which reproduces the authors' test episodes "
            "only; search on protocol fssam (study.protocol=fssam) or set kind: test"
        )
    return study


def _objective_numbers(objective: Objective) -> Objective:
    """The objective's folds and shots, checked as the study's own would be."""
    for key, low, high in (("folds", 0, NUM_FOLDS - 1), ("shots", 1, None)):
        if getattr(objective, key) is not UNSET:
            try:
                int_list(getattr(objective, key), low, high)
            except PydanticCustomError as e:
                raise invalid(str((e.context or {})["message"]), key) from None
    return objective


class SearchFile(FileSchema):
    """The schema of a search file (its ``study`` already a mapping), checked in this order."""

    what = "search file"
    known = TOP_LEVEL

    name: Annotated[str, non_empty_text()] = UNSET
    description: Any = ""
    experiment: Annotated[str, PlainValidator(_experiment)] = UNSET
    study: Annotated[dict[str, Any], PlainValidator(_study_mapping)] = UNSET
    kind: Annotated[str, one_of(("val", "test"))] = "val"
    objective: Objective = None
    variant: Any = None
    episodes: Annotated[int | None, POSITIVE] = None
    base: Annotated[Any, PlainValidator(_base_study)] = UNSET
    space: dict[str, ParamBlock] = UNSET
    sampler: Annotated[
        dict[str, Any], PlainValidator(lambda v, info: sampler_section(v, info.data.get("space")))
    ] = None
    pruner: Annotated[dict[str, Any], PlainValidator(pruner_section)] = None
    report_every: Annotated[int | None, POSITIVE] = None
    trials: Annotated[int | None, POSITIVE] = None

    @field_validator("objective", mode="after")
    @classmethod
    def _objective(cls, value: Objective) -> Objective:
        return _objective_numbers(value)

    @field_validator("space", mode="before")
    @classmethod
    def _switches(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict) or not value:
            raise invalid("expected a non-empty mapping switch -> range")
        base = info.data.get("base")
        if isinstance(base, Study):
            for name in value:
                check_searchable(name, get_method(base.variants[0].method), base.variants[0].name)
        return value

    @field_validator("space", mode="after")
    @classmethod
    def _params(cls, value: dict[str, ParamBlock], info: ValidationInfo) -> dict[str, Param]:
        space = {str(name): block.param(str(name)) for name, block in value.items()}
        base = info.data.get("base")
        if not isinstance(base, Study):
            return space
        variant = base.variants[0]
        entry = get_method(variant.method)
        for name, param in space.items():
            for v in extremes(param):  # the method itself validates every end of the range
                try:
                    entry.resolve({**variant.settings, name: v})
                except FssBenchError as e:
                    raise invalid(f"the value {v!r} is refused: {str(e).split(': ', 1)[-1]}", name) from None
        return space

    def to_spec(self, raw: dict[str, Any], source: str, study_file: str | None) -> SearchSpec:
        """The :class:`SearchSpec` this file describes (``raw``: the file after overrides)."""
        space, sampler = self.space, self.sampler
        default_trials = math.prod(len(p.grid) for p in space.values()) if sampler["type"] == "grid" else 20
        return SearchSpec(
            name=self.name.strip(),
            experiment=self.experiment.strip(),
            description=str(self.description),
            source=source,
            study=self.base,
            variant=self.base.variants[0],
            kind=self.kind,
            space=space,
            metric=self.objective.metric,
            direction=self.objective.direction,
            sampler=sampler,
            pruner=self.pruner,
            report_every=25 if self.report_every is None else self.report_every,
            trials=default_trials if self.trials is None else self.trials,
            raw=raw,
            study_raw=raw["study"],
            study_file=study_file,
        )


def parse_search(
    raw: dict[str, Any], source: str = "<search>", base_dir: Path | None = None, study_file: str | None = None
) -> SearchSpec:
    """Validate a search dict (its ``study`` already a mapping). Raises FssBenchError naming the field."""
    spec = validate(SearchFile, raw, source, base_dir=base_dir, study_file=study_file)
    return spec.to_spec(raw, source, study_file)


def load_search(path: Path, overrides: list[str] | None = None) -> SearchSpec:
    """Read, override and validate a search file. Its ``study`` path (and an inline study's paths)
    resolve relative to the search file's folder, the paths inside a study file relative to that
    file, and those of overrides (``study=PATH`` re-points the base study) against the working
    directory (:mod:`benchmark.file_paths`)."""
    path = Path(path)
    overrides = list(overrides or [])
    raw = read_yaml(path, "search file") or {}
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
        study_raw = read_yaml(study_path, "study file") or {}
        if isinstance(study_raw, dict):
            study_raw = resolve_paths(study_raw, study_path_fields, study_path.parent)
        raw = {**raw, "study": study_raw}
    rest = [o for o in overrides if o not in repoint]
    raw = apply_overrides(raw, rest, search_path_fields)
    try:
        return parse_search(raw, source=str(path), base_dir=path.parent, study_file=study_file)
    except FssBenchError as e:
        error = blame_override(e, str(path), rest)
        if study_file is not None and error is e:  # a field of the base study set by study.X=...
            error = blame_override(
                e, study_file, [o[len("study.") :] for o in rest if o.startswith("study.")]
            )
        raise error from None


def _shown(path: Path) -> str:
    """``path`` as a message shows it: relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
