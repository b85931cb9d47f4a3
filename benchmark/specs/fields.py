"""Field types the study, search and training schemas share.

Each is a pydantic ``PlainValidator`` with today's message: the schema supplies the field's dotted
path (:mod:`.errors`), the type the words (``expected a positive integer, got 0``). Booleans are
never numbers (YAML's ``yes`` is not 1). :class:`Block` is a mapping of known fields whose unknown
keys fail first, with the closest known name.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationInfo, model_validator

from benchmark.data.prepared import PreparedDataset
from benchmark.errors import FssBenchError
from benchmark.lockfile import check_against_lock
from benchmark.specs.errors import did_you_mean, in_file, invalid

MLFLOW_URI_PREFIX = "runs:/"


class _Unset:
    """The default of a field whose absence means something (``loader_workers`` given or not)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def context(info: ValidationInfo, key: str, default: Any = None) -> Any:
    """A value the caller handed every validator (``source``, ``base_dir``)."""
    return (info.context or {}).get(key, default)


def is_number(value: Any, integer: bool = False, finite: bool = False) -> bool:
    """An int or float (an int when ``integer``; finite when ``finite``), never a bool."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return False
    return not finite or math.isfinite(value)


def number(
    kind: str = "int",
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
    nullable: bool = False,
    null_said: bool = True,
    what: str | None = None,
    convert: bool = False,
) -> PlainValidator:
    """A number field: ``kind`` int or float, ``>= low`` (``> low`` when ``above``), ``< high``
    (an open interval: ``what`` names it), null when ``nullable`` (the message says ``or null``
    when ``null_said``; else null is the caller's default). The message says ``expected
    {what}, got X`` (default: ``an integer >= 0``, ``a number > 0``, ...); ``convert`` returns floats."""
    integer = kind == "int"
    if what is None:
        what = "an integer" if integer else "a number"
        what += "" if low is None else f" {'>' if above else '>='} {low:g}"
    said = f"expected {what}{' or null' if nullable and null_said else ''}"

    def check(value: Any) -> Any:
        if value is None and nullable:
            return None
        ok = is_number(value, integer)
        if ok and low is not None:
            ok = value > low if above else value >= low
        if ok and high is not None:
            ok = value < high
        if not ok:
            raise invalid(f"{said}, got {value!r}")
        return float(value) if convert else value

    return PlainValidator(check)


def one_of(choices: Sequence[Any], hint: bool = False, shown: Sequence[Any] | None = None) -> PlainValidator:
    """A value among ``choices``: ``'x' is not one of [...]`` (with the closest one when ``hint``)."""

    def check(value: Any) -> Any:
        try:
            known = value in choices
        except TypeError:  # unhashable: a list or a mapping
            known = False
        if not known:
            listed = list(shown if shown is not None else choices)
            raise invalid(f"{value!r} is not one of {listed}{did_you_mean(value, choices) if hint else ''}")
        return value

    return PlainValidator(check)


def non_empty_text(what: str = "") -> PlainValidator:
    """A non-empty string (``what``: a note such as `` (the MLflow experiment)``)."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise invalid(f"expected a non-empty string{what}")
        return value

    return PlainValidator(check)


def range_text(low: int | None, high: int | None) -> str:
    """``each must be >= 1``, ``each must be <= 3`` or ``each must be in 0..3``."""
    if high is None:
        return f"each must be >= {low}"
    if low is None:
        return f"each must be <= {high}"
    return f"each must be in {low}..{high}"


def int_list(value: Any, low: int | None = None, high: int | None = None) -> list[int]:
    """A non-empty list of integers in ``low..high`` (one integer is a list of one), duplicates dropped."""
    if is_number(value, integer=True):
        value = [value]
    if not isinstance(value, list) or not value or not all(is_number(v, integer=True) for v in value):
        raise invalid(f"expected a non-empty list of integers, got {value!r}")
    for v in value:
        if (low is not None and v < low) or (high is not None and v > high):
            raise invalid(f"{v} is out of range: {range_text(low, high)}")
    return list(dict.fromkeys(value))


def int_list_field(low: int | None = None, high: int | None = None) -> PlainValidator:
    """A field holding :func:`int_list`."""
    return PlainValidator(lambda value: int_list(value, low, high))


def unknown_key(keys: Sequence[Any], known: Sequence[str]) -> Any:
    """The error for the first unknown key (the others listed): ``x: unknown field (did you mean ..)``."""
    more = f" (and {list(keys[1:])})" if len(keys) > 1 else ""
    return invalid(f"unknown field{did_you_mean(keys[0], known)}{more}; known: {list(known)}", keys[0])


SCHEMA_CONFIG = ConfigDict(
    extra="forbid", validate_default=True, arbitrary_types_allowed=True, defer_build=True
)  # every default validated too (a default may depend on an earlier field); built when first used


class FileSchema(BaseModel):
    """The top level of a file: a mapping whose unknown keys fail first, sorted, with the closest
    known name; the known are listed as ``known`` orders them (the documentation's order)."""

    model_config = SCHEMA_CONFIG
    what: ClassVar[str] = "file"  # "a study file must be a YAML mapping"
    known: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise in_file(f"a {cls.what} must be a YAML mapping")
        unknown = sorted(set(raw) - set(cls.known), key=str)
        if unknown:
            raise unknown_key(unknown, cls.known)
        return raw


class Block(BaseModel):
    """A mapping of known fields, checked in the order they are declared. Absent (null) is every
    default; an unknown key fails first, naming the closest known one."""

    model_config = SCHEMA_CONFIG
    not_a_mapping: ClassVar[str] = "expected a mapping with fields {fields}"
    listed: ClassVar[str] = "declared"  # how an unknown key's message lists the known: or "sorted"
    empty_is_null: ClassVar[bool] = False  # whether any empty value ([], "") reads as null

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        if raw is None or (cls.empty_is_null and not raw):
            return {}
        fields = list(cls.model_fields)
        if not isinstance(raw, dict):
            raise invalid(cls.not_a_mapping.format(fields=fields))
        unknown = [k for k in raw if k not in cls.model_fields]
        if unknown:
            raise unknown_key(unknown, sorted(fields) if cls.listed == "sorted" else fields)
        return raw

    def values(self) -> dict[str, Any]:
        """The block's fields in their declared order (blocks inside as mappings), as validated."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            out[name] = value.values() if isinstance(value, Block) else value
        return out


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


def data_root(dataset: str, root: Any, info: ValidationInfo) -> Path:
    """:func:`prepared_root` inside a schema (the file's folder and name from the context)."""
    source = context(info, "source", "")
    try:
        return prepared_root(dataset, root, source, context(info, "base_dir") or Path.cwd())
    except FssBenchError as e:
        raise in_file(str(e)[len(source) + 2 :]) from None


def check_checkpoint_file(path: str, where: str) -> None:
    """Fail early, naming the field, if a checkpoint is missing or not a PyTorch file.
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


def check_weights(sources: dict[str, str], field: Callable[[str], str]) -> None:
    """Check every weight file of ``sources`` (role -> path; random-init roles have none);
    ``field(role)`` names the setting in the message."""
    for role, path in sources.items():
        if not path.startswith("random-init:"):
            check_checkpoint_file(path, field(role))


def absolute_checkpoints(settings: dict[str, Any], keys: Sequence[str], base_dir: Path) -> None:
    """Make the relative weight paths among ``keys`` of ``settings`` absolute against ``base_dir``
    (MLflow URIs stay as they are)."""
    for key in keys:
        value = settings.get(key)
        if value and not str(value).startswith(MLFLOW_URI_PREFIX) and not Path(str(value)).is_absolute():
            settings[key] = str(base_dir / str(value))
