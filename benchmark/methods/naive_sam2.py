"""Registration of the naive SAM 2 baseline (``baselines.naive_sam2.NaiveSAM2``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.methods.fssam import (
    apply_sam2_finetuned,
    fssam_config,
    read_sam2_finetuned_meta,
    sam2_sources,
    sam2_weights,
    save_sam2_finetuned,
)
from benchmark.methods.registry import BuildContext, MethodEntry, Trainable
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


def export_meta_layout(model, finetuned: Path, out: Path, settings: dict[str, Any]) -> None:
    """The fine-tuned SAM 2 in Meta's layout (``{'model': state_dict}``), what ``sam2_checkpoint``
    and ``build_sam2`` read."""
    from fssam.checkpoint import save_meta_sam2_checkpoint

    apply_sam2_finetuned(model, finetuned, settings)
    save_meta_sam2_checkpoint(model.sam2, out)


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
    trainable=Trainable(
        save=save_sam2_finetuned,
        read_meta=read_sam2_finetuned_meta,
        export=export_meta_layout,
        layout="Meta's SAM 2 layout (sam2_checkpoint)",
        refused=("finetuned_checkpoint",),  # training starts from SAM 2
    ),
)
