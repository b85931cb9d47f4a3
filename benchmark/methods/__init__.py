"""Methods the harness can run, by the name a study file gives them (``method:``).

To add one: write the model (it satisfies :class:`FewShotMethod`), describe it with a
:class:`MethodEntry` in a file here, and register it below. A method that can be fine-tuned gives
its entry ``trainable=Trainable(...)`` and builds a :class:`TrainableMethod`.
"""

from benchmark.methods import fssam, gfsam, matcher, naive_sam2, persam, reference
from benchmark.methods.base import Features, FewShotMethod, FrozenEncoder, TrainableMethod
from benchmark.methods.registry import (
    BuildContext,
    MethodEntry,
    Trainable,
    WeightPool,
    build_method,
    fill_templates,
    get_method,
    get_trainable,
    method_names,
    register,
    trainable_method_names,
)

register(fssam.ENTRY)
register(naive_sam2.ENTRY)
register(gfsam.ENTRY)
register(persam.PERSAM)
register(persam.PERSAM_F)
register(matcher.ENTRY)
register(reference.MEAN_COLOUR)
register(reference.ALL_FOREGROUND)

__all__ = [
    "BuildContext",
    "Features",
    "FewShotMethod",
    "FrozenEncoder",
    "MethodEntry",
    "Trainable",
    "TrainableMethod",
    "WeightPool",
    "build_method",
    "fill_templates",
    "get_method",
    "get_trainable",
    "method_names",
    "register",
    "trainable_method_names",
]
