"""PerSAM's and PerSAM-F's settings: one flat, validated dataclass (no torch import).

Exact to the release unless marked *suite*: the release has no few-shot-segmentation code
(persam-method.md §5.2), so the frame, the K-shot pooling, the mask encoding and the fallbacks are
suite choices, each a named switch recorded in the cell key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

SAM1_ARCHS = ("vit_b", "vit_l", "vit_h", "vit_test")
SAM2_ARCHS = ("sam2-t", "sam2-s", "sam2-b+", "sam2-l")
SAM2_VERSIONS = ("2.0", "2.1")
IMAGE_RESIZES = ("bilinear", "pil-bilinear")
MASK_FG_VALUES = (128, 255)
SHOT_POOLINGS = ("union", "average-maps")
EMPTY_REFERENCES = ("empty", "any-pixel")
TARGET_ALIASES = ("release", "intended")

PERSAM_F_FIELDS = ("lr", "iters", "weight_decay", "adam_eps")
"""Fields only PerSAM-F reads (the fit of its two weights)."""
PERSAM_ONLY_FIELDS = ("target_alias",)
"""Fields only training-free PerSAM reads (PerSAM-F has no target embedding)."""


@dataclass
class PerSAMConfig:
    """Every setting of PerSAM (``finetune=False``) or PerSAM-F (``finetune=True``).

    ``sam``: SAM 1 ``vit_b|vit_l|vit_h`` (the release: ``vit_h``), ``vit_test`` (tiny, tests), or
    SAM 2 ``sam2-t|s|b+|l`` (``sam2_version``). ``image_size``: the harness's square frame S
    (*suite*, §5.2.2; SAM's input stays 1024). ``image_resize``: how the harness resizes images to
    S (*suite*). PerSAM-F's fit: ``lr``, ``iters``, ``weight_decay``, ``adam_eps`` (the release's
    1e-3, 1000, 0.01, 1e-4). Switches:

    * ``mask_fg_value`` (*suite*, §1.2/§5.2.3): R value of the reference mask image, 128 (the
      repo's convention: a cell needs all 4 sampled pixels inside) or 255 (2 of 4);
    * ``shot_pooling`` (*suite design*, §4; K = 1 is the release either way): ``union`` pools the
      features over all shots' reference cells (mean, or max/mean for PerSAM-F); ``average-maps``
      pools per shot and averages the K cosine maps (the target embedding: the mean of the K);
    * ``empty_reference`` (*suite*, §5.2.4; the release gives NaN): ``empty`` predicts no
      foreground; ``any-pixel`` falls back to the cells holding any foreground pixel;
    * ``target_alias`` (§1.3, §6.2): ``release`` reproduces the in-place aliasing of the
      positional term, ``intended`` keeps the positional term unshifted.
    """

    sam: str = "vit_h"
    sam_checkpoint: str | None = None
    sam2_version: str = "2.1"
    image_size: int = 1024
    image_resize: str = "bilinear"
    finetune: bool = False
    random_init: bool = False
    seed: int = 0
    lr: float = 1e-3
    iters: int = 1000
    weight_decay: float = 0.01
    adam_eps: float = 1e-4
    mask_fg_value: int = 128
    shot_pooling: str = "union"
    empty_reference: str = "empty"
    target_alias: str = "release"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def family(self) -> str:
        return "sam2" if self.sam in SAM2_ARCHS else "sam1"

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        choices: dict[str, tuple] = {
            "sam": SAM1_ARCHS + SAM2_ARCHS,
            "sam2_version": SAM2_VERSIONS,
            "image_resize": IMAGE_RESIZES,
            "mask_fg_value": MASK_FG_VALUES,
            "shot_pooling": SHOT_POOLINGS,
            "empty_reference": EMPTY_REFERENCES,
            "target_alias": TARGET_ALIASES,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if isinstance(value, bool) or value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {list(allowed)}")
        for name in ("finetune", "random_init"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be true or false")
        for name in ("image_size", "iters", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise ValueError(f"{name}={value!r} must be an integer >= {0 if name == 'seed' else 1}")
        for name in ("lr", "weight_decay", "adam_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name}={value!r} must be a number >= 0")
        if self.sam == "vit_test" and not self.random_init:
            raise ValueError("sam='vit_test' is the tiny test architecture: random_init only")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PerSAMConfig:
        """Build from a dict; an unknown field is a ValueError naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown PerSAM setting; known: {sorted(known)}")
        return cls(**d)
