"""Registration of FSSAM (``fssam.FSSAM``): its switches, weights, builder and training capability."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from benchmark.errors import FssBenchError
from benchmark.methods.registry import BuildContext, MethodEntry, Trainable
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


def save_sam2_finetuned(
    model, path: Path, method: str, settings: dict[str, Any], meta: Mapping[str, Any]
) -> str:
    """SAM 2's trained modules of FSSAM or naive SAM 2 as a fine-tuned checkpoint
    (``fssam-finetuned/1``, :func:`fssam.finetune.save_finetuned`); returns its SHA-256."""
    from fssam.finetune import save_finetuned

    return save_finetuned(model.sam2, Path(path), method, fssam_config(settings), dict(meta))


def read_sam2_finetuned_meta(path: Path) -> dict[str, Any]:
    """The ``meta`` of a fine-tuned checkpoint (iteration, validation mIoU, ...)."""
    from fssam.finetune import read_finetuned

    return read_finetuned(Path(path))["meta"]


def apply_sam2_finetuned(model, finetuned: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Load a fine-tuned checkpoint into ``model.sam2`` (strictly); returns the checkpoint's meta."""
    from fssam.finetune import apply_finetuned

    apply_finetuned(model.sam2, Path(finetuned), fssam_config(settings))
    return read_sam2_finetuned_meta(finetuned)


def export_authors_layout(model, finetuned: Path, out: Path, settings: dict[str, Any]) -> None:
    """FSSAM with its fine-tuned SAM 2 as the authors' ``train.py`` writes it: ``{'epoch',
    'state_dict'}`` with ``sam2.*`` / ``dino.*`` keys (DINOv2 in Meta's layout, which needs its
    pretraining grid when the weights are random-init)."""
    from fssam.checkpoint import save_authors_checkpoint
    from fssam.dinov2 import META_PRETRAIN_GRID, export_meta_state_dict
    from fssam.sam2_adapter import read_checkpoint

    meta = apply_sam2_finetuned(model, finetuned, settings)
    dino_meta = None
    if model.dino is not None:
        if settings.get("dinov2_checkpoint"):
            raw = read_checkpoint(Path(settings["dinov2_checkpoint"]))
            dino_meta = raw.get("model", raw) if isinstance(raw, dict) else None
        elif settings["dinov2_input_size"] != 14 * META_PRETRAIN_GRID:
            raise FssBenchError(
                f"model.dinov2_input_size: exporting random-init DINOv2 weights in Meta's layout "
                f"needs its {META_PRETRAIN_GRID}x{META_PRETRAIN_GRID} grid (dinov2_input_size: 518)"
            )
        else:
            dino_meta = export_meta_state_dict(model.dino)
    save_authors_checkpoint(model, out, epoch=int(meta.get("iteration", 0)), dino_meta=dino_meta)


TRAINABLE = Trainable(
    save=save_sam2_finetuned,
    read_meta=read_sam2_finetuned_meta,
    export=export_authors_layout,
    layout="the authors' layout",
    refused=("fssam_checkpoint", "finetuned_checkpoint"),  # training starts from SAM 2 and DINOv2
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
    trainable=TRAINABLE,
)
