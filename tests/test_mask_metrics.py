"""Mask metrics (boundary IoU, object-size bins): hand-worked cases and a second implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from benchmark.evaluation.mask_metrics import (
    boundary_counts,
    boundary_region,
    boundary_width,
    size_bin,
    size_bin_of_area,
)


def _square(shape, rows, cols) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return m


def test_boundary_width_is_two_percent_of_the_diagonal_rounded_at_least_one():
    assert boundary_width((20, 20)) == 1  # 0.566 -> 1
    assert boundary_width((1, 1)) == 1  # 0.028 -> 0, then the minimum
    assert boundary_width((100, 100)) == 3  # 2.83
    assert boundary_width((375, 500)) == 12  # diagonal 625: 12.5, rounded half to even as Python does
    assert boundary_width((400, 400)) == 11  # 11.31


def test_a_square_and_the_square_shifted_by_one_pixel():
    # 20 x 20 image: d = 1, a 5 x 5 square's boundary is its 16-pixel ring
    gt = _square((20, 20), (5, 9), (5, 9))
    pred = _square((20, 20), (5, 9), (6, 10))
    assert boundary_region(gt, 1).sum() == 16
    target = gt.astype(np.uint8)
    # rings: the top and bottom rows share columns 6..9 (4 + 4); the side columns (5, 9 against
    # 6, 10) share nothing: intersection 8, union 16 + 16 - 8
    assert boundary_counts(pred, target) == (8, 24)
    assert boundary_counts(gt, target) == (16, 16)
    # ignore pixels count for neither: three of the prediction's right side
    target[6:9, 10] = 255
    assert boundary_counts(pred, target) == (8, 21)


def test_empty_masks_and_the_image_border():
    empty = np.zeros((20, 20), bool)
    gt = _square((20, 20), (5, 9), (5, 9))
    assert boundary_counts(empty, np.zeros((20, 20), np.uint8)) == (0, 0)
    assert boundary_counts(empty, gt.astype(np.uint8)) == (0, 16)
    assert boundary_counts(gt, np.zeros((20, 20), np.uint8)) == (0, 16)
    # the image's edge is contour: a full 4 x 4 mask's boundary is its outer ring of 12
    full = np.ones((4, 4), bool)
    assert boundary_region(full, 1).sum() == 12
    assert boundary_counts(full, full.astype(np.uint8)) == (12, 12)


def test_a_boundary_band_three_pixels_wide_is_counted_by_hand():
    # 100 x 100: d = 3; a 10 x 10 square's band is 100 - 4 x 4 = 84 pixels
    assert boundary_region(_square((100, 100), (20, 29), (20, 29)), 3).sum() == 84
    # a 6 x 6 square holds no pixel 4 away from its contour: all of it is boundary
    assert boundary_region(_square((100, 100), (20, 25), (20, 25)), 3).sum() == 36


def _reference_counts(pred: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """Boundary counts from scipy: a pixel of a mask is boundary when its chessboard distance to the
    nearest pixel outside the mask (outside the image included) is at most d."""
    d = max(1, int(round(0.02 * np.sqrt(pred.shape[0] ** 2 + pred.shape[1] ** 2))))

    def band(m):
        dist = ndimage.distance_transform_cdt(np.pad(m, 1), metric="chessboard")[1:-1, 1:-1]
        return m & (dist <= d)

    def band_by_erosion(m):  # the authors' way: a 3 x 3 erosion d times, zero outside
        return m & ~ndimage.binary_erosion(m, np.ones((3, 3), bool), iterations=d, border_value=0)

    valid = target != 255
    pb, gb = band(pred), band(target == 1)
    assert np.array_equal(pb, band_by_erosion(pred)) and np.array_equal(gb, band_by_erosion(target == 1))
    pb, gb = pb & valid, gb & valid
    return int((pb & gb).sum()), int((pb | gb).sum())


def _blob(rng, shape) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=rng.uniform(2, 8))
    return noise > np.quantile(noise, rng.uniform(0.3, 0.95))


@pytest.mark.parametrize("seed", range(6))
def test_boundary_counts_equal_a_distance_transform_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(30, 160)), int(rng.integers(30, 160)))
    pred, gt = _blob(rng, shape), _blob(rng, shape)
    target = gt.astype(np.uint8)
    target[rng.random(shape) < 0.05] = 255  # ignore pixels, some inside the object
    assert boundary_counts(pred, target) == _reference_counts(pred, target)
    d = boundary_width(shape)
    for m in (pred, gt, ~pred):
        ref = m & (ndimage.distance_transform_cdt(np.pad(m, 1), metric="chessboard")[1:-1, 1:-1] <= d)
        assert np.array_equal(boundary_region(m, d), ref)


def test_size_bins_use_cocos_thresholds():
    assert [size_bin_of_area(a) for a in (0, 1023, 1024, 9215, 9216, 10**6)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
    ]
    target = np.zeros((200, 200), np.uint8)
    target[:32, :32] = 1  # 1024 pixels: medium
    target[100:, :] = 255  # ignore is not foreground
    assert size_bin(target) == "medium"
    target[0, 0] = 0
    assert size_bin(target) == "small"
    target[:96, :96] = 1
    assert size_bin(target) == "large"


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        boundary_counts(np.zeros((3, 4), bool), np.zeros((4, 3), np.uint8))
    with pytest.raises(ValueError, match="d must be"):
        boundary_region(np.zeros((3, 4), bool), 0)
