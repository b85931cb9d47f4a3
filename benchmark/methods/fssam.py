"""Registration of FSSAM (``fssam.FSSAM``): its switches, weights and builder."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from benchmark.errors import FssBenchError
from benchmark.methods.registry import BuildContext, MethodEntry
from fssam.config import FSSAMConfig

CONFIG_FIELDS = tuple(f.name for f in fields(FSSAMConfig))


def fssam_config(settings: dict[str, Any]) -> FSSAMConfig:
    return FSSAMConfig.from_dict({k: v for k, v in settings.items() if k in CONFIG_FIELDS})


def random_init_id(settings: dict[str, Any]) -> str:
    return f"random-init:seed{settings.get('seed', 0)}"


def sam2_weights(settings: dict[str, Any], ctx: BuildContext):
    """SAM 2 from the pool: every variant with the same SAM 2 settings shares one module; a
    ``finetuned_checkpoint`` is applied to a copy of it (the shared base stays untouched)."""
    import copy
    from pathlib import Path

    from fssam.finetune import apply_finetuned
    from fssam.sam2_adapter import sam2_from_config

    cfg = fssam_config(settings)
    key = (cfg.sam2_version, cfg.sam2_size, cfg.image_size, cfg.sam2_checkpoint, cfg.random_init, cfg.seed)
    base = ctx.pool.get(
        key,
        lambda: sam2_from_config(cfg),
        group="sam2",
        keep=4,  # bounded: a backbone-size study must not keep every SAM 2 on the GPU
    )
    finetuned = settings.get("finetuned_checkpoint")
    if not finetuned:
        return base
    return ctx.pool.get(
        (*key, str(finetuned)),
        lambda: apply_finetuned(copy.deepcopy(base), Path(str(finetuned)), cfg),
        group="finetuned",
        keep=2,  # one per fold and shot
    )


def sam2_sources(settings: dict[str, Any]) -> dict[str, str]:
    """The SAM 2 weights (and the fine-tuned overlay, when set) of naive SAM 2 or FSSAM."""
    overlay = (
        {"finetuned": str(settings["finetuned_checkpoint"])} if settings.get("finetuned_checkpoint") else {}
    )
    if settings.get("random_init"):
        return {"sam2": random_init_id(settings)} | overlay
    if not settings.get("sam2_checkpoint"):
        raise FssBenchError(
            "sam2_checkpoint: no weights: set model.sam2_checkpoint, or model.random_init: true for "
            "random weights (tests and demos only)"
        )
    return {"sam2": str(settings["sam2_checkpoint"])} | overlay


def _sources(settings: dict[str, Any]) -> dict[str, str]:
    if settings.get("random_init"):
        return sam2_sources(settings) | {"dinov2": f"random-init:seed{settings.get('seed', 0) + 1}"}
    if settings.get("fssam_checkpoint"):
        return {"fssam": str(settings["fssam_checkpoint"])}
    out = sam2_sources(settings)
    if fssam_config(settings).needs_dinov2:
        if not settings.get("dinov2_checkpoint"):
            raise FssBenchError(
                f"dinov2_checkpoint: prior {settings.get('prior', 'disc')!r} needs DINOv2 weights "
                "(or set model.fssam_checkpoint to the authors' trained checkpoint)"
            )
        out["dinov2"] = str(settings["dinov2_checkpoint"])
    return out


def _build(settings: dict[str, Any], ctx: BuildContext):
    from fssam.dinov2 import build_dinov2
    from fssam.model import FSSAM

    cfg = fssam_config(settings)
    ckpt = settings.get("fssam_checkpoint")
    if ckpt:
        sam2_config = f"sam2{'.1' if cfg.sam2_version == '2.1' else ''}_hiera_{cfg.sam2_size}"
        base = ctx.pool.get(
            (ckpt, sam2_config, cfg.image_size, cfg.dinov2, cfg.dinov2_input_size),
            lambda: FSSAM.from_authors_checkpoint(
                ckpt,
                sam2_config=sam2_config,
                image_size=cfg.image_size,
                dinov2=cfg.dinov2,
                dinov2_input_size=cfg.dinov2_input_size,
            ),
            group="fssam-checkpoint",
            keep=2,  # bound memory: fine-tuned weights differ per fold and shot
        )
        return FSSAM(cfg, sam2=base.sam2, dino=base.dino).to(ctx.device)
    sam = sam2_weights(settings, ctx)
    dino = None
    if cfg.needs_dinov2:
        dino = ctx.pool.get(
            (cfg.dinov2, cfg.dinov2_checkpoint, cfg.dinov2_input_size, cfg.random_init, cfg.seed),
            lambda: build_dinov2(
                cfg.dinov2,
                checkpoint=cfg.dinov2_checkpoint,
                random_init=cfg.random_init,
                input_size=cfg.dinov2_input_size,
                seed=cfg.seed + 1,
            ),
            group="dinov2",
            keep=4,
        )
    return FSSAM(cfg, sam2=sam, dino=dino).to(ctx.device)


def _validate(settings: dict[str, Any]) -> None:
    fssam_config(settings)
    if settings.get("fssam_checkpoint") and settings.get("finetuned_checkpoint"):
        raise FssBenchError(
            "finetuned_checkpoint: applies on top of sam2_checkpoint/dinov2_checkpoint, not of the "
            "authors' fssam_checkpoint; set one of the two"
        )


ENTRY = MethodEntry(
    name="fssam",
    description="FSSAM (ICML 2025): priors, IMR, SCMA on SAM 2 (fssam/)",
    defaults={**FSSAMConfig().to_dict(), "fssam_checkpoint": None, "finetuned_checkpoint": None},
    build=_build,
    weight_sources=_sources,
    validate=_validate,
    checkpoints=("sam2_checkpoint", "dinov2_checkpoint", "fssam_checkpoint", "finetuned_checkpoint"),
    overlays=("finetuned_checkpoint",),
)
