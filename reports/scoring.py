"""How a number was scored: the episode protocol and the evaluation resolution, as one comparable
value (:class:`Scoring`). Numbers scored differently are never compared silently: the report keeps
cells of different scorings apart and a published number says how it was scored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Scoring:
    """``protocol`` (fssam | hsnet | fssam-exact | ...) and the resolution the metric was computed
    at: ``resolution`` original (the label's size) or resized (labels nearest-resized to ``size``)."""

    protocol: str
    resolution: str
    size: int | None = None

    @property
    def tag(self) -> str:
        """Short and file-name safe: ``fssam-original``, ``hsnet-400``, ``hsnet-1024``."""
        return f"{self.protocol}-{self.size}" if self.resolution == "resized" else f"{self.protocol}-original"

    @property
    def text(self) -> str:
        """For captions: "protocol hsnet, scored at 1024 px (labels resized)" / "..., at the label's size"."""
        where = (
            f"scored at {self.size} px (labels resized)"
            if self.resolution == "resized"
            else "scored at the label's size"
        )
        return f"protocol {self.protocol}, {where}"

    @classmethod
    def of(cls, protocol: str, evaluation: dict[str, Any]) -> Scoring:
        """From a protocol name and a manifest's evaluation JSON (``{resolution, size, ...}``)."""
        resized = evaluation.get("resolution") == "resized"
        return cls(
            str(protocol), "resized" if resized else "original", int(evaluation["size"]) if resized else None
        )


UNKNOWN_RESOLUTION = "unknown"
"""The resolution of a cell whose evaluation could not be read (an artifact missing)."""
