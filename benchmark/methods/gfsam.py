"""Registration of GF-SAM (``baselines.gfsam.GFSAM``, NeurIPS 2024): its switches, weights and builder."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from baselines.gfsam_config import GFSAMConfig
from benchmark.errors import FssBenchError
from benchmark.methods.field import pooled_dinov2, pooled_sam, sam_dinov2_sources
from benchmark.methods.registry import BuildContext, MethodEntry
from fssam.errors import FSSAMError

CONFIG_FIELDS = tuple(f.name for f in fields(GFSAMConfig))


def gfsam_config(settings: dict[str, Any]) -> GFSAMConfig:
    """The :class:`GFSAMConfig` of resolved settings (errors name the field)."""
    try:
        return GFSAMConfig.from_dict({k: v for k, v in settings.items() if k in CONFIG_FIELDS})
    except (FSSAMError, TypeError) as e:
        raise FssBenchError(str(e)) from None


def _build(settings: dict[str, Any], ctx: BuildContext):
    from baselines.gfsam import GFSAM

    cfg = gfsam_config(settings)
    return GFSAM(cfg, sam=pooled_sam(cfg, ctx), dino=pooled_dinov2(cfg, ctx)).to(ctx.device)


def _validate(settings: dict[str, Any]) -> None:
    gfsam_config(settings)


ENTRY = MethodEntry(
    name="gfsam",
    description="GF-SAM (NeurIPS 2024): DINOv2 priors, point prompts, graph clusters, two gates on SAM (baselines/)",
    defaults=GFSAMConfig().to_dict(),
    build=_build,
    weight_sources=sam_dinov2_sources,
    validate=_validate,
    checkpoints=("sam_checkpoint", "dinov2_checkpoint"),
)
