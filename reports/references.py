"""Published numbers (``reports/references.yaml``) for the "published" rows of the main table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmark.data.classes import NUM_FOLDS
from benchmark.errors import FssBenchError
from reports.scoring import Scoring

DEFAULT_REFERENCES = Path(__file__).resolve().parent / "references.yaml"
FIELDS = ("method", "variant", "dataset", "shot", "metric", "value", "source")
OPTIONAL_FIELDS = ("protocol", "eval", "folds")
"""``protocol`` and ``eval`` (``{resolution: original|resized, size: N}``, as in a study file) say how
the number was scored; a row that has them is compared only with cells scored the same way.
``folds``: the per-fold values whose mean is ``value`` (percent, fold 0 first)."""
FOLD_MEAN_TOLERANCE = 0.01
"""How far ``value`` may be from the mean of ``folds``: papers print means of rounded fold values."""


@dataclass(frozen=True)
class Reference:
    """One published number: ``value`` (percent, mean over the 4 folds) of ``method`` on
    ``dataset`` at ``shot`` shots, compared with our ``variant``; ``source`` says where it is from."""

    method: str
    variant: str
    dataset: str
    shot: int
    metric: str
    value: float
    source: str
    scoring: Scoring | None = None  # None: not stated (compared with any cells, as before)
    folds: tuple[float, ...] | None = None


def load_references(path: Path | None = DEFAULT_REFERENCES) -> list[Reference]:
    """The references of a YAML file (a list of mappings with :data:`FIELDS`); None: none."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        raise FssBenchError(f"{path}: references file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as e:
        raise FssBenchError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, list):
        raise FssBenchError(f"{path}: expected a list of published numbers")
    out = []
    for i, r in enumerate(raw):
        where = f"{path}: entry {i + 1}"
        if (
            not isinstance(r, dict)
            or not set(FIELDS) <= set(r)
            or set(r) - set(FIELDS) - set(OPTIONAL_FIELDS)
        ):
            got = sorted(r) if isinstance(r, dict) else r
            raise FssBenchError(
                f"{where}: expected the fields {list(FIELDS)} (and optionally {list(OPTIONAL_FIELDS)}), got {got}"
            )
        if r["dataset"] not in ("pascal", "coco") or r["metric"] not in ("miou", "fb_iou"):
            raise FssBenchError(f"{where}: dataset must be pascal|coco and metric miou|fb_iou")
        if not str(r["source"]).strip():
            raise FssBenchError(f"{where}: source: a published number needs its source")
        try:
            out.append(
                Reference(
                    str(r["method"]),
                    str(r["variant"]),
                    r["dataset"],
                    int(r["shot"]),
                    r["metric"],
                    float(r["value"]),
                    " ".join(str(r["source"]).split()),
                    _scoring(r, where),
                    _folds(r, where),
                )
            )
        except (TypeError, ValueError) as e:
            raise FssBenchError(f"{where}: {e}") from None
    return out


def _scoring(r: dict, where: str) -> Scoring | None:
    """The entry's ``protocol`` and ``eval``, checked as a study file's are (both or neither)."""
    from benchmark.episodes import get_protocol, protocol_names

    if "protocol" not in r and "eval" not in r:
        return None
    if "protocol" not in r or not isinstance(r.get("eval"), dict):
        raise FssBenchError(f"{where}: protocol and eval ({{resolution: ..., size: ...}}) go together")
    if r["protocol"] not in protocol_names():
        raise FssBenchError(f"{where}: protocol {r['protocol']!r} is not one of {protocol_names()}")
    ev = r["eval"]
    if set(ev) - {"resolution", "size"} or "resolution" not in ev:
        raise FssBenchError(f"{where}: eval: expected {{resolution: original|resized, size: N}}, got {ev!r}")
    try:
        evaluation = get_protocol(r["protocol"]).evaluation(r["dataset"], ev["resolution"], ev.get("size"))
    except FssBenchError as e:
        raise FssBenchError(f"{where}: eval: {e}") from None
    return Scoring.of(r["protocol"], evaluation.to_json())


def _folds(r: dict, where: str) -> tuple[float, ...] | None:
    """The entry's per-fold values: one per fold, whose mean is ``value`` (within the rounding)."""
    if "folds" not in r:
        return None
    folds = r["folds"]
    if not isinstance(folds, list) or len(folds) != NUM_FOLDS:
        raise FssBenchError(f"{where}: folds: expected {NUM_FOLDS} values (fold 0 first), got {folds!r}")
    values = tuple(float(x) for x in folds)
    mean = sum(values) / NUM_FOLDS
    if abs(mean - float(r["value"])) > FOLD_MEAN_TOLERANCE:
        raise FssBenchError(
            f"{where}: value {r['value']} is not the mean of folds {list(values)} ({mean:.4f})"
        )
    return values
