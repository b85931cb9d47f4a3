"""From a schema's first error to the one-line message a user reads, and reading the YAML itself.

A message names the file, then the field (a dotted path: ``variants.fssam.imr_iters``), then what is
wrong and the fix: ``ablations/x.yaml: folds: 4 is out of range: each must be in 0..3``. A YAML
syntax error names the line and the column. Validators raise :func:`invalid` (the schema knows the
field), :func:`in_file` (the message names its own field) or :func:`located` (the message names the
file too, as the methods' own checks do); :func:`validate` runs a schema and turns its first error
into a :class:`~benchmark.errors.FssBenchError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from benchmark.errors import FssBenchError

INVALID, IN_FILE, LOCATED = "fssbench_invalid", "fssbench_in_file", "fssbench_located"
Model = TypeVar("Model", bound=BaseModel)


def did_you_mean(name: Any, known: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def invalid(message: str, *at: Any) -> PydanticCustomError:
    """The error of the field being validated (``at``: keys below it), e.g. ``invalid("expected a
    positive integer, got 0")`` in ``trials`` reads ``FILE: trials: expected ...``."""
    return PydanticCustomError(INVALID, "{message}", {"message": message, "at": ".".join(map(str, at))})


def in_file(message: str) -> PydanticCustomError:
    """An error whose message names its field itself: ``FILE: <message>``."""
    return PydanticCustomError(IN_FILE, "{message}", {"message": message})


def located(message: str) -> PydanticCustomError:
    """An error whose message names the file and the field already (a method's own check)."""
    return PydanticCustomError(LOCATED, "{message}", {"message": message})


def first_error(error: ValidationError, source: str) -> FssBenchError:
    """The one-line error of the first field that failed (fields are checked in file order)."""
    first = error.errors(include_url=False)[0]
    ctx = first.get("ctx") or {}
    message = str(ctx.get("message", first["msg"]))
    if first["type"] == LOCATED:
        return FssBenchError(message)
    if first["type"] == IN_FILE:
        return FssBenchError(f"{source}: {message}")
    field = ".".join(str(k) for k in (*first["loc"], *([ctx["at"]] if ctx.get("at") else [])))
    return FssBenchError(f"{source}: {field}: {message}" if field else f"{source}: {message}")


def validate(schema: type[Model], raw: Any, source: str, **context: Any) -> Model:
    """``raw`` validated by ``schema`` (``context`` reaches every validator, with ``source``);
    raises FssBenchError naming the file and the first bad field."""
    try:
        return schema.model_validate(raw, context={"source": source, **context})
    except ValidationError as e:
        raise first_error(e, source) from None


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document of ``path`` (``what``: "study file", ...); a syntax error names the line
    and the column: ``x.yaml:3:7: not valid YAML: ...; fix the file at that line and column``."""
    path = Path(path)
    if not path.is_file():
        raise FssBenchError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what_is_wrong = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise FssBenchError(
            f"{where}: not valid YAML: {what_is_wrong}; fix the file at that line and column"
        ) from None
