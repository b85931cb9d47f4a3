"""Registration of PerSAM and PerSAM-F (``baselines.persam.PerSAM``): two entries on one SAM pool.

``persam`` is training-free PerSAM; ``persam_f`` is PerSAM-F (``finetune=True``). Both build their
SAM through the weight pool (group ``sam1``, the field baselines' shared pool), so the variants of
a study use one SAM, and both read the same cached SAM features (one encoder identity).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from baselines.persam_config import PERSAM_F_FIELDS, PERSAM_ONLY_FIELDS, PerSAMConfig
from benchmark.methods.field import pooled_sam, sam_sources
from benchmark.methods.registry import BuildContext, MethodEntry

CONFIG_FIELDS = tuple(f.name for f in fields(PerSAMConfig))


def persam_config(settings: dict[str, Any], finetune: bool) -> PerSAMConfig:
    own = {k: v for k, v in settings.items() if k in CONFIG_FIELDS}
    return PerSAMConfig.from_dict({**own, "finetune": finetune})


def _entry(name: str, finetune: bool, description: str, dropped: tuple[str, ...]) -> MethodEntry:
    def build(settings: dict[str, Any], ctx: BuildContext):
        from baselines.persam import PerSAM

        cfg = persam_config(settings, finetune)
        return PerSAM(cfg, sam=pooled_sam(cfg, ctx)).to(ctx.device)

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
