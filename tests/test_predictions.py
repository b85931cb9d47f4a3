"""Stored predictions as COCO RLE: the numpy run finder gives pycocotools' own encoding, and a
mask comes back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from benchmark.evaluation.predictions import mask_to_rle, rle_to_mask


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:37, :50]
    blob = ((yy - 18) ** 2 / 12**2 + (xx - 25) ** 2 / 16**2) < 1
    return [
        blob,
        ~blob,  # starts with foreground: a leading zero-length background run
        np.zeros((37, 50), bool),
        np.ones((37, 50), bool),
        rng.random((37, 50)) < 0.5,  # many short runs
        rng.random((1, 1)) < 2,  # one pixel, foreground
        np.zeros((1, 7), bool),
        rng.random((375, 500)) < 0.01,
    ]


@pytest.mark.parametrize("index", range(8))
def test_rle_is_pycocotools_encoding_and_round_trips(index):
    mask = _masks()[index]
    rle = mask_to_rle(mask)
    reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["size"] == list(mask.shape) and rle["counts"] == reference["counts"].decode("ascii")
    back = rle_to_mask(rle)
    assert back.dtype == bool and np.array_equal(back, mask)
    assert int(mask_utils.area(reference)) == int(mask.sum())


def test_a_typical_object_is_a_few_hundred_bytes():
    yy, xx = np.mgrid[:375, :500]
    blob = ((yy - 180) ** 2 / 120**2 + (xx - 250) ** 2 / 160**2) < 1
    assert len(mask_to_rle(blob)["counts"]) < 1000 < blob.size // 8  # against 23 KB of bits


def test_a_mask_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        mask_to_rle(np.zeros((2, 3, 4), bool))
