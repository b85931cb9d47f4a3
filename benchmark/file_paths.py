"""Where the paths in the files a user writes point.

A path in a study, search or training file resolves relative to the folder of the file that holds
it, as Compose and MLproject do: ``ablations/main-table.yaml`` says ``data: {pascal: ../data/pascal}``
and means the same folder from any working directory. A search file's ``study: ../main-table.yaml``
is relative to the search file, and the paths inside that study relative to the study file. A path
given on the command line (a ``key=value`` override, ``study=PATH`` included) resolves against the
working directory, as a shell user expects; an override replaces the file's value before anything is
resolved or checked, so a path it replaces is never looked at.

The path fields: every ``data.<dataset>``; every weight setting a registered method declares
(``sam2_checkpoint``, ``fssam_checkpoint``, ...) under ``model`` or a variant;
a search file's ``study`` when it names a file. ``~`` expands; an MLflow
artifact URI (``runs:/...``) and absolute paths stay as they are. Resolved paths are absolute and
normalised (``ablations/../data`` is ``data``), so what a run records names one folder.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.methods import get_method, method_names

Key = tuple[str, ...]
PathFields = Callable[[dict[str, Any]], list[Key]]

URI_PREFIXES = ("runs:/",)


def weight_settings() -> frozenset[str]:
    """Every setting a registered method reads weights from (its ``checkpoints``)."""
    return frozenset(k for name in method_names() for k in get_method(name).checkpoints)


def _weights_in(block: Any, prefix: Key) -> list[Key]:
    if not isinstance(block, dict):
        return []
    names = weight_settings()
    return [(*prefix, k) for k in block if k in names]


def study_path_fields(raw: dict[str, Any]) -> list[Key]:
    """The path fields of a study mapping: ``data.*`` and the weight settings of ``model`` and of
    every variant."""
    fields: list[Key] = []
    if isinstance(raw.get("data"), dict):
        fields += [("data", ds) for ds in raw["data"]]
    fields += _weights_in(raw.get("model"), ("model",))
    if isinstance(raw.get("variants"), dict):
        for name, switches in raw["variants"].items():
            fields += _weights_in(switches, ("variants", name))
    return fields


def train_path_fields(raw: dict[str, Any]) -> list[Key]:
    """The path fields of a training mapping: ``data.*`` and the weight settings of ``model``."""
    fields: list[Key] = []
    if isinstance(raw.get("data"), dict):
        fields += [("data", ds) for ds in raw["data"]]
    return fields + _weights_in(raw.get("model"), ("model",))


def search_path_fields(raw: dict[str, Any]) -> list[Key]:
    """The path fields of a search mapping: ``study`` (a file) or the paths of an inline study
    (weights are not searchable, so the search space holds no path)."""
    study = raw.get("study")
    if isinstance(study, str):
        return [("study",)]
    if isinstance(study, dict):
        return [("study", *key) for key in study_path_fields(study)]
    return []


def absolute_path(value: Any, base_dir: Path) -> Any:
    """``value`` as an absolute, normalised path against ``base_dir`` when it is a relative path
    string; anything else (None, a number, a URI, an absolute path) as it is."""
    if not isinstance(value, str) or not value or value.startswith(URI_PREFIXES):
        return value
    path = os.path.expanduser(value)
    if os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(os.path.abspath(base_dir), path))


def _get(d: Any, key: Key) -> Any:
    for k in key:
        d = d[k]
    return d


def _set(d: Any, key: Key, value: Any) -> None:
    for k in key[:-1]:
        d = d[k]
    d[key[-1]] = value


def resolve_paths(raw: dict[str, Any], fields: PathFields, base_dir: Path) -> dict[str, Any]:
    """A copy of ``raw`` with every path field (``fields(raw)``) resolved against ``base_dir``."""
    out = copy.deepcopy(raw)
    for key in fields(out):
        _set(out, key, absolute_path(_get(out, key), base_dir))
    return out


def override_value(key: str, value: Any, fields: PathFields) -> Any:
    """The value of the override ``key=value`` with the paths it holds resolved against the working
    directory (``data.pascal=data/pascal``, ``study=other.yaml``, ``data={pascal: x}``)."""
    parts = key.split(".")
    alone: dict[str, Any] = {}
    cur = alone
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = copy.deepcopy(value)
    resolved = resolve_paths(alone, fields, Path.cwd())
    return _get(resolved, tuple(parts))
