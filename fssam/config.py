"""FSSAM's settings: one flat, validated dataclass whose fields are the ablation switches."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from fssam.errors import FSSAMError

# The switches' allowed values live here (no torch import), and the modules that implement them
# import them from here.
SAM2_VERSIONS = ("2.0", "2.1")
SAM2_SIZES = ("t", "s", "b+", "l")
IMR_VERSIONS = ("v1", "v2")
KSHOT_MODES = ("intended", "released")
KSHOT_POINTERS = ("keep", "average")

PRIORS = ("disc", "fg", "none", "oracle")
DINOV2_ARCH_NAMES = ("vits14", "vitb14", "vitl14", "vitg14")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class FSSAMConfig:
    """Every setting of an FSSAM model (defaults = the paper: SAM 2.0-S, 512 px, DINOv2-B, T=3).

    Switches (ablations): ``imr_iters`` (0 = no IMR), ``imr_version`` ("v1" default, "v2" min-max
    normalises the IMR weights), ``scma`` (False = plain attention), ``scma_scale``, ``prior``
    ("disc" = FSSAM, "fg" = FG prior as the pseudo memory, "none" = no pseudo-query memory, "oracle" =
    the query's ground truth as the prior, an upper bound), ``kshot_mode`` ("intended" or "released",
    see fssam/scma.py), ``kshot_pointers`` (intended mode: "keep" the K+1 object pointers, 4(K+1)
    tokens, as the method describes; "average" the K support pointers into one, so that K identical
    shots give exactly the 1-shot result), ``dinov2`` size, ``sam2_version``/``sam2_size``, ``image_size``.
    """

    sam2_version: str = "2.0"
    sam2_size: str = "s"
    image_size: int = 512
    sam2_checkpoint: str | None = None
    dinov2: str = "vitb14"
    dinov2_checkpoint: str | None = None
    dinov2_input_size: int = 560
    random_init: bool = False
    seed: int = 0  # only used with random_init
    imr_iters: int = 3
    imr_version: str = "v1"
    scma: bool = True
    scma_scale: float = 10.0
    prior: str = "disc"
    kshot_mode: str = "intended"
    kshot_pointers: str = "keep"
    round_memory_to_bf16: bool = True
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 elsewhere

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise FSSAMError naming the first bad field."""
        choices = {
            "sam2_version": SAM2_VERSIONS,
            "sam2_size": SAM2_SIZES,
            "dinov2": DINOV2_ARCH_NAMES,
            "imr_version": IMR_VERSIONS,
            "prior": PRIORS,
            "kshot_mode": KSHOT_MODES,
            "kshot_pointers": KSHOT_POINTERS,
            "precision": PRECISIONS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise FSSAMError(f"{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        if not isinstance(self.imr_iters, int) or self.imr_iters < 0:
            raise FSSAMError(f"imr_iters must be an integer >= 0, got {self.imr_iters!r}")
        if self.image_size % 64 or self.image_size <= 0:
            raise FSSAMError(f"image_size must be a positive multiple of 64, got {self.image_size!r}")
        if self.dinov2_input_size % 14 or self.dinov2_input_size <= 0:
            raise FSSAMError(
                f"dinov2_input_size must be a positive multiple of 14, got {self.dinov2_input_size!r}"
            )
        if self.scma_scale < 0:
            raise FSSAMError(f"scma_scale must be >= 0, got {self.scma_scale!r}")

    @property
    def needs_dinov2(self) -> bool:
        return self.prior in ("disc", "fg")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FSSAMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FSSAMError(f"unknown FSSAM setting(s) {unknown}; known: {sorted(known)}")
        return cls(**d)
