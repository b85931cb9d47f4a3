"""GF-SAM's settings (:class:`GFSAMConfig`), importable without torch (the registry reads them).

The release behaviours that the method doc's section 5 lists are switches here; every default is
the release.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from fssam.config import DINOV2_ARCH_NAMES, SAM2_VERSIONS
from fssam.errors import FSSAMError

SAM1_ARCH_NAMES = ("vit_b", "vit_l", "vit_h", "vit_test")  # = baselines.sam_backend.SAM1_ARCHS (tested)
SAM2_ARCH_NAMES = ("sam2-t", "sam2-s", "sam2-b+", "sam2-l")  # = baselines.sam_backend.SAM2_ARCHS
SAM_ARCHS = (*SAM1_ARCH_NAMES, *SAM2_ARCH_NAMES)
SAM1_INPUT_SIZE = 1024
DINOV2_PATCH = 14
IMAGE_RESIZES = ("pil-bilinear", "bilinear")
TOKEN_NORMS = ("tokens", "channels")
CLS_SCORES = ("last-visited", "own")
FALLBACK_PICKS = ("zeroed-argmax", "best-label2")
POINT_POSITIONS = ("corner", "centre")


@dataclass(frozen=True)
class GFSAMConfig:
    """GF-SAM's settings. The defaults are the release (ViT-H, ViT-L/14 at 518, 1024 frames).

    Release behaviours (method doc section 5) as switches, defaults = the release:
        token_norm: "tokens" (the release's ``F.normalize(dim=1)`` on (B, N, C): each channel over
            the image's tokens) | "channels" (a per-token cosine).
        dinov2_antialias: the 518 resize with antialias (torchvision >= 0.17) or not (0.14.1, pinned).
        image_resize: the loader's resize to ``image_size``: "pil-bilinear" (HSNet's loaders) | "bilinear".
        cls_score: "last-visited" (every cluster member scored by the last visited mask) | "own".
        fallback_pick: "zeroed-argmax" (argmax of cls with non-label-2 scores zeroed) | "best-label2".
        point_position: "corner" (prompt at the cell's top-left pixel) | "centre" (patch centre).
    sam2_input_size: SAM 2's input frame (a multiple of 64; Meta's models 1024, small in tests);
    SAM 1's is always 1024.
    """

    sam: str = "vit_h"
    sam_checkpoint: str | None = None
    sam2_version: str = "2.1"
    sam2_input_size: int = SAM1_INPUT_SIZE
    dinov2: str = "vitl14"
    dinov2_checkpoint: str | None = None
    dinov2_input_size: int = 518
    image_size: int = 1024
    random_init: bool = False
    seed: int = 0
    token_norm: str = "tokens"
    dinov2_antialias: bool = False
    image_resize: str = "pil-bilinear"
    cls_score: str = "last-visited"
    fallback_pick: str = "zeroed-argmax"
    point_position: str = "corner"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise FSSAMError naming the first bad field."""
        choices = {
            "sam": SAM_ARCHS,
            "sam2_version": SAM2_VERSIONS,
            "dinov2": DINOV2_ARCH_NAMES,
            "token_norm": TOKEN_NORMS,
            "image_resize": IMAGE_RESIZES,
            "cls_score": CLS_SCORES,
            "fallback_pick": FALLBACK_PICKS,
            "point_position": POINT_POSITIONS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise FSSAMError(f"{name}: {getattr(self, name)!r} is not one of {list(allowed)}")
        for name in ("random_init", "dinov2_antialias"):
            if not isinstance(getattr(self, name), bool):
                raise FSSAMError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        self._check_int("seed", 0)
        self._check_int("image_size", 64)
        self._check_int("dinov2_input_size", DINOV2_PATCH, multiple=DINOV2_PATCH)
        self._check_int("sam2_input_size", 64, multiple=64)
        if self.sam not in SAM2_ARCH_NAMES and self.sam2_input_size != SAM1_INPUT_SIZE:
            raise FSSAMError(f"sam2_input_size: SAM 1 ({self.sam}) takes {SAM1_INPUT_SIZE}px inputs only")
        for name in ("sam_checkpoint", "dinov2_checkpoint"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise FSSAMError(f"{name}: must be a path or null, got {getattr(self, name)!r}")

    def _check_int(self, name: str, minimum: int, multiple: int = 1) -> None:
        v = getattr(self, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v % multiple:
            rule = f"an integer >= {minimum}" + (f" and a multiple of {multiple}" if multiple > 1 else "")
            raise FSSAMError(f"{name}: must be {rule}, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GFSAMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FSSAMError(f"{unknown[0]}: unknown GF-SAM setting; known: {sorted(known)}")
        return cls(**d)
