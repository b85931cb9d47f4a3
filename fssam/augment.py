"""FSSAM's training augmentations (spec section 8), as pure functions of a seeded generator.

Each image of a training episode goes through, independently (the authors' ``transform``):

1. ``RandScale``: scale by a factor drawn uniformly from ``scale`` (bilinear image, nearest label);
2. ``RandRotate``: with probability ``rotate_p``, rotate by an angle uniform in ``[-rotate, rotate]``
   degrees (counter-clockwise for positive angles, as OpenCV), padding the image with
   :data:`PAD_RGB` and the label with 255 (ignore);
3. ``RandomGaussianBlur``: with probability ``blur_p``, a 5 x 5 Gaussian blur (sigma 1.1, OpenCV's
   default for that kernel size);
4. ``RandomHorizontalFlip``: with probability ``flip_p``;
5. ``Crop``: a random ``crop x crop`` crop (padding the image with :data:`PAD_RGB` and the label with
   255 when the image is smaller), drawn at most ``crop_tries`` times (32, as the release) until it
   keeps at least ``fg_keep`` of the foreground pixels (the episode class) of the uncropped label.

The padding colour is the release's constant: its ``train.py`` passes ``mean = [0.485, 0.456,
0.406]`` times 255 as ``padding`` to ``RandRotate`` and ``Crop`` (``util/transform_new.py``, imported
as ``transform``), so a padded pixel is exactly 0 after the ImageNet normalisation that SAM 2 and
DINOv2 apply (the release has no per-image mean).

Every random number comes from the ``numpy.random.Generator`` passed in, so a sample is a pure
function of its seed (resume is exact). Images are (3, H, W) float32 RGB in 0..255, labels (H, W)
uint8 class ids with 255 = ignore.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = 255
PAD_RGB = (123.675, 116.28, 103.53)  # ImageNet mean x 255, RGB: the release's image padding


@dataclass(frozen=True)
class AugmentConfig:
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0
    rotate_p: float = 0.5
    blur_p: float = 0.5
    flip_p: float = 0.5
    crop: int = 512
    fg_keep: float = 0.85
    crop_tries: int = 32  # at most this many crop draws: the release's first draw + 31 re-draws


def rescale(image: Tensor, label: Tensor, factor: float) -> tuple[Tensor, Tensor]:
    """Scale both by ``factor`` (output size rounded), image bilinear, label nearest."""
    h, w = label.shape
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    img = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    lab = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    return img, lab


def rotate(
    image: Tensor, label: Tensor, degrees: float, fill: tuple[float, float, float] = PAD_RGB
) -> tuple[Tensor, Tensor]:
    """Rotate about the centre, same size: (3, H, W), (H, W) -> the same shapes.

    Pixels coming from outside the image are ``fill`` (the image, bilinear blending at the border
    as OpenCV's ``BORDER_CONSTANT``) and 255 (the label).
    """
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    h, w = label.shape
    # the affine grid works in normalised coordinates: correct for a non-square aspect ratio
    mat = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=torch.float32)[None]
    grid = F.affine_grid(mat, [1, 1, h, w], align_corners=False)
    pad = torch.tensor(fill, dtype=image.dtype).view(3, 1, 1)
    img = F.grid_sample((image - pad)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(
        torch.ones(1, 1, h, w), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[0, 0]
    lab = F.grid_sample(
        label[None, None].float() + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[0, 0]
    out_label = torch.where((inside > 0) & (lab > 0), lab - 1, torch.full_like(lab, IGNORE)).to(torch.uint8)
    return img[0] + pad, out_label


def gaussian_blur(image: Tensor, sigma: float = 1.1) -> Tensor:
    """5 x 5 Gaussian blur, reflected borders (OpenCV's BORDER_REFLECT_101)."""
    x = torch.arange(5, dtype=torch.float32) - 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 5, 5)
    padded = F.pad(image[None], (2, 2, 2, 2), mode="reflect")
    return F.conv2d(padded, kernel, groups=3)[0]


def pad_to(
    image: Tensor, label: Tensor, size: int, fill: tuple[float, float, float] = PAD_RGB
) -> tuple[Tensor, Tensor]:
    """Pad to at least ``size`` x ``size``, as the release's ``Crop``: ``pad // 2`` rows (columns) on
    top (left) and the rest at the bottom (right); the image with ``fill``, the label with 255.

    (3, H, W), (H, W) -> (3, max(H, size), max(W, size)), (max(H, size), max(W, size)).
    """
    h, w = label.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if not ph and not pw:
        return image, label
    top, left = ph // 2, pw // 2
    img = torch.tensor(fill, dtype=image.dtype).view(3, 1, 1).repeat(1, h + ph, w + pw)
    img[:, top : top + h, left : left + w] = image
    lab = F.pad(label, (left, pw - left, top, ph - top), value=IGNORE)
    return img, lab


def crop_keeping_foreground(
    image: Tensor, label: Tensor, size: int, fg_class: int, rng: np.random.Generator, keep: float, tries: int
) -> tuple[Tensor, Tensor]:
    """A random ``size`` x ``size`` crop that keeps at least ``keep`` of the ``fg_class`` pixels.

    (3, H, W), (H, W) -> (3, size, size), (size, size), after :func:`pad_to`. At most ``tries``
    draws; the last draw is kept if none keeps enough. The release's ``Crop`` (``crop_type='rand'``)
    draws once, then ``crop_cnt = 0`` and ``while pos_num < 0.85 * raw_pos_num and crop_cnt <= 30:``
    re-draws and does ``crop_cnt += 1``: re-draws happen at ``crop_cnt`` = 0..30, i.e. at most 31,
    so 32 draws in all (``tries=32``); its ``crop_cnt >= 50`` branch can never run. Each draw takes
    the row offset, then the column offset, uniform over every valid offset (``random.randint(0,
    h - size)``). With no foreground pixel the first draw is kept (``0 < 0`` is false).
    """
    image, label = pad_to(image, label, size)
    h, w = label.shape
    total = int((label == fg_class).sum())
    for _ in range(max(1, tries)):
        y = int(rng.integers(0, h - size + 1))
        x = int(rng.integers(0, w - size + 1))
        lab = label[y : y + size, x : x + size]
        if int((lab == fg_class).sum()) >= keep * total:
            break
    return image[:, y : y + size, x : x + size], lab


def augment(
    image: Tensor, label: Tensor, fg_class: int, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """The whole training pipeline for one image: (3, H, W), (H, W) -> (3, crop, crop), (crop, crop)."""
    image, label = rescale(image, label, float(rng.uniform(*cfg.scale)))
    if rng.random() < cfg.rotate_p:
        image, label = rotate(image, label, float(rng.uniform(-cfg.rotate, cfg.rotate)))
    if rng.random() < cfg.blur_p:
        image = gaussian_blur(image)
    if rng.random() < cfg.flip_p:
        image, label = image.flip(-1), label.flip(-1)
    return crop_keeping_foreground(image, label, cfg.crop, fg_class, rng, cfg.fg_keep, cfg.crop_tries)
