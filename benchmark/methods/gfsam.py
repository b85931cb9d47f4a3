"""Registration of GF-SAM (``baselines.gfsam.GFSAM``, NeurIPS 2024): its switches, weights and builder."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from baselines.gfsam_config import SAM1_INPUT_SIZE, GFSAMConfig
from benchmark.errors import FssBenchError
from benchmark.methods.registry import BuildContext, MethodEntry
from fssam.errors import FSSAMError

CONFIG_FIELDS = tuple(f.name for f in fields(GFSAMConfig))


def gfsam_config(settings: dict[str, Any]) -> GFSAMConfig:
    """The :class:`GFSAMConfig` of resolved settings (errors name the field)."""
    try:
        return GFSAMConfig.from_dict({k: v for k, v in settings.items() if k in CONFIG_FIELDS})
    except (FSSAMError, TypeError) as e:
        raise FssBenchError(str(e)) from None


def _sources(settings: dict[str, Any]) -> dict[str, str]:
    """SAM and DINOv2 weights: the checkpoint paths, or the random-init ids (seed, seed + 1)."""
    seed = settings.get("seed", 0)
    if settings.get("random_init"):
        return {
            "sam": f"random-init:{settings.get('sam', 'vit_h')}:seed{seed}",
            "dinov2": f"random-init:{settings.get('dinov2', 'vitl14')}:seed{seed + 1}",
        }
    for key, what in (("sam_checkpoint", "SAM"), ("dinov2_checkpoint", "DINOv2")):
        if not settings.get(key):
            raise FssBenchError(
                f"{key}: no {what} weights: set model.{key}, or model.random_init: true for random "
                "weights (tests and demos only)"
            )
    return {"sam": str(settings["sam_checkpoint"]), "dinov2": str(settings["dinov2_checkpoint"])}


def _build(settings: dict[str, Any], ctx: BuildContext):
    from baselines.gfsam import GFSAM, build_dino, build_sam

    cfg = gfsam_config(settings)
    key = (cfg.sam, cfg.sam_checkpoint, cfg.random_init, cfg.seed, cfg.sam2_version)
    if cfg.sam2_input_size != SAM1_INPUT_SIZE:  # a small SAM 2 frame (tests): its own model
        key = (*key, cfg.sam2_input_size)
    sam = ctx.pool.get(
        key,
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
    return GFSAM(cfg, sam=sam, dino=dino).to(ctx.device)


def _validate(settings: dict[str, Any]) -> None:
    cfg = gfsam_config(settings)
    if cfg.random_init and (cfg.sam_checkpoint or cfg.dinov2_checkpoint):
        raise FssBenchError(
            "random_init: true takes no sam_checkpoint or dinov2_checkpoint; set one or the other"
        )


ENTRY = MethodEntry(
    name="gfsam",
    description="GF-SAM (NeurIPS 2024): DINOv2 priors, point prompts, graph clusters, two gates on SAM (baselines/)",
    defaults=GFSAMConfig().to_dict(),
    build=_build,
    weight_sources=_sources,
    validate=_validate,
    checkpoints=("sam_checkpoint", "dinov2_checkpoint"),
)
