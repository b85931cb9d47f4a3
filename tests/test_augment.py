"""FSSAM's training augmentations, against hand-computed cases and geometric identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fssam.augment import (
    AugmentConfig,
    augment,
    crop_keeping_foreground,
    gaussian_blur,
    pad_to,
    rescale,
    rotate,
)


def test_rotation_by_zero_is_the_identity_and_by_90_degrees_is_rot90():
    img = torch.rand(3, 6, 6) * 255
    lab = torch.randint(0, 4, (6, 6), dtype=torch.uint8)
    i0, l0 = rotate(img, lab, 0.0)
    assert torch.allclose(i0, img, atol=1e-4) and torch.equal(l0, lab)
    i90, l90 = rotate(img, lab, 90.0)
    # positive angles turn the content counter-clockwise, as OpenCV's getRotationMatrix2D does
    assert torch.equal(l90, torch.rot90(lab, k=1, dims=(0, 1)))
    assert torch.allclose(i90, torch.rot90(img, k=1, dims=(1, 2)), atol=1e-3)


def test_rotation_pads_the_label_with_ignore_and_the_image_with_its_mean():
    img = torch.full((3, 8, 8), 10.0)
    img[0] = 50.0
    lab = torch.ones(8, 8, dtype=torch.uint8)
    i45, l45 = rotate(img, lab, 45.0)
    assert l45[0, 0] == 255 and l45[4, 4] == 1  # corners come from outside the image
    assert torch.allclose(i45[:, 0, 0], img.mean(dim=(1, 2)), atol=1e-4)
    assert set(l45.unique().tolist()) <= {1, 255}


def test_blur_keeps_a_constant_image_and_its_kernel_sums_to_one():
    flat = torch.full((3, 9, 9), 77.0)
    assert torch.allclose(gaussian_blur(flat), flat, atol=1e-4)
    impulse = torch.zeros(3, 9, 9)
    impulse[:, 4, 4] = 1.0
    out = gaussian_blur(impulse)
    assert torch.allclose(out.sum(dim=(1, 2)), torch.ones(3), atol=1e-6)
    x = torch.arange(5.0) - 2  # the separable kernel, sigma 1.1, by hand
    k = torch.exp(-(x**2) / (2 * 1.1**2))
    k = k / k.sum()
    assert torch.allclose(out[0, 2:7, 2:7], k[:, None] * k[None, :], atol=1e-6)


def test_rescale_and_pad():
    img, lab = torch.rand(3, 10, 20), torch.randint(0, 3, (10, 20), dtype=torch.uint8)
    i2, l2 = rescale(img, lab, 1.5)
    assert i2.shape == (3, 15, 30) and l2.shape == (15, 30)
    assert set(l2.unique().tolist()) <= set(lab.unique().tolist())  # nearest: no new label values
    ip, lp = pad_to(img, lab, 16)
    assert ip.shape == (3, 16, 20) and lp.shape == (16, 20)
    assert (lp[:3] == 255).all() and (lp[13:] == 255).all() and torch.equal(lp[3:13], lab)
    assert torch.allclose(ip[:, 0, 0], img.mean(dim=(1, 2)), atol=1e-5)


def test_the_crop_is_the_first_draw_that_keeps_the_foreground():
    lab = torch.zeros(40, 40, dtype=torch.uint8)
    lab[30:36, 30:36] = 7  # a small object in a corner
    img = torch.rand(3, 40, 40)
    for seed in range(10):
        _, out = crop_keeping_foreground(img, lab, 16, 7, np.random.default_rng(seed), keep=0.85, tries=30)
        replay = np.random.default_rng(seed)  # the same draws, by hand: (y, x) until >= 85% of 36 pixels
        for _ in range(30):
            y, x = int(replay.integers(0, 25)), int(replay.integers(0, 25))
            if int((lab[y : y + 16, x : x + 16] == 7).sum()) >= 0.85 * 36:
                break
        assert torch.equal(out, lab[y : y + 16, x : x + 16])


def test_augment_is_a_pure_function_of_the_generator():
    img = torch.rand(3, 50, 60) * 255
    lab = torch.zeros(50, 60, dtype=torch.uint8)
    lab[10:30, 20:40] = 3
    cfg = AugmentConfig(crop=32)
    a = augment(img, lab, 3, cfg, np.random.default_rng(5))
    b = augment(img, lab, 3, cfg, np.random.default_rng(5))
    c = augment(img, lab, 3, cfg, np.random.default_rng(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 32, 32) and a[1].shape == (32, 32)
    assert not torch.equal(a[0], c[0])
    assert set(a[1].unique().tolist()) <= {0, 3, 255}


@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_flip_probability_extremes(flip_p):
    img = torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(3, 8, 8)
    lab = torch.zeros(8, 8, dtype=torch.uint8)
    lab[:, :2] = 1
    cfg = AugmentConfig(scale=(1.0, 1.0), rotate_p=0.0, blur_p=0.0, flip_p=flip_p, crop=8)
    out_img, out_lab = augment(img, lab, 1, cfg, np.random.default_rng(0))
    expected = lab.flip(-1) if flip_p else lab
    assert torch.equal(out_lab, expected) and torch.equal(out_img, img.flip(-1) if flip_p else img)
