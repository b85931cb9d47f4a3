"""Registration of the naive SAM 2 baseline (``baselines.naive_sam2.NaiveSAM2``)."""

from __future__ import annotations

from typing import Any

from benchmark.methods.fssam import fssam_config, sam2_sources, sam2_weights
from benchmark.methods.registry import BuildContext, MethodEntry
from fssam.config import FSSAMConfig

SAM2_FIELDS = (
    "sam2_version",
    "sam2_size",
    "image_size",
    "sam2_checkpoint",
    "random_init",
    "seed",
    "round_memory_to_bf16",
    "precision",
)


def _build(settings: dict[str, Any], ctx: BuildContext):
    from baselines.naive_sam2 import NaiveSAM2

    return NaiveSAM2(fssam_config(settings), sam2=sam2_weights(settings, ctx)).to(ctx.device)


_DEFAULTS = FSSAMConfig().to_dict()
ENTRY = MethodEntry(
    name="naive_sam2",
    description="naive SAM 2: supports as conditioning memories, plain memory attention (baselines/)",
    defaults={**{k: _DEFAULTS[k] for k in SAM2_FIELDS}, "finetuned_checkpoint": None},
    build=_build,
    weight_sources=sam2_sources,
    validate=lambda s: fssam_config(s) and None,
    checkpoints=("sam2_checkpoint", "finetuned_checkpoint"),
    overlays=("finetuned_checkpoint",),
)
