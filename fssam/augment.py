"""FSSAM's training augmentations (spec section 8), as pure functions of a seeded generator.

Each image of a training episode goes through, independently (the authors' ``transform``):

1. ``RandScale``: scale by a factor drawn uniformly from ``scale`` (bilinear image, nearest label);
2. ``RandRotate``: with probability ``rotate_p``, rotate by an angle uniform in ``[-rotate, rotate]``
   degrees (counter-clockwise for positive angles, as OpenCV), padding the image with its mean colour and the label with 255 (ignore);
3. ``RandomGaussianBlur``: with probability ``blur_p``, a 5 x 5 Gaussian blur (sigma 1.1, OpenCV's
   default for that kernel size);
4. ``RandomHorizontalFlip``: with probability ``flip_p``;
5. a random ``crop x crop`` crop (padding image with the mean colour and label with 255 when the image
   is smaller), re-drawn up to ``crop_tries`` times until it keeps at least ``fg_keep`` of the
   foreground pixels (the episode class) of the uncropped label.

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


@dataclass(frozen=True)
class AugmentConfig:
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0
    rotate_p: float = 0.5
    blur_p: float = 0.5
    flip_p: float = 0.5
    crop: int = 512
    fg_keep: float = 0.85
    crop_tries: int = 30


def rescale(image: Tensor, label: Tensor, factor: float) -> tuple[Tensor, Tensor]:
    """Scale both by ``factor`` (output size rounded), image bilinear, label nearest."""
    h, w = label.shape
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    img = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    lab = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    return img, lab


def rotate(image: Tensor, label: Tensor, degrees: float) -> tuple[Tensor, Tensor]:
    """Rotate about the centre, same size; the image is padded with its mean colour, the label with 255."""
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    h, w = label.shape
    # the affine grid works in normalised coordinates: correct for a non-square aspect ratio
    mat = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=torch.float32)[None]
    grid = F.affine_grid(mat, [1, 1, h, w], align_corners=False)
    mean = image.mean(dim=(1, 2), keepdim=True)
    img = F.grid_sample(
        (image - mean)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    inside = F.grid_sample(
        torch.ones(1, 1, h, w), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[0, 0]
    lab = F.grid_sample(
        label[None, None].float() + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[0, 0]
    out_label = torch.where((inside > 0) & (lab > 0), lab - 1, torch.full_like(lab, IGNORE)).to(torch.uint8)
    return img[0] + mean, out_label


def gaussian_blur(image: Tensor, sigma: float = 1.1) -> Tensor:
    """5 x 5 Gaussian blur, reflected borders (OpenCV's BORDER_REFLECT_101)."""
    x = torch.arange(5, dtype=torch.float32) - 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 5, 5)
    padded = F.pad(image[None], (2, 2, 2, 2), mode="reflect")
    return F.conv2d(padded, kernel, groups=3)[0]


def pad_to(image: Tensor, label: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Pad bottom/right... symmetrically to at least ``size`` x ``size`` (mean colour, label 255)."""
    h, w = label.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if not ph and not pw:
        return image, label
    top, left = ph // 2, pw // 2
    mean = image.mean(dim=(1, 2), keepdim=True)
    img = F.pad(image - mean, (left, pw - left, top, ph - top)) + mean
    lab = F.pad(label, (left, pw - left, top, ph - top), value=IGNORE)
    return img, lab


def crop_keeping_foreground(
    image: Tensor, label: Tensor, size: int, fg_class: int, rng: np.random.Generator, keep: float, tries: int
) -> tuple[Tensor, Tensor]:
    """A random ``size`` crop that keeps at least ``keep`` of the ``fg_class`` pixels (up to ``tries``
    draws; the last draw is used if none does)."""
    image, label = pad_to(image, label, size)
    h, w = label.shape
    total = int((label == fg_class).sum())
    for _ in range(max(1, tries)):
        y = int(rng.integers(0, h - size + 1))
        x = int(rng.integers(0, w - size + 1))
        lab = label[y : y + size, x : x + size]
        if total == 0 or int((lab == fg_class).sum()) >= keep * total:
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
