"""Reading and writing images and label masks, with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from benchmark.errors import FssBenchError


def read_image(path: Path) -> np.ndarray:
    """Decode an image file completely. Returns (H, W, 3) uint8 RGB.

    A missing, unreadable or truncated file raises FssBenchError naming it (PIL would otherwise
    decode a truncated JPEG lazily, or not notice it until the pixels are used).
    """
    path = Path(path)
    if not path.is_file():
        raise FssBenchError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise FssBenchError(
            f"{path}: unreadable or truncated image ({e}); re-download or remove it"
        ) from None


def read_label(path: Path) -> np.ndarray:
    """Read a semantic label PNG holding class indices. Returns (H, W) uint8.

    Palette ("P", e.g. VOC SegmentationClass) and grayscale ("L", e.g. SegmentationClassAug)
    images are read as their raw indices. Colour (RGB) masks are rejected: their pixel values are
    colours, not class ids.
    """
    path = Path(path)
    if not path.is_file():
        raise FssBenchError(f"{path}: label file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise FssBenchError(
                    f"{path}: label image has mode {im.mode}; expected a palette (P) or grayscale (L) "
                    "PNG of class indices"
                )
            return np.asarray(im).astype(np.uint8, copy=False)
    except FssBenchError:
        raise
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise FssBenchError(f"{path}: unreadable or truncated label PNG ({e})") from None


def write_label(path: Path, label: np.ndarray) -> None:
    """Write an (H, W) uint8 class-index mask as a single-channel (L) PNG."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"label must be a 2-D uint8 array, got {label.dtype} {label.shape}")
    Image.fromarray(label, mode="L").save(path, optimize=False)


def check_label_values(label: np.ndarray, num_classes: int, path: Path) -> None:
    """Raise FssBenchError if ``label`` holds values other than 0..num_classes and 255."""
    values = np.unique(label)
    bad = [int(v) for v in values if not (v <= num_classes or v == 255)]
    if bad:
        raise FssBenchError(
            f"{path}: unknown class id(s) {bad}; labels must be 0 (background), 1..{num_classes} or 255 (ignore)"
        )


def class_pixel_counts(label: np.ndarray) -> dict[int, int]:
    """Pixels per class id present in ``label``, background (0) and ignore (255) excluded."""
    counts = np.bincount(label.ravel(), minlength=256)
    return {int(c): int(counts[c]) for c in np.flatnonzero(counts) if c not in (0, 255)}
