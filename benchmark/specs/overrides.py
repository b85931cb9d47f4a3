"""Command-line ``key=value`` overrides of a file's fields, and blaming them for what they set.

``episodes=20``, ``model.random_init=true``, ``variants.fssam.imr_iters=2``: a dotted path into the
file and a YAML value. When a bad value came from an override, the message names the override
(``command-line override 'episodes=0': episodes: ...``) rather than the file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from benchmark.errors import FssBenchError
from benchmark.file_paths import PathFields, override_value, resolve_paths
from benchmark.specs.errors import read_yaml


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


def blame_override(error: FssBenchError, source: str, overrides: list[str]) -> FssBenchError:
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


def read_overridden(path: Path, what: str, fields: PathFields, overrides: list[str]) -> Any:
    """The YAML file ``path`` (a ``what``: ``study file``, ``training file``) as data, its paths
    resolved relative to its folder (``fields``: which keys are paths), then ``overrides`` applied
    (their paths against the working directory); not yet validated."""
    raw = read_yaml(path, what) or {}
    if isinstance(raw, dict):
        raw = resolve_paths(raw, fields, path.parent)
    return apply_overrides(raw, overrides, fields)
