"""PerSAM's decisions before the decoder (persam-method.md §1.2, §2.1-§2.4, §3.1, §2.7): tensors in,
tensors out.

* :func:`reference_cells`: the 64x64 reference cells Omega from a frame mask, through the release's
  mask path (the mask as an RGB uint8 image with R = ``fg_value``, SAM 1's ``ResizeLongestSide``,
  SAM 1's pixel normalisation, zero padding, bilinear to 64x64, R > 0);
* :func:`target_feature`: the mean (PerSAM) or half max + half mean (PerSAM-F) of the reference
  cells' embeddings;
* :func:`cosine_map`, :func:`upsampled_map`: the location map;
* :func:`point_prior`: argmax / argmin, the lowest flat index on ties;
* :func:`attention_bias`: the target-guided attention map ``attn_sim``;
* :func:`mask_box`: the tight box of a mask (None when empty: the release raises).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SAM1_INPUT = 1024
SAM1_R_MEAN, SAM1_R_STD = 123.675, 58.395  # SAM 1's pixel normalisation of the red channel
MASK_FG_VALUES = (128, 255)
EMBED_GRID = 64


def reference_cells(mask: Tensor, fg_value: int = 128, input_size: int = SAM1_INPUT) -> Tensor:
    """Omega (E, E) bool, E = input_size / 16 (64): the reference cells of a frame mask (H, W) bool,
    as the release gets them.

    The mask becomes the release's RGB uint8 reference image (R = ``fg_value`` on the foreground),
    goes through SAM 1's ``ResizeLongestSide`` (PIL bilinear), the red channel through SAM 1's
    normalisation ``(v - 123.675) / 58.395``, zero padding to ``input_size``, and bilinear to E x E;
    a cell is a reference cell when the result is > 0."""
    from segment_anything.utils.transforms import ResizeLongestSide

    if fg_value not in MASK_FG_VALUES:
        raise ValueError(f"mask_fg_value: {fg_value!r} is not one of {list(MASK_FG_VALUES)}")
    h, w = mask.shape
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[..., 0] = mask.detach().cpu().numpy().astype(np.uint8) * fg_value
    resized = ResizeLongestSide(input_size).apply_image(rgb)[..., 0]
    red = torch.as_tensor(resized, dtype=torch.float32, device=mask.device)
    red = (red - SAM1_R_MEAN) / SAM1_R_STD
    red = F.pad(red, (0, input_size - red.shape[1], 0, input_size - red.shape[0]))
    grid = input_size // 16
    return F.interpolate(red[None, None], (grid, grid), mode="bilinear")[0, 0] > 0


def any_pixel_cells(mask: Tensor, grid: int = EMBED_GRID) -> Tensor:
    """(grid, grid) bool: the cells of a square frame mask (S, S) holding any foreground pixel
    (the suite's ``empty_reference: any-pixel`` rescue, not the release)."""
    return F.adaptive_max_pool2d(mask[None, None].float(), grid)[0, 0] > 0


def cell_features(embeds: list[Tensor], cells: list[Tensor]) -> Tensor:
    """The embeddings (n, C) of the reference cells of K shots, shot by shot, row-major within one.

    embeds: K x (C, 64, 64); cells: K x (64, 64) bool."""
    return torch.cat([e.permute(1, 2, 0)[c] for e, c in zip(embeds, cells, strict=True)], dim=0)


def target_feature(features: Tensor, pooling: str = "mean") -> Tensor:
    """(C,) from the reference cells' embeddings (n, C): ``mean`` (PerSAM: t = e, unnormalised) or
    ``max-mean`` (PerSAM-F: max/2 + mean/2, the max per channel). NaN when n = 0, as the release."""
    if pooling == "mean":
        return features.mean(0)
    if pooling == "max-mean":
        top = features.max(0)[0] if len(features) else features.new_full(features.shape[1:], float("nan"))
        return top / 2 + features.mean(0) / 2
    raise ValueError(f"pooling: {pooling!r} is not 'mean' or 'max-mean'")


def cosine_map(target: Tensor, embed: Tensor) -> Tensor:
    """s (1, 1, h, w): cosine of the target feature (C,) with every cell of an embedding (C, h, w)
    (both normalised without eps, as the release)."""
    c, h, w = embed.shape
    target = target[None] / target[None].norm(dim=-1, keepdim=True)
    embed = embed / embed.norm(dim=0, keepdim=True)
    return (target @ embed.reshape(c, h * w)).reshape(1, 1, h, w)


def upsampled_map(sim: Tensor, postprocess: Callable[[Tensor], Tensor]) -> Tensor:
    """Sim (H, W): ``postprocess(bilinear(s, x4))`` with the backend's own postprocess (SAM 1:
    ``Sam.postprocess_masks`` to the frame; SAM 2: its transforms' ``postprocess_masks``)."""
    return postprocess(F.interpolate(sim, scale_factor=4, mode="bilinear"))[0, 0]


def point_prior(sim: Tensor) -> tuple[Tensor, Tensor]:
    """(positive xy, negative xy), each (2,) long in frame pixels: the argmax and the argmin of Sim
    (H, W), the lowest flat index on ties (the suite's rule for the release's ``topk``)."""
    w = sim.shape[1]
    flat = sim.flatten()
    pos, neg = torch.argmax(flat), torch.argmin(flat)
    return torch.stack([pos % w, pos // w]), torch.stack([neg % w, neg // w])


def attention_bias(sim: Tensor, grid: int = EMBED_GRID) -> Tensor:
    """attn_sim (1, 1, 1, grid*grid): sigmoid of the z-scored Sim (H, W) (unbiased std), bilinear
    onto the whole grid x grid token grid, row-major."""
    z = (sim - sim.mean()) / torch.std(sim)
    z = F.interpolate(z[None, None], (grid, grid), mode="bilinear")
    return torch.sigmoid(z).reshape(1, 1, 1, grid * grid)


def mask_box(mask: Tensor) -> Tensor | None:
    """The tight box (4,) float [x_min, y_min, x_max, y_max] (inclusive pixel extents) of a mask
    (H, W) bool; None when the mask is empty (the release raises there)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        return None
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
