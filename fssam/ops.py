"""The small tensor operations FSSAM's equations are written in (spec: fssam-method.md section 2).

Each is a pure function with the authors' epsilons, so that every module computes them one way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WGAP_EPS = 0.0005
COS_EPS = 1e-7
MINMAX_EPS = 1e-7


def weighted_gap(feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked average pooling: sum_p F[:,p] m[p] / (sum_p m[p] + 0.0005).

    Args:
        feat: (B, C, H, W) features.
        mask: (B, 1, H, W) soft weights in [0, 1].
    Returns:
        (B, C) prototypes. Sums are computed as ``avg_pool * H * W`` like the authors' ``Weighted_GAP``.
    """
    h, w = feat.shape[-2:]
    area = F.avg_pool2d(mask, (h, w)) * h * w + WGAP_EPS
    pooled = F.avg_pool2d(feat * mask, (h, w)) * h * w / area
    return pooled.flatten(1)


def cosine_map(feat: torch.Tensor, proto: torch.Tensor) -> torch.Tensor:
    """cos(F[:,p], proto) = F[:,p]·proto / (||F[:,p]|| ||proto|| + 1e-7).

    Args:
        feat: (B, C, H, W); proto: (B, C).
    Returns:
        (B, 1, H, W) similarities in [-1, 1].
    """
    dot = (feat * proto[:, :, None, None]).sum(1, keepdim=True)
    norm = feat.norm(dim=1, keepdim=True) * proto.norm(dim=1)[:, None, None, None]
    return dot / (norm + COS_EPS)


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max normalisation over all non-batch dims: (x - min) / (max - min + 1e-7).

    Args:
        x: (B, ...). Returns the same shape, values in [0, 1).
    """
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.view(-1, *([1] * (x.dim() - 1)))
    hi = flat.max(dim=1).values.view(-1, *([1] * (x.dim() - 1)))
    return (x - lo) / (hi - lo + MINMAX_EPS)


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with align_corners=True (every resize of masks and priors in FSSAM)."""
    if isinstance(size, int):
        size = (size, size)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
