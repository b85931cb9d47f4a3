"""Methods the harness can run, by the name a study file gives them (``method:``).

To add one: write the model (it satisfies :class:`FewShotMethod`), describe it with a
:class:`MethodEntry` in a file here, and register it below.
"""

from benchmark.methods import fssam, naive_sam2, reference
from benchmark.methods.base import Features, FewShotMethod, FrozenEncoder
from benchmark.methods.registry import (
    BuildContext,
    MethodEntry,
    WeightPool,
    build_method,
    fill_templates,
    get_method,
    method_names,
    register,
)

register(fssam.ENTRY)
register(naive_sam2.ENTRY)
register(reference.MEAN_COLOUR)
register(reference.ALL_FOREGROUND)

__all__ = [
    "BuildContext",
    "Features",
    "FewShotMethod",
    "FrozenEncoder",
    "MethodEntry",
    "WeightPool",
    "build_method",
    "fill_templates",
    "get_method",
    "method_names",
    "register",
]
