"""FSSAM ("Unlocking the Power of SAM 2 for Few-Shot Segmentation", ICML 2025) on the official sam2."""

from fssam.config import FSSAMConfig
from fssam.model import FSSAM, EncodedImages

__all__ = ["FSSAM", "EncodedImages", "FSSAMConfig"]
