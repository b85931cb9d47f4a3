"""Turn a manifest episode into model inputs at the model's image size (FSSAM's test transform).

FSSAM (BAM ``transform_new.Resize``) resizes query and supports directly to ``size x size``:
images with linear interpolation (cv2 INTER_LINEAR == torch bilinear, align_corners=False, no
antialias) and labels with nearest neighbour (cv2 INTER_NEAREST == torch "nearest"). The query
label is kept at its ORIGINAL size for the metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.data.prepared import PreparedDataset
from benchmark.episodes import Episode
from benchmark.metrics import episode_target


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) float32 RGB in 0..255 (bilinear, align_corners=False)."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().unsqueeze(0)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]


def resize_label(label: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) uint8 -> (size, size) uint8 (nearest)."""
    y = torch.from_numpy(np.array(label, dtype=np.uint8)).float()[None, None]
    return F.interpolate(y, size=(size, size), mode="nearest")[0, 0].to(torch.uint8)


@dataclass
class EpisodeData:
    """Inputs of one episode. Shapes for K shots at model size S, original query size (H, W)."""

    episode: Episode
    query: torch.Tensor  # (3, S, S) float32 0..255
    supports: torch.Tensor  # (K, 3, S, S) float32 0..255
    support_masks: torch.Tensor  # (K, S, S) uint8 in {0, 1, 255}
    query_target: torch.Tensor  # (H, W) uint8 in {0, 1, 255}, original resolution
    query_image: np.ndarray  # (H, W, 3) uint8, original (for figures)


def load_episode(ds: PreparedDataset, images: dict[str, list[str]], ep: Episode, size: int) -> EpisodeData:
    """Load and transform one episode. ``images`` is the manifest's id -> [image, label] table."""
    q_img_rel, q_lab_rel = images[ep.query]
    q_img = ds.load_image(q_img_rel)
    q_lab = ds.load_label(q_lab_rel)
    sup, sup_m = [], []
    for sid in ep.supports:
        s_img_rel, s_lab_rel = images[sid]
        sup.append(resize_image(ds.load_image(s_img_rel), size))
        sup_m.append(resize_label(episode_target(ds.load_label(s_lab_rel), ep.cls), size))
    return EpisodeData(
        episode=ep,
        query=resize_image(q_img, size),
        supports=torch.stack(sup),
        support_masks=torch.stack(sup_m),
        query_target=torch.from_numpy(episode_target(q_lab, ep.cls)),
        query_image=q_img,
    )
