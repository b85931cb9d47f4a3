"""FSSAM ("Unlocking the Power of SAM 2 for Few-Shot Segmentation", ICML 2025) on the official sam2.

``FSSAM``, ``EncodedImages`` and ``FSSAMConfig`` are imported on first use, so that importing a
light module of the package (``fssam.errors``, ``fssam.config``) does not import torch and sam2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fssam.config import FSSAMConfig
    from fssam.model import FSSAM, EncodedImages

__all__ = ["FSSAM", "EncodedImages", "FSSAMConfig"]


def __getattr__(name: str) -> Any:
    if name == "FSSAMConfig":
        from fssam.config import FSSAMConfig

        return FSSAMConfig
    if name in ("FSSAM", "EncodedImages"):
        from fssam import model

        return getattr(model, name)
    raise AttributeError(f"module 'fssam' has no attribute {name!r}")
