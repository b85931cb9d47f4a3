"""Registration of Matcher (``baselines.matcher.Matcher``, ICLR 2024): its settings (the release's
flags with the COCO scripts' values, :class:`baselines.matcher_config.MatcherConfig`), its two
backbones from the weight pool and its weight sources."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from baselines.matcher_config import MatcherConfig
from benchmark.methods.field import pooled_dinov2, pooled_sam, sam_dinov2_sources
from benchmark.methods.registry import BuildContext, MethodEntry

CONFIG_FIELDS = tuple(f.name for f in fields(MatcherConfig))


def matcher_config(settings: dict[str, Any]) -> MatcherConfig:
    """The config of resolved settings (the scoring settings every method has are not its own)."""
    return MatcherConfig.from_dict({k: v for k, v in settings.items() if k in CONFIG_FIELDS})


def _build(settings: dict[str, Any], ctx: BuildContext):
    from baselines.matcher import Matcher

    cfg = matcher_config(settings)
    return Matcher(cfg, sam=pooled_sam(cfg, ctx), dino=pooled_dinov2(cfg, ctx)).to(ctx.device)


ENTRY = MethodEntry(
    name="matcher",
    description="Matcher (ICLR 2024): DINOv2 patch matching, sampled SAM prompts, EMD-scored masks (baselines/)",
    defaults=MatcherConfig().to_dict(),
    build=_build,
    weight_sources=sam_dinov2_sources,
    validate=lambda s: matcher_config(s) and None,
    checkpoints=("sam_checkpoint", "dinov2_checkpoint"),
)
