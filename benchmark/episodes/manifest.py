"""The typed episode manifest: what every reader of a manifest file uses.

A manifest is the ordered episode list for (dataset, class split, fold, shot, protocol, seed, count,
kind), saved as canonical JSON whose ``sha256`` field is the SHA-256 of the canonical serialisation
of everything else. :class:`Manifest` holds that content typed; :meth:`Manifest.to_dict` gives the
JSON object back exactly (keys a manifest does not record stay absent, keys this version does not
know are kept), so a file read and written again is byte-identical and keeps its hash, and with it
the cell keys of its cells. :func:`load_manifest` verifies the hash; :func:`save_manifest` writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmark.errors import FssBenchError
from benchmark.io_utils import canonical_json, write_text_atomic

FORMAT = "fssbench-episodes/1"

_KNOWN_KEYS = frozenset(
    [
        "format",
        "kind",
        "dataset",
        "class_split",
        "fold",
        "shot",
        "protocol",
        "seed",
        "num_episodes",
        "classes",
        "source",
        "images",
        "episodes",
        "val_rule",
        "left_out",
        "draw",
        "eval",
        "sha256",
    ]
)
_EPISODE_KEYS = frozenset(("id", "query", "class", "supports", "epoch", "index"))


@dataclass(frozen=True)
class Episode:
    """One episode: the query image id, the target class, the K support image ids (in the order the
    model receives them); ``epoch``/``index``: where a replayed authors' loop drew it (fssam-exact)."""

    id: int
    query: str
    cls: int
    supports: tuple[str, ...]
    epoch: int | None = None
    index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON row: ``{id, query, class, supports}`` (+ ``epoch``, ``index`` if drawn there)."""
        row: dict[str, Any] = {
            "id": self.id,
            "query": self.query,
            "class": self.cls,
            "supports": list(self.supports),
        }
        if self.epoch is not None:
            row["epoch"] = self.epoch
        if self.index is not None:
            row["index"] = self.index
        return row

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Episode:
        unknown = set(row) - _EPISODE_KEYS
        if unknown:
            raise ValueError(f"unknown episode field(s) {sorted(unknown)}")
        return cls(
            row["id"], row["query"], row["class"], tuple(row["supports"]), row.get("epoch"), row.get("index")
        )


@dataclass(frozen=True)
class Evaluation:
    """How a manifest's episodes are scored: ``resolution`` original | resized (to ``size`` x
    ``size``, label with nearest), ``ignore``: 255 pixels excluded (PASCAL; HSNet's COCO has none, so
    there 255 counts as background)."""

    resolution: str = "original"
    size: int | None = None
    ignore: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "size": self.size, "ignore_255": self.ignore}

    @classmethod
    def from_json(cls, ev: Mapping[str, Any]) -> Evaluation:
        return cls(ev["resolution"], ev["size"], ev["ignore_255"])


@dataclass(frozen=True)
class Holdout:
    """The held-out slice of the train split a ``kind: val`` manifest was drawn from."""

    fraction: float
    salt: str

    def to_json(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "salt": self.salt}


@dataclass(frozen=True)
class Source:
    """The data the episodes were drawn from: the split, the SHA-256 of its canonical records (paths
    and class pixel counts) and, for a train-holdout val manifest, the held-out slice."""

    split: str
    records_sha256: str
    holdout: Holdout | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"split": self.split, "records_sha256": self.records_sha256}
        if self.holdout is not None:
            out["holdout"] = self.holdout.to_json()
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Source:
        if set(raw) - {"split", "records_sha256", "holdout"}:
            raise ValueError(
                f"unknown source field(s) {sorted(set(raw) - {'split', 'records_sha256', 'holdout'})}"
            )
        h = raw.get("holdout")
        return cls(
            raw["split"], raw["records_sha256"], Holdout(h["fraction"], h["salt"]) if h is not None else None
        )


@dataclass(frozen=True)
class Manifest:
    """A manifest's content (see the module docstring; README "Episode manifests").

    ``images``: image id -> (image path, label path) relative to the data root, for every image an
    episode uses. ``val_rule``/``left_out``: recorded by ``kind: val`` manifests only; ``draw``: the
    draw's parameters (protocols that replay an authors' loop); ``scoring``: the recorded ``eval``
    (None: scored the default way, see :attr:`evaluation`). ``extra``: top-level keys this version
    does not know, kept so the file round-trips.
    """

    kind: str
    dataset: str
    class_split: str | None
    fold: int
    shot: int
    protocol: str
    seed: int
    num_episodes: int
    classes: tuple[int, ...]
    source: Source
    images: Mapping[str, tuple[str, str]]
    episodes: tuple[Episode, ...]
    val_rule: str | None = None
    left_out: Mapping[str, int] | None = None
    draw: Mapping[str, Any] | None = None
    scoring: Evaluation | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    sha256: str = ""

    @property
    def evaluation(self) -> Evaluation:
        """The scoring the manifest records (none recorded: original size, 255 ignored)."""
        return self.scoring if self.scoring is not None else Evaluation()

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON object, exactly as the file holds it (``sha256`` included when set)."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "format": self.format,
                "kind": self.kind,
                "dataset": self.dataset,
                "class_split": self.class_split,
                "fold": self.fold,
                "shot": self.shot,
                "protocol": self.protocol,
                "seed": self.seed,
                "num_episodes": self.num_episodes,
                "classes": list(self.classes),
                "source": self.source.to_json(),
                "images": {i: list(pair) for i, pair in self.images.items()},
                "episodes": [e.to_dict() for e in self.episodes],
            }
        )
        if self.val_rule is not None:
            out["val_rule"] = self.val_rule
        if self.left_out is not None:
            out["left_out"] = dict(self.left_out)
        if self.draw is not None:
            out["draw"] = dict(self.draw)
        if self.scoring is not None:
            out["eval"] = self.scoring.to_json()
        if self.sha256:
            out["sha256"] = self.sha256
        return out

    def computed_sha256(self) -> str:
        """SHA-256 of the canonical serialisation of the content (everything but ``sha256``)."""
        return manifest_sha256(self.to_dict())

    def sealed(self) -> Manifest:
        """This manifest with its ``sha256`` set to :meth:`computed_sha256`."""
        return replace(self, sha256=self.computed_sha256())

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Manifest:
        """The manifest of a JSON object (no hash check: :func:`load_manifest` does that)."""
        ev = raw.get("eval")
        return cls(
            kind=raw["kind"],
            dataset=raw["dataset"],
            class_split=raw["class_split"],
            fold=raw["fold"],
            shot=raw["shot"],
            protocol=raw["protocol"],
            seed=raw["seed"],
            num_episodes=raw["num_episodes"],
            classes=tuple(raw["classes"]),
            source=Source.from_json(raw["source"]),
            images={i: tuple(pair) for i, pair in raw["images"].items()},
            episodes=tuple(Episode.from_dict(e) for e in raw["episodes"]),
            val_rule=raw.get("val_rule"),
            left_out=raw.get("left_out"),
            draw=raw.get("draw"),
            scoring=Evaluation.from_json(ev) if ev is not None else None,
            extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS},
            format=raw["format"],
            sha256=raw.get("sha256", ""),
        )


def manifest_sha256(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical serialisation of a manifest's JSON object without its ``sha256`` field."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def save_manifest(manifest: Manifest, path: Path) -> None:
    """Write a manifest atomically as canonical JSON."""
    write_text_atomic(Path(path), canonical_json(manifest.to_dict()))


def load_manifest(path: Path) -> Manifest:
    """Read a manifest and verify its hash (a hand-edited or truncated file is an error)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FssBenchError(
            f"{path}: episode manifest not found; make one with `fssbench episodes`"
        ) from None
    except json.JSONDecodeError as e:
        raise FssBenchError(
            f"{path}: not a valid manifest ({e}); regenerate it with `fssbench episodes`"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise FssBenchError(f"{path}: not an fssbench episode manifest (format != {FORMAT})")
    if raw.get("sha256") != manifest_sha256(raw):
        raise FssBenchError(f"{path}: content does not match its sha256 (edited or corrupt); regenerate it")
    try:
        return Manifest.from_dict(raw)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise FssBenchError(
            f"{path}: not a complete manifest ({e!r}); regenerate it with `fssbench episodes`"
        ) from None
