"""Published numbers (``reports/references.yaml``) for the "published" rows of the main table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmark.errors import FssBenchError

DEFAULT_REFERENCES = Path(__file__).resolve().parent / "references.yaml"
FIELDS = ("method", "variant", "dataset", "shot", "metric", "value", "source")


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
        if not isinstance(r, dict) or set(r) != set(FIELDS):
            got = sorted(r) if isinstance(r, dict) else r
            raise FssBenchError(f"{where}: expected the fields {list(FIELDS)}, got {got}")
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
                )
            )
        except (TypeError, ValueError) as e:
            raise FssBenchError(f"{where}: {e}") from None
    return out
