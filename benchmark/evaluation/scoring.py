"""Vectorised scoring: a batch of logits -> the per-episode table's rows, in a few tensor ops.

Equal, count for count, to :func:`benchmark.evaluation.predict.score_episode` on each episode (the
reference, kept): the logits are upsampled in float32 with ``F.interpolate(mode="bilinear",
align_corners=True)`` to each episode's scored size (one call per distinct size: the label's size,
or the square of HSNet's ``resized`` evaluation), thresholded at ``logit >= logit_threshold(t)``,
one-shot votes combined as :func:`benchmark.evaluation.predict.voted_mask` does, and counted
with numpy (faster than torch on arrays of this size). The upsampling uses torch's intra-op
threads (on 2 idle cores 0.21 ms for a 512 -> 375 x 500 upsample against 0.38 on one; the values do
not depend on it: each output pixel is computed alone).

Counting: with the target's foreground and background pixels (255 is neither; both kept as bits,
:class:`ScoredTarget`) and prediction p,
the counts of :func:`benchmark.evaluation.metrics.intersection_union` are
``I_fg = #(p, fg)``, ``U_fg = #fg + #(p, bg)``, ``I_bg = #bg - #(p, bg)``, ``U_bg = #bg + #fg - #(p, fg)``
(the target's #fg and #bg computed once per target and cached with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.data.classes import IGNORE_LABEL
from benchmark.evaluation.metrics import logit_threshold


@dataclass(frozen=True)
class ScoredTarget:
    """An episode's scored target as what counting needs, bit-packed (``np.packbits`` of the
    row-major pixels: 1/8 byte per pixel, so a COCO-20i fold's targets fit the label cache):
    ``fg_bits`` (target 1) and ``bg_bits`` (target 0; 255 is neither), the target's ``shape``
    (H, W) and the pixel counts ``n_fg``, ``n_bg``."""

    shape: tuple[int, int]
    fg_bits: np.ndarray
    bg_bits: np.ndarray
    n_fg: int
    n_bg: int

    @classmethod
    def of(cls, target: np.ndarray) -> ScoredTarget:
        """From an (H, W) uint8 target in {0, 1, 255} (:func:`benchmark.evaluation.loader.scored_target`)."""
        t = np.asarray(target)
        fg, bg = t == 1, t == 0
        if not np.all(fg | bg | (t == IGNORE_LABEL)):
            raise ValueError(f"a scored target holds only 0, 1 and {IGNORE_LABEL}, found {np.unique(t)[:5]}")
        fg_bits, bg_bits = np.packbits(fg), np.packbits(bg)
        fg_bits.flags.writeable = bg_bits.flags.writeable = False  # cached with the label: read-only
        shape = (int(t.shape[0]), int(t.shape[1]))
        return cls(shape, fg_bits, bg_bits, int(np.count_nonzero(fg)), int(np.count_nonzero(bg)))

    def target(self) -> np.ndarray:
        """The (H, W) uint8 target back: 1 foreground, 0 background, 255 neither (a new array)."""
        n = self.shape[0] * self.shape[1]
        fg = np.unpackbits(self.fg_bits, count=n)
        neither = 1 - (fg | np.unpackbits(self.bg_bits, count=n))
        return (fg + neither * np.uint8(IGNORE_LABEL)).reshape(self.shape)


def predicted_masks(logits: torch.Tensor, shape: tuple[int, int], threshold: float) -> np.ndarray:
    """(N, S, S) logits -> (N, H, W) bool foreground at ``shape`` (float32 bilinear, align_corners),
    compared in float32 with the float32 logit cut, as torch compares a tensor with a number."""
    x = logits.detach()
    if x.dtype != torch.float32 or x.device.type != "cpu":  # a no-op .to still releases the GIL
        x = x.to(device="cpu", dtype=torch.float32)
    up = F.interpolate(x[:, None], size=tuple(shape), mode="bilinear", align_corners=True)[:, 0]
    return up.numpy() >= np.float32(logit_threshold(threshold))


def voted(masks: np.ndarray) -> np.ndarray:
    """(N, K, H, W) bool one-shot masks -> (N, H, W) bool: HSNet's vote per episode,
    ``votes / max(max vote, 1) >= 0.5``, evaluated exactly in integers as ``2 * votes >= max``."""
    votes = masks.sum(axis=1, dtype=np.int32)  # (N, H, W)
    top = np.maximum(votes.reshape(votes.shape[0], -1).max(axis=1), 1)  # (N,)
    return 2 * votes >= top[:, None, None]


def count_row(pred: np.ndarray, target: ScoredTarget) -> tuple[int, int, int, int]:
    """(H, W) bool prediction -> ``I_bg, U_bg, I_fg, U_fg`` against ``target`` (the prediction packed
    as the target is, the intersections counted as set bits)."""
    return count_bits(np.packbits(pred), target)


def count_bits(bits: np.ndarray, target: ScoredTarget) -> tuple[int, int, int, int]:
    """:func:`count_row` of a prediction already packed: ``bits`` (ceil(H * W / 8),) uint8, the
    ``np.packbits`` of its row-major pixels (the padding bits of the last byte are 0 in both)."""
    p_fg = int(np.bitwise_count(bits & target.fg_bits).sum())
    p_bg = int(np.bitwise_count(bits & target.bg_bits).sum())
    return target.n_bg - p_bg, target.n_bg + target.n_fg - p_fg, p_fg, target.n_fg + p_bg


def device_voted(masks: torch.Tensor) -> torch.Tensor:
    """:func:`voted` in torch, on the masks' device: (N, K, H, W) bool -> (N, H, W) bool."""
    votes = masks.sum(dim=1, dtype=torch.int32)
    top = votes.reshape(votes.shape[0], -1).amax(dim=1).clamp_min(1)
    return 2 * votes >= top[:, None, None]


def _unpacked(bits: np.ndarray, n: int, device: torch.device) -> torch.Tensor:
    """``np.packbits`` bits -> the first ``n`` of them as a bool tensor on ``device`` (unpacked there:
    an eighth of the bytes cross to the device)."""
    b = torch.tensor(bits, dtype=torch.uint8, device=device)  # a copy (the cached bits stay read-only)
    shifts = torch.arange(7, -1, -1, device=device, dtype=torch.uint8)  # packbits is big-endian
    return ((b[:, None] >> shifts) & 1).reshape(-1)[:n].bool()


def device_counts(pred: torch.Tensor, targets: list[ScoredTarget]) -> torch.Tensor:
    """(N, H, W) bool predictions on a device and their N targets -> (N, 4) int64 counts
    ``I_bg, U_bg, I_fg, U_fg`` on that device (the same sums as :func:`count_row`)."""
    n, h, w = pred.shape
    fg = torch.stack([_unpacked(t.fg_bits, h * w, pred.device) for t in targets])
    bg = torch.stack([_unpacked(t.bg_bits, h * w, pred.device) for t in targets])
    flat = pred.reshape(n, h * w)
    p_fg, p_bg = (flat & fg).sum(1), (flat & bg).sum(1)
    n_fg = torch.tensor([t.n_fg for t in targets], dtype=torch.int64, device=pred.device)
    n_bg = torch.tensor([t.n_bg for t in targets], dtype=torch.int64, device=pred.device)
    return torch.stack([n_bg - p_bg, n_bg + n_fg - p_fg, p_fg, n_fg + p_bg], dim=1)


def device_packbits(masks: torch.Tensor) -> torch.Tensor:
    """``np.packbits`` of each mask's row-major pixels, on the masks' device: (N, H, W) bool ->
    (N, ceil(H * W / 8)) uint8 (big-endian bits, the last byte's padding bits 0)."""
    flat = masks.reshape(masks.shape[0], -1).to(torch.uint8)
    flat = F.pad(flat, (0, (-flat.shape[1]) % 8))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=masks.device)
    return (flat.reshape(flat.shape[0], -1, 8) * weights).sum(dim=2, dtype=torch.uint8)


def device_masks(logits: torch.Tensor, shape: tuple[int, int], threshold: float) -> torch.Tensor:
    """(N, S, S) logits on their device -> (N, H, W) bool at ``shape`` there (float32 bilinear,
    align_corners, compared with the float32 logit cut)."""
    x = logits.detach().float()
    up = F.interpolate(x[:, None], size=tuple(shape), mode="bilinear", align_corners=True)[:, 0]
    return up >= torch.tensor(float(np.float32(logit_threshold(threshold))), device=x.device)


def score_batch(
    logits: torch.Tensor,
    targets: list[ScoredTarget],
    threshold: float = 0.5,
    *,
    on_device: bool | None = None,
    packed: list | None = None,
) -> np.ndarray:
    """(B, S, S) logits, or (B, K, S, S) one-shot logits to vote on, and the B episodes' scored
    targets -> (B, 4) int64 counts ``I_bg, U_bg, I_fg, U_fg`` (as ``score_episode`` computes them).

    Episodes that share a target size are upsampled together, where the logits are: on the CPU
    with numpy counting; on a GPU there (:func:`device_masks`, :func:`device_counts`), so only the
    (B, 4) counts cross back (a cell's key names its device type, so GPU cells are their own).
    ``on_device`` forces the torch path (True) or the numpy one (False) whatever the device.
    ``packed``, a list, receives the B counted predictions packed (``np.packbits`` of each (H, W)
    mask's row-major pixels: (ceil(H * W / 8),) uint8, H, W its target's shape), in batch order."""
    if logits.shape[0] != len(targets):
        raise ValueError(f"score_batch: {logits.shape[0]} logits for {len(targets)} targets")
    if on_device is None:
        on_device = logits.device.type != "cpu"
    out = np.zeros((len(targets), 4), dtype=np.int64)
    kept: list[np.ndarray | None] = [None] * len(targets)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(targets):
        groups.setdefault(t.shape, []).append(i)
    for shape, idx in groups.items():
        sel = logits if len(idx) == len(targets) else logits[idx]
        flat = sel.reshape(-1, *sel.shape[-2:])  # (N, S, S) or (N * K, S, S)
        if on_device:
            pred = device_masks(flat, shape, threshold)
            if sel.dim() == 4:
                pred = device_voted(pred.reshape(*sel.shape[:2], *shape))
            out[idx] = device_counts(pred, [targets[i] for i in idx]).cpu().numpy()
            if packed is not None:  # packed there: an eighth of the bytes cross back
                for i, bits in zip(idx, device_packbits(pred).cpu().numpy(), strict=True):
                    kept[i] = bits
            continue
        pred = predicted_masks(flat, shape, threshold)
        if sel.dim() == 4:
            pred = voted(pred.reshape(*sel.shape[:2], *shape))
        for j, i in enumerate(idx):
            kept[i] = np.packbits(pred[j])
            out[i] = count_bits(kept[i], targets[i])
    if packed is not None:
        packed.extend(kept)
    return out
