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

# the release's train.py: mean = [0.485, 0.456, 0.406] * 255 pads the image; SAM 2 and DINOv2 then
# normalise with these ImageNet statistics
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RELEASE_PAD = torch.tensor([123.675, 116.28, 103.53])  # 255 x IMAGENET_MEAN, written out


def normalised_both_ways(pixel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (3,) pixel in 0..255 through SAM 2's ``x / 255`` then mean/std, and DINOv2's
    ``(x - 255 mean) / (255 std)``, in float32 as the models run."""
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (pixel / 255 - mean) / std, (pixel - 255 * mean) / (255 * std)


class ScriptedDraws:
    """Stands in for ``numpy.random.Generator``: ``integers(low, high)`` returns the scripted values
    in order (repeating the last one when the script runs out) and records every call."""

    def __init__(self, values: list[int]):
        self.values, self.calls = values, []

    def integers(self, low: int, high: int) -> int:
        value = self.values[min(len(self.calls), len(self.values) - 1)]
        self.calls.append((low, high))
        assert low <= value < high
        return value


def test_rotation_by_zero_is_the_identity_and_by_90_degrees_is_rot90():
    img = torch.rand(3, 6, 6) * 255
    lab = torch.randint(0, 4, (6, 6), dtype=torch.uint8)
    i0, l0 = rotate(img, lab, 0.0)
    assert torch.allclose(i0, img, atol=1e-4) and torch.equal(l0, lab)
    i90, l90 = rotate(img, lab, 90.0)
    # positive angles turn the content counter-clockwise, as OpenCV's getRotationMatrix2D does
    assert torch.equal(l90, torch.rot90(lab, k=1, dims=(0, 1)))
    assert torch.allclose(i90, torch.rot90(img, k=1, dims=(1, 2)), atol=1e-3)


def test_rotation_pads_the_label_with_ignore_and_the_image_with_the_release_constant():
    img = torch.full((3, 8, 8), 10.0)
    img[0] = 50.0
    lab = torch.ones(8, 8, dtype=torch.uint8)
    i45, l45 = rotate(img, lab, 45.0)
    assert l45[0, 0] == 255 and l45[4, 4] == 1  # corners come from outside the image
    assert set(l45.unique().tolist()) <= {1, 255}
    assert torch.equal(i45[:, 0, 0], RELEASE_PAD)  # not this image's mean (23.3, 10, 10)
    assert torch.allclose(i45[:, 4, 4], img[:, 4, 4], atol=1e-4)  # the centre is the image
    for normalised in normalised_both_ways(i45[:, 0, 0]):
        assert torch.equal(normalised, torch.zeros(3))  # exactly 0 after normalisation


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
    img, lab = torch.rand(3, 10, 20) * 255, torch.randint(0, 3, (10, 20), dtype=torch.uint8)
    i2, l2 = rescale(img, lab, 1.5)
    assert i2.shape == (3, 15, 30) and l2.shape == (15, 30)
    assert set(l2.unique().tolist()) <= set(lab.unique().tolist())  # nearest: no new label values
    ip, lp = pad_to(img, lab, 16)  # 6 rows to add: int(6 / 2) = 3 on top, 3 at the bottom
    assert ip.shape == (3, 16, 20) and lp.shape == (16, 20)
    assert (lp[:3] == 255).all() and (lp[13:] == 255).all() and torch.equal(lp[3:13], lab)
    assert torch.equal(ip[:, 3:13], img)  # the image itself is untouched
    pad = torch.cat([ip[:, :3], ip[:, 13:]], dim=1)
    assert torch.equal(pad, RELEASE_PAD.view(3, 1, 1).expand(3, 6, 20))
    for normalised in normalised_both_ways(pad[:, 0, 0]):
        assert torch.equal(normalised, torch.zeros(3))
    # an odd amount: 5 columns to add to 11, int(5 / 2) = 2 on the left, 3 on the right
    _, lp = pad_to(torch.rand(3, 16, 11), torch.zeros(16, 11, dtype=torch.uint8), 16)
    assert (lp[:, :2] == 255).all() and (lp[:, 13:] == 255).all() and (lp[:, 2:13] == 0).all()


def test_the_crop_is_the_first_draw_that_keeps_85_percent_of_the_foreground():
    """Draws scripted by hand: each draw is a row offset then a column offset, in 0..40-16."""
    lab = torch.zeros(40, 40, dtype=torch.uint8)
    lab[30, 10:20] = 7  # 20 foreground pixels: a crop must keep >= 0.85 * 20 = 17 (17.0 in floats)
    lab[31, 11:21] = 7
    img = torch.arange(3 * 40 * 40, dtype=torch.float32).reshape(3, 40, 40)  # every crop differs
    # (0, 0): rows 0..15, nothing; (24, 24): columns 24..39, nothing;
    # (16, 2): columns 2..17 keep 8 + 7 = 15 < 17; (20, 3): columns 3..18 keep 9 + 8 = 17, kept
    draws = ScriptedDraws([0, 0, 24, 24, 16, 2, 20, 3, 16, 4])
    out_img, out_lab = crop_keeping_foreground(img, lab, 16, 7, draws, keep=0.85, tries=32)
    assert len(draws.calls) == 8 and set(draws.calls) == {(0, 25)}  # 4 draws, offsets 0..24
    assert torch.equal(out_img, img[:, 20:36, 3:19]) and torch.equal(out_lab, lab[20:36, 3:19])
    assert int((out_lab == 7).sum()) == 17


def test_the_crop_draws_32_times_as_the_release_then_keeps_the_last():
    """The release: a first draw, then ``while kept < 0.85 * total and crop_cnt <= 30`` re-draws with
    ``crop_cnt`` = 0, 1, ..., 30: 1 + 31 = 32 draws."""
    assert AugmentConfig().crop_tries == 32
    lab = torch.zeros(40, 40, dtype=torch.uint8)
    lab[30:36, 30:36] = 7
    img = torch.arange(3 * 40 * 40, dtype=torch.float32).reshape(3, 40, 40)
    # 31 draws at offset (0, k) for k = 0..24, then (1, k): none reaches the object; the 32nd is (1, 6)
    script = [v for k in range(31) for v in (k // 25, k % 25)] + [1, 6] + [24, 24]
    draws = ScriptedDraws(script)
    out_img, out_lab = crop_keeping_foreground(img, lab, 16, 7, draws, keep=0.85, tries=32)
    assert len(draws.calls) == 64  # the (24, 24) crop that would keep it is never drawn
    assert torch.equal(out_img, img[:, 1:17, 6:22]) and (out_lab == 0).all()
    # with the object found on the 32nd draw, that draw is kept
    draws = ScriptedDraws(script[:62] + [24, 24])
    _, out_lab = crop_keeping_foreground(img, lab, 16, 7, draws, keep=0.85, tries=32)
    assert len(draws.calls) == 64 and torch.equal(out_lab, lab[24:40, 24:40])
    # no foreground at all: the first draw is kept (the release's 0 < 0.85 * 0 is false)
    draws = ScriptedDraws([3, 5, 24, 24])
    out_img, _ = crop_keeping_foreground(img, torch.zeros(40, 40, dtype=torch.uint8), 16, 7, draws, 0.85, 32)
    assert len(draws.calls) == 2 and torch.equal(out_img, img[:, 3:19, 5:21])


def test_a_small_image_is_padded_with_the_release_constant_before_cropping():
    img = torch.full((3, 10, 12), 200.0)
    lab = torch.ones(10, 12, dtype=torch.uint8)
    draws = ScriptedDraws([0, 0])  # a 16 x 16 image after padding: the only offset is (0, 0)
    out_img, out_lab = crop_keeping_foreground(img, lab, 16, 1, draws, keep=0.85, tries=32)
    assert draws.calls == [(0, 1), (0, 1)]
    assert torch.equal(out_lab[3:13, 2:14], lab) and int((out_lab == 255).sum()) == 16 * 16 - 120
    assert torch.equal(out_img[:, 3:13, 2:14], img)
    assert torch.equal(out_img[:, 0, 0], RELEASE_PAD) and torch.equal(out_img[:, 15, 15], RELEASE_PAD)


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
