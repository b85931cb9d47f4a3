"""Registration of Matcher (``baselines.matcher.Matcher``, ICLR 2024): its settings (the release's
flags with the COCO scripts' values, :class:`baselines.matcher_config.MatcherConfig`), its two
backbones from the weight pool and its weight sources."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from baselines.matcher_config import MatcherConfig
from benchmark.errors import FssBenchError
from benchmark.methods.registry import BuildContext, MethodEntry

CONFIG_FIELDS = tuple(f.name for f in fields(MatcherConfig))


def matcher_config(settings: dict[str, Any]) -> MatcherConfig:
    """The config of resolved settings (the scoring settings every method has are not its own)."""
    return MatcherConfig.from_dict({k: v for k, v in settings.items() if k in CONFIG_FIELDS})


def _sources(settings: dict[str, Any]) -> dict[str, str]:
    cfg = matcher_config(settings)
    if cfg.random_init:
        return {
            "sam": f"random-init:{cfg.sam}:seed{cfg.seed}",
            "dinov2": f"random-init:{cfg.dinov2}:seed{cfg.seed + 1}",
        }
    if not cfg.sam_checkpoint:
        raise FssBenchError(
            f"sam_checkpoint: no weights: set model.sam_checkpoint (Meta's SAM {cfg.sam} file), or "
            "model.random_init: true for random weights (tests and demos only)"
        )
    if not cfg.dinov2_checkpoint:
        raise FssBenchError(
            f"dinov2_checkpoint: no weights: set model.dinov2_checkpoint (Meta's dinov2_{cfg.dinov2}_pretrain.pth)"
        )
    return {"sam": str(cfg.sam_checkpoint), "dinov2": str(cfg.dinov2_checkpoint)}


def _build(settings: dict[str, Any], ctx: BuildContext):
    from baselines.matcher import Matcher, build_dino, build_sam

    cfg = matcher_config(settings)
    sam = ctx.pool.get(
        (cfg.sam, cfg.sam_checkpoint, cfg.random_init, cfg.seed, cfg.sam2_version),
        lambda: build_sam(cfg),
        group="sam1",
        keep=2,
    )
    dino = ctx.pool.get(
        (cfg.dinov2, cfg.dinov2_checkpoint, cfg.dinov2_input_size, cfg.random_init, cfg.seed),
        lambda: build_dino(cfg),
        group="dinov2",
        keep=4,
    )
    return Matcher(cfg, sam=sam, dino=dino).to(ctx.device)


ENTRY = MethodEntry(
    name="matcher",
    description="Matcher (ICLR 2024): DINOv2 patch matching, sampled SAM prompts, EMD-scored masks (baselines/)",
    defaults=MatcherConfig().to_dict(),
    build=_build,
    weight_sources=_sources,
    validate=lambda s: matcher_config(s) and None,
    checkpoints=("sam_checkpoint", "dinov2_checkpoint"),
)
