"""DINOv2 patch tokens before the final LayerNorm, as GF-SAM and Matcher use them.

Both releases compute ``forward_features(x)["x_prenorm"][:, 1:]`` of Meta's DINOv2 ViT-L/14 on a
518 x 518 input (37 x 37 patches): the last block's output BEFORE the final LayerNorm, class token
dropped, tokens in row-major cell order (token n is cell (n // 37, n % 37)). On timm's architecture
(the suite's :mod:`fssam.dinov2` loader, Meta's weights) that is ``patch_embed -> _pos_embed ->
patch_drop -> norm_pre -> blocks`` without ``norm``.

Preprocessing, in the releases' order: the image in [0, 1] (``ToTensor``), resized to the
backbone's input size (GF-SAM: torchvision 0.14.1's tensor ``Resize(518)``, bilinear without
antialias; Matcher: no resize, its images are 518 already), then ImageNet ``Normalize``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fssam.dinov2 import IMAGENET_MEAN, IMAGENET_STD, DINOv2Backbone, build_dinov2
from fssam.errors import FSSAMError
from fssam.sam2_adapter import module_sha256

RESIZES = ("bilinear", "bilinear-antialias", "none")
PREPROCESSING_VERSION = "dinov2-prenorm/1"  # bump when the preprocessing or the token read-out changes


def prenorm_tokens(backbone: DINOv2Backbone, x: Tensor) -> Tensor:
    """(B, 3, I, I) normalised input at the backbone's input size -> (B, G*G, C) patch tokens of
    the last block before the final LayerNorm (``x_prenorm[:, 1:]``)."""
    vit = backbone.vit
    with torch.no_grad():
        t = vit.patch_embed(x)
        t = vit._pos_embed(t)
        t = vit.patch_drop(t)
        t = vit.norm_pre(t)
        t = vit.blocks(t)
    return t[:, vit.num_prefix_tokens :]


def preprocess(images: Tensor, size: int, resize: str) -> Tensor:
    """(N, 3, S, S) float RGB 0..255 -> (N, 3, size, size): /255, resize (``resize``: "bilinear"
    align_corners False without antialias, "bilinear-antialias", or "none" when S == size), then
    ImageNet mean/std."""
    if resize not in RESIZES:
        raise FSSAMError(f"dinov2 resize: {resize!r} is not one of {list(RESIZES)}")
    x = images.float() / 255.0
    if resize == "none":
        if tuple(x.shape[-2:]) != (size, size):
            raise FSSAMError(f"dinov2 resize 'none' needs {size}x{size} images, got {tuple(x.shape[-2:])}")
    else:
        x = F.interpolate(
            x,
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=resize == "bilinear-antialias",
        )
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class DINOv2TokenEncoder:
    """The harness's cacheable ``FrozenEncoder`` for pre-norm DINOv2 patch tokens.

    ``encode``: (N, 3, S, S) float RGB 0..255 -> ``{"dinov2.prenorm": (N, G*G, C)}`` fp32, with
    G = backbone.input_size / 14 (37 at 518) and C the embedding width (1024 for ViT-L/14).
    """

    def __init__(self, backbone: DINOv2Backbone, resize: str = "bilinear") -> None:
        if resize not in RESIZES:
            raise FSSAMError(f"dinov2 resize: {resize!r} is not one of {list(RESIZES)}")
        self.backbone, self.resize = backbone, resize

    def identity(self) -> dict[str, Any]:
        dino = self.backbone
        if not hasattr(dino, "_fss_sha256"):
            dino._fss_sha256 = module_sha256(dino)
        return {
            "encoder": f"dinov2-{dino.arch}-prenorm",
            "weights": dino._fss_sha256,
            "input_size": dino.input_size,
            "resize": self.resize,
            "preprocessing": PREPROCESSING_VERSION,
            "precision": "fp32",
        }

    @torch.no_grad()
    def encode(self, images: Tensor) -> dict[str, Tensor]:
        x = preprocess(images.to(self.backbone.device), self.backbone.input_size, self.resize)
        return {"dinov2.prenorm": prenorm_tokens(self.backbone, x.to(self.backbone.dtype)).float()}


def dinov2_from_config(config: Any) -> DINOv2Backbone:
    """DINOv2 from a method's settings object (``dinov2``, ``dinov2_checkpoint``, ``random_init``,
    ``dinov2_input_size``, ``seed``): random weights are seeded with ``seed + 1``, as FSSAM's, so
    every method with the same settings shares one backbone in the weight pool."""
    return build_dinov2(
        config.dinov2,
        checkpoint=config.dinov2_checkpoint,
        random_init=config.random_init,
        input_size=config.dinov2_input_size,
        seed=config.seed + 1,
    )


def dinov2_weights_id(backbone: DINOv2Backbone, seed: int) -> str:
    """The checkpoint's SHA-256, or ``random-init:<arch>:seed<seed + 1>`` (:func:`dinov2_from_config`)."""
    return backbone.weights_sha256 or f"random-init:{backbone.arch}:seed{seed + 1}"
