"""Metrics of one episode that need the masks themselves, not only its I/U counts.

Pure numpy: an ``(H, W)`` bool prediction and the ``(H, W)`` uint8 scored target (1 foreground,
0 background, 255 ignore; :func:`benchmark.evaluation.loader.scored_target`) in, numbers out. They
are computed from a cell's stored predictions (``predictions.parquet``) by ``reports.rescore``.
FB-IoU and foreground IoU come from the I/U counts (:mod:`benchmark.evaluation.metrics`).

- **Boundary IoU** (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
  Evaluation", CVPR 2021): the boundary region of a mask is its pixels within distance ``d`` of its
  contour, ``d = round(0.02 * sqrt(H^2 + W^2))`` pixels, at least 1 (Python's ``round``, as the
  authors' ``int(round(...))``). As in their code (a 3x3 erosion repeated ``d`` times on the mask
  padded with zeros; here one ``(2d+1) x (2d+1)`` minimum filter, the same set), the distance is the
  chessboard one and the image border counts as contour:
  the region is ``mask AND NOT erode(mask, (2d+1) x (2d+1) square)``. Boundary IoU is
  ``|P_d & G_d| / |P_d | G_d|`` over the pixels whose target is not ignore (255), with ``G`` the
  target's foreground. :func:`boundary_counts` gives the (intersection, union) counts, which are
  pooled over episodes like the I/U counts (0/0 is 0.0, the suite's zero-union convention).
- **Object size bins** (COCO's thresholds): the target's foreground area ``a`` in pixels at label
  size is ``small`` when ``a < 32^2 = 1024``, ``medium`` when ``1024 <= a < 96^2 = 9216`` and
  ``large`` when ``a >= 9216`` (:func:`size_bin`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from benchmark.data.classes import IGNORE_LABEL

__all__ = [
    "BOUNDARY_DILATION_RATIO",
    "SIZE_BINS",
    "SMALL_AREA",
    "LARGE_AREA",
    "boundary_counts",
    "boundary_region",
    "boundary_width",
    "size_bin",
]

BOUNDARY_DILATION_RATIO = 0.02
"""``d`` as a fraction of the image diagonal (Boundary IoU's default)."""
SMALL_AREA = 32**2
"""Foreground area (px) below which an object is ``small`` (COCO)."""
LARGE_AREA = 96**2
"""Foreground area (px) from which an object is ``large`` (COCO)."""
SIZE_BINS: tuple[str, ...] = ("small", "medium", "large")


def boundary_width(shape: tuple[int, int], ratio: float = BOUNDARY_DILATION_RATIO) -> int:
    """``d`` in pixels for an ``(H, W)`` image: ``round(ratio * sqrt(H^2 + W^2))``, at least 1."""
    h, w = shape
    return max(1, int(round(ratio * float(np.hypot(h, w)))))


def _eroded(mask: np.ndarray, d: int) -> np.ndarray:
    """(H, W) bool -> (H, W) bool: pixels whose whole ``(2d+1) x (2d+1)`` window (outside the image
    counts as background) is foreground: scipy's separable minimum filter on the mask's bounding box
    (outside it the mask is background, so the crop changes nothing)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    out = np.zeros(mask.shape, dtype=bool)
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    crop = np.ascontiguousarray(mask[box]).view(np.uint8)
    out[box] = ndimage.minimum_filter(crop, size=2 * d + 1, mode="constant", cval=0).view(bool)
    return out


def boundary_region(mask: np.ndarray, d: int) -> np.ndarray:
    """(H, W) bool mask -> (H, W) bool: its pixels within chessboard distance ``d`` of its contour
    (the image border included), ``mask & ~erode(mask, d)``."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"boundary_region: expected an (H, W) mask, got shape {m.shape}")
    if d < 1:
        raise ValueError(f"boundary_region: d must be >= 1, got {d}")
    if not m.any():
        return m.copy()
    return m & ~_eroded(m, d)


def boundary_counts(
    pred: np.ndarray, target: np.ndarray, ratio: float = BOUNDARY_DILATION_RATIO
) -> tuple[int, int]:
    """Boundary IoU's ``(intersection, union)`` pixel counts of one episode.

    Args:
        pred: ``(H, W)`` bool (or 0/1) prediction at the scored size.
        target: ``(H, W)`` uint8 scored target: 1 foreground, 0 background, 255 ignore.
        ratio: ``d`` as a fraction of the diagonal (module docstring).

    Returns:
        ``(|P_d & G_d|, |P_d | G_d|)`` counted over the pixels whose target is not 255, where
        ``P_d``, ``G_d`` are the boundary regions (:func:`boundary_region`) of the prediction and of
        the target's foreground, ``d = boundary_width((H, W), ratio)``.
    """
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(target)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"boundary_counts: prediction {p.shape} and target {t.shape} must be one (H, W)")
    d = boundary_width(p.shape, ratio)
    valid = t != IGNORE_LABEL
    pb = boundary_region(p, d) & valid
    gb = boundary_region(t == 1, d) & valid
    return int(np.count_nonzero(pb & gb)), int(np.count_nonzero(pb | gb))


def size_bin(target: np.ndarray) -> str:
    """The object-size bin of an ``(H, W)`` target at label size (1 = foreground): ``small``
    (area < 32^2), ``medium`` (32^2 <= area < 96^2) or ``large`` (area >= 96^2), area = the number
    of foreground pixels (an empty target is ``small``)."""
    return size_bin_of_area(int(np.count_nonzero(np.asarray(target) == 1)))


def size_bin_of_area(area: int) -> str:
    """:func:`size_bin` from the foreground area in pixels."""
    if area < SMALL_AREA:
        return "small"
    return "medium" if area < LARGE_AREA else "large"
