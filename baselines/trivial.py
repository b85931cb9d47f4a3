"""Model-free reference predictors: sanity floors for the harness, not FSS methods.

Both take the same inputs as the real models (``query`` (B,3,S,S) and ``supports`` (B,K,3,S,S) float
RGB 0..255, ``support_masks`` (B,K,S,S) in {0,1,255}) and return foreground logits (B,S,S).
"""

from __future__ import annotations

import torch


def all_foreground(
    query: torch.Tensor | None, supports: torch.Tensor | None, support_masks: torch.Tensor
) -> torch.Tensor:
    """Predict every pixel as foreground (logit +1): FG IoU = the foreground's share of the image.

    Needs no pixels: the (B, S, S) shape and the device come from ``support_masks`` (B, K, S, S),
    so ``query`` and ``supports`` may be None. A broadcast view of one value: no (B, S, S) fill."""
    b, h, w = support_masks.shape[0], *support_masks.shape[-2:]
    return torch.ones(1, 1, 1, dtype=torch.float32, device=support_masks.device).expand(b, h, w)


def mean_colour(query: torch.Tensor, supports: torch.Tensor, support_masks: torch.Tensor) -> torch.Tensor:
    """Nearest colour prototype: logit = ||q - mu_bg||^2 - ||q - mu_fg||^2 (scaled to ~unit range).

    ``mu_fg`` / ``mu_bg`` are the mean support RGB over foreground (mask == 1) / background
    (mask == 0) pixels of all K shots; ignore pixels (255) are used for neither. A positive logit means
    the query pixel is closer to the support foreground colour.
    """
    fg = (support_masks == 1).unsqueeze(2).float()  # (B,K,1,S,S)
    bg = (support_masks == 0).unsqueeze(2).float()
    mu_fg = (supports * fg).sum(dim=(1, 3, 4)) / fg.sum(dim=(1, 3, 4)).clamp_min(1.0)  # (B,3)
    mu_bg = (supports * bg).sum(dim=(1, 3, 4)) / bg.sum(dim=(1, 3, 4)).clamp_min(1.0)
    d_fg = ((query - mu_fg[:, :, None, None]) ** 2).sum(dim=1)
    d_bg = ((query - mu_bg[:, :, None, None]) ** 2).sum(dim=1)
    return (d_bg - d_fg) / (255.0**2)
