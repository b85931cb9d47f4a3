"""Qualitative overlays of one episode: image, ground truth and prediction (PNG), IoU in the title.

Pure drawing (arrays in, a PNG out): the cell function writes these as artifacts and the reports
reuse `overlay` and `outline` for their figures. The figure is a standalone
:class:`matplotlib.figure.Figure` (no pyplot, no backend to select, nothing to close): ``savefig``
renders the PNG with Agg.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def overlay(
    image: np.ndarray, mask: np.ndarray, color: tuple[float, float, float], alpha: float = 0.5
) -> np.ndarray:
    """(H, W, 3) uint8 image with a boolean (H, W) mask tinted in ``color`` (0..1 RGB)."""
    out = image.astype(np.float32) / 255.0
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(color, dtype=np.float32)
    return (out * 255).clip(0, 255).astype(np.uint8)


def outline(
    image: np.ndarray, mask: np.ndarray, color: tuple[float, float, float], width: int = 3
) -> np.ndarray:
    """(H, W, 3) uint8 image with the outline (``width`` px inside the edge) of a boolean (H, W) mask
    drawn in ``color``: visible on objects of any colour, unlike a tint."""
    from scipy import ndimage

    m = np.asarray(mask).astype(bool)
    edge = m & ~ndimage.binary_erosion(m, iterations=width)
    out = np.array(image, dtype=np.uint8, copy=True)
    out[edge] = (np.asarray(color, dtype=np.float32) * 255).astype(np.uint8)
    return out


def save_episode_overlay(
    path: Path,
    query: np.ndarray,
    target: np.ndarray,
    pred: np.ndarray,
    title: str,
    support: np.ndarray | None = None,
    support_mask: np.ndarray | None = None,
) -> Path:
    """Panels: [support with its mask (yellow outline),] query with GT (magenta outline), query with
    prediction (red)."""
    panels = []
    if support is not None and support_mask is not None:
        panels.append(("support", outline(support, support_mask == 1, (1.0, 0.85, 0.0))))
    panels.append(("ground truth", outline(query, target == 1, (1.0, 0.0, 1.0))))
    panels.append(("prediction", overlay(query, pred.astype(bool), (1.0, 0.15, 0.1))))
    fig = Figure(figsize=(3.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels))
    for ax, (name, img) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(img)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
