"""A search file's ``space:``, ``sampler:`` and ``pruner:``: the dimensions Optuna walks and how.

A dimension is ``{type: int|float, low, high, log?, step?, grid?}`` or ``{type: categorical,
choices, grid?}``; every end of its range must be a value the searched method accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainValidator, model_validator

from benchmark.methods import MethodEntry
from benchmark.specs.errors import did_you_mean, in_file, invalid
from benchmark.specs.fields import Block, is_number

PARAM_TYPES = ("int", "float", "categorical")
SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "none", "successive_halving", "wilcoxon")
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


def _kind(value: Any) -> str:
    if value not in PARAM_TYPES:
        raise invalid(f"{value!r} is not one of {list(PARAM_TYPES)}")
    return value


def _grid(value: Any) -> list[Any] | None:
    if value is not None and (not isinstance(value, list) or not value):
        raise invalid("expected a non-empty list of values")
    return value


class ParamBlock(Block):
    """One dimension as written; :meth:`param` checks the fields together."""

    not_a_mapping = "expected a mapping such as {{type: int, low: 0, high: 6}} or {{type: categorical, choices: [disc, fg]}}"

    type: Annotated[str, PlainValidator(_kind)] = None
    low: Any = None
    high: Any = None
    log: Any = False
    step: Any = None
    choices: Any = None
    grid: Annotated[list[Any] | None, PlainValidator(_grid)] = None

    @model_validator(mode="after")
    def _together(self) -> ParamBlock:
        if self.type == "categorical":
            self._categorical()
        else:
            self._numeric()
        return self

    def _categorical(self) -> None:
        choices = self.choices
        if not isinstance(choices, list) or not choices:
            raise invalid("expected a non-empty list", "choices")
        if not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
            raise invalid("only strings, numbers, booleans and null can be choices", "choices")
        if len(set(map(repr, choices))) != len(choices):
            raise invalid(f"{choices} has duplicates", "choices")
        for key in ("low", "high", "log", "step"):
            if key in self.model_fields_set:
                raise invalid("a categorical parameter has only choices", key)

    def _numeric(self) -> None:
        integer = self.type == "int"
        if "choices" in self.model_fields_set:
            raise invalid("only for type: categorical", "choices")
        for key, value in (("low", self.low), ("high", self.high)):
            if not is_number(value, finite=True) or (integer and not isinstance(value, int)):
                raise invalid(f"expected {'an integer' if integer else 'a number'}, got {value!r}", key)
        if self.low > self.high:
            raise invalid(f"low {self.low} is above high {self.high}")
        if not isinstance(self.log, bool):
            raise invalid("expected true or false", "log")
        if self.log and self.low <= 0:
            raise invalid(f"a log scale needs low > 0, got low {self.low}", "log")
        if self.step is not None:
            step = self.step
            if not is_number(step, finite=True) or step <= 0 or (integer and not isinstance(step, int)):
                raise invalid(f"expected a positive {'integer' if integer else 'number'}", "step")
            if self.log:
                raise invalid("step and log cannot be combined (Optuna's rule)")

    def param(self, name: str) -> Param:
        """The dimension ``name``, with the values a grid sampler walks."""
        if self.type == "categorical":
            choices = tuple(self.choices)
            return Param(name, self.type, choices=choices, grid=tuple(self.grid or choices))
        low, high, step, grid = self.low, self.high, self.step, self.grid
        if self.type == "int":
            low, high, step = int(low), int(high), int(step or 1)
            values = tuple(range(low, high + 1, step))
        else:
            low, high = float(low), float(high)
            values = tuple(float(v) for v in grid) if grid else ()
        if grid is not None:
            for v in grid:
                ok = is_number(v, finite=True) and low <= v <= high
                if not ok or (self.type == "int" and not isinstance(v, int)):
                    raise invalid(f"{v!r} is not a {self.type} in [{low}, {high}]", name, "grid")
            values = tuple(grid)
        return Param(name, self.type, low, high, self.log, step, (), values)


def extremes(p: Param) -> list[Any]:
    """The values of ``p`` the method must accept: every choice, both ends and the grid."""
    return list(p.choices) if p.type == "categorical" else [p.low, p.high, *p.grid]


def check_searchable(name: Any, entry: MethodEntry, variant: str) -> None:
    """``name`` is a switch of the searched method, not its weights or arithmetic."""
    if name not in entry.all_defaults:
        searchable = sorted(
            k for k in entry.all_defaults if k not in entry.checkpoints and k not in NOT_SEARCHABLE
        )
        raise invalid(
            f"not a switch of method {entry.name!r} (variant {variant}){did_you_mean(name, entry.all_defaults)}; "
            f"searchable: {searchable}",
            name,
        )
    if name in entry.checkpoints or name in NOT_SEARCHABLE:
        raise invalid(f"{name} selects weights or arithmetic, not a switch; it cannot be searched", name)


def section(value: Any, types: tuple[str, ...], default: str) -> dict[str, Any]:
    """A ``sampler:`` or ``pruner:``: a mapping with a ``type`` (a bare name is its type)."""
    value = value or {"type": default}
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise invalid(f"expected a mapping such as {{type: {default}}}")
    kind = value.get("type", default)
    if kind not in types:
        raise invalid(f"{kind!r} is not one of {list(types)}{did_you_mean(kind, types)}", "type")
    return {**value, "type": kind}


def sampler_section(value: Any, space: dict[str, Param] | None) -> dict[str, Any]:
    """``sampler:`` checked against its type's options and the space (a grid needs every value)."""
    sampler = section(value, SAMPLERS, "tpe")
    allowed = {"type", "seed"} | ({"startup_trials"} if sampler["type"] in ("tpe", "cmaes") else set())
    for key in sampler:
        if key not in allowed:
            raise invalid(f"not an option of the {sampler['type']} sampler; options: {sorted(allowed)}", key)
    seed = sampler.get("seed", None if sampler["type"] == "grid" else 0)
    if seed is not None and not is_number(seed, integer=True):
        raise invalid(f"expected an integer, got {seed!r}", "seed")
    sampler["seed"] = seed
    if space is None:  # the space failed: that is the error
        return sampler
    if sampler["type"] == "grid":
        for p in space.values():
            if not p.grid:
                raise in_file(
                    f"space.{p.name}: a grid sampler needs its values: add grid: [...] "
                    "(int ranges and categoricals are walked completely)"
                )
        size = math.prod(len(p.grid) for p in space.values())
        if size > MAX_GRID:
            raise in_file(f"space: the grid has {size} points (more than {MAX_GRID})")
    categorical = [p.name for p in space.values() if p.type == "categorical"]
    if sampler["type"] == "cmaes" and categorical:
        raise invalid(
            f"cmaes samples numbers only; space has categorical {categorical} (use tpe, random or grid)",
            "type",
        )
    return sampler


def pruner_section(value: Any) -> dict[str, Any]:
    """``pruner:`` with its type's defaults filled in, each option checked."""
    pruner = section(value, PRUNERS, "median")
    fields = PRUNER_FIELDS[pruner["type"]]
    for key in pruner:
        if key != "type" and key not in fields:
            raise invalid(f"not an option of the {pruner['type']} pruner; options: {sorted(fields)}", key)
    pruner = {**fields, **pruner}
    for key, value in pruner.items():
        if key == "type" or (key == "min_resource" and value is None):
            continue
        if key == "p_threshold":
            if not is_number(value, finite=True) or not 0 < value < 1:
                raise invalid("expected a number in (0, 1)", key)
        elif not is_number(value, integer=True) or value < (2 if key == "reduction_factor" else 0):
            raise invalid(f"expected an integer >= {2 if key == 'reduction_factor' else 0}", key)
    return pruner
