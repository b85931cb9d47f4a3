"""What the field's SAM baselines (GF-SAM, PerSAM(-F), Matcher) share in their registrations:
where their weights come from and one SAM and one DINOv2 per distinct settings in the weight pool.

Settings objects are the methods' configs (``sam``, ``sam_checkpoint``, ``sam2_version``,
``random_init``, ``seed``, optionally ``sam2_input_size``; ``dinov2``, ``dinov2_checkpoint``,
``dinov2_input_size``). Random DINOv2 weights are seeded with ``seed + 1``, as FSSAM's, so
FSSAM and these methods share one backbone when their settings agree.
"""

from __future__ import annotations

from typing import Any

from benchmark.errors import FssBenchError
from benchmark.methods.registry import BuildContext

SAM_INPUT_SIZE = 1024


def _missing(key: str, what: str) -> FssBenchError:
    return FssBenchError(
        f"{key}: no {what} weights: set model.{key} (fssbench fetch weights), or model.random_init: true "
        "for random weights (tests and demos only)"
    )


def sam_source(settings: dict[str, Any]) -> str:
    """The SAM weights of resolved settings: the checkpoint path, or
    ``random-init:<arch>[:<sam2 version>][:<input size>]:seed<N>``."""
    arch = settings.get("sam", "vit_h")
    if settings.get("random_init"):
        version = f":{settings.get('sam2_version', '2.1')}" if str(arch).startswith("sam2") else ""
        size = settings.get("sam2_input_size", SAM_INPUT_SIZE)
        size_tag = f":{size}px" if size != SAM_INPUT_SIZE else ""
        return f"random-init:{arch}{version}{size_tag}:seed{settings.get('seed', 0)}"
    if not settings.get("sam_checkpoint"):
        raise _missing("sam_checkpoint", f"SAM {arch}")
    return str(settings["sam_checkpoint"])


def dinov2_source(settings: dict[str, Any]) -> str:
    """The DINOv2 weights of resolved settings: the checkpoint path, or ``random-init:<arch>:seed<N+1>``."""
    arch = settings.get("dinov2", "vitl14")
    if settings.get("random_init"):
        return f"random-init:{arch}:seed{settings.get('seed', 0) + 1}"
    if not settings.get("dinov2_checkpoint"):
        raise _missing("dinov2_checkpoint", f"DINOv2 {arch}")
    return str(settings["dinov2_checkpoint"])


def sam_sources(settings: dict[str, Any]) -> dict[str, str]:
    """``weight_sources`` of a method on SAM alone (PerSAM)."""
    return {"sam": sam_source(settings)}


def sam_dinov2_sources(settings: dict[str, Any]) -> dict[str, str]:
    """``weight_sources`` of a method on SAM and DINOv2 (GF-SAM, Matcher)."""
    return {"sam": sam_source(settings), "dinov2": dinov2_source(settings)}


def pooled_sam(config: Any, ctx: BuildContext):
    """One frozen :class:`~baselines.sam_backend.PromptableSAM` per distinct SAM settings, shared
    by every variant (and method) of a run that asks for the same."""
    from baselines.sam_backend import sam_from_config

    key = (
        config.sam,
        config.sam_checkpoint,
        bool(config.random_init),
        int(config.seed),
        config.sam2_version,
        getattr(config, "sam2_input_size", SAM_INPUT_SIZE),
    )
    return ctx.pool.get(key, lambda: sam_from_config(config), group="sam", keep=2)


def pooled_dinov2(config: Any, ctx: BuildContext):
    """One frozen DINOv2 per distinct settings (the same pool entry FSSAM's builder uses)."""
    from baselines.dinov2_tokens import dinov2_from_config

    key = (config.dinov2, config.dinov2_checkpoint, config.dinov2_input_size, config.random_init, config.seed)
    return ctx.pool.get(key, lambda: dinov2_from_config(config), group="dinov2", keep=4)
