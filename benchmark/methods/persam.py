"""Registration of PerSAM and PerSAM-F (``baselines.persam.PerSAM``): two entries on one SAM pool.

``persam`` is training-free PerSAM; ``persam_f`` is PerSAM-F (``finetune=True``). Both build their
SAM through the weight pool (group ``sam1``, the field baselines' shared pool), so the variants of
a study use one SAM, and both read the same cached SAM features (one encoder identity).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from baselines.persam_config import PERSAM_F_FIELDS, PERSAM_ONLY_FIELDS, PerSAMConfig
from benchmark.errors import FssBenchError
from benchmark.methods.registry import BuildContext, MethodEntry

CONFIG_FIELDS = tuple(f.name for f in fields(PerSAMConfig))


def persam_config(settings: dict[str, Any], finetune: bool) -> PerSAMConfig:
    own = {k: v for k, v in settings.items() if k in CONFIG_FIELDS}
    return PerSAMConfig.from_dict({**own, "finetune": finetune})


def sam_sources(settings: dict[str, Any]) -> dict[str, str]:
    """The SAM weights of a field baseline: the checkpoint path, or ``random-init:<arch>:seed<N>``."""
    arch = settings.get("sam", "vit_h")
    if settings.get("random_init"):
        version = f":{settings.get('sam2_version', '2.1')}" if str(arch).startswith("sam2") else ""
        return {"sam": f"random-init:{arch}{version}:seed{settings.get('seed', 0)}"}
    if not settings.get("sam_checkpoint"):
        raise FssBenchError(
            f"sam_checkpoint: no weights for SAM {arch}: set model.sam_checkpoint to Meta's checkpoint, "
            "or model.random_init: true for random weights (tests and demos only)"
        )
    return {"sam": str(settings["sam_checkpoint"])}


def pooled_sam(settings: dict[str, Any], ctx: BuildContext):
    """One frozen SAM per (arch, checkpoint, random_init, seed, sam2_version), shared by variants."""
    from baselines.sam_backend import build_promptable

    key = (
        settings["sam"],
        settings.get("sam_checkpoint"),
        bool(settings["random_init"]),
        int(settings["seed"]),
        settings["sam2_version"],
    )
    return ctx.pool.get(
        key,
        lambda: build_promptable(
            settings["sam"],
            settings.get("sam_checkpoint"),
            bool(settings["random_init"]),
            int(settings["seed"]),
            sam2_version=settings["sam2_version"],
        ),
        group="sam1",
        keep=2,
    )


def _entry(name: str, finetune: bool, description: str, dropped: tuple[str, ...]) -> MethodEntry:
    def build(settings: dict[str, Any], ctx: BuildContext):
        from baselines.persam import PerSAM

        return PerSAM(persam_config(settings, finetune), sam=pooled_sam(settings, ctx)).to(ctx.device)

    defaults = {k: v for k, v in PerSAMConfig().to_dict().items() if k not in ("finetune", *dropped)}
    return MethodEntry(
        name=name,
        description=description,
        defaults=defaults,
        build=build,
        weight_sources=sam_sources,
        validate=lambda s: persam_config(s, finetune) and None,
        checkpoints=("sam_checkpoint",),
    )


PERSAM = _entry(
    "persam",
    False,
    "PerSAM (ICLR 2024): location prior, target-guided attention and semantic prompting on SAM (baselines/)",
    PERSAM_F_FIELDS,
)
PERSAM_F = _entry(
    "persam_f",
    True,
    "PerSAM-F (ICLR 2024): 2 mixing weights of SAM's multimask logits fitted on the support (baselines/)",
    PERSAM_ONLY_FIELDS,
)
