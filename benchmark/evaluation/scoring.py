"""Vectorised scoring: a batch of logits -> the per-episode table's rows, in a few tensor ops.

Equal, count for count, to :func:`benchmark.evaluation.predict.score_episode` on each episode (the
reference, kept): the logits are upsampled in float32 with ``F.interpolate(mode="bilinear",
align_corners=True)`` to each episode's scored size (one call per distinct size: the label's size,
or the square of HSNet's ``resized`` evaluation), thresholded at ``logit >= logit_threshold(t)``,
one-shot votes combined as :func:`benchmark.evaluation.predict.voted_mask` does, and the four
counts read from one ``bincount`` of (prediction, target code) pairs.

Counting: with target code 0 (background), 1 (foreground), 2 (ignore) and prediction p, the counts
of :func:`benchmark.evaluation.metrics.intersection_union` are
``I_fg = #(p, fg)``, ``U_fg = #fg + #(p, bg)``, ``I_bg = #(!p, bg)``, ``U_bg = #bg + #(!p, fg)``.
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
    """An episode's scored target as codes: ``codes`` (H, W) uint8 tensor, 0 background,
    1 foreground, 2 ignore (on the CPU)."""

    codes: torch.Tensor

    @classmethod
    def of(cls, target: np.ndarray) -> ScoredTarget:
        """From an (H, W) uint8 target in {0, 1, 255} (:func:`benchmark.evaluation.loader.scored_target`)."""
        t = np.asarray(target)
        codes = np.where(t == IGNORE_LABEL, np.uint8(2), t).astype(np.uint8, copy=False)
        if codes.max(initial=0) > 2:
            raise ValueError(f"a scored target holds only 0, 1 and {IGNORE_LABEL}, found {np.unique(t)[:5]}")
        return cls(torch.from_numpy(np.ascontiguousarray(codes)))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.codes.shape[0]), int(self.codes.shape[1]))


def predicted_masks(logits: torch.Tensor, shape: tuple[int, int], threshold: float) -> torch.Tensor:
    """(N, S, S) logits -> (N, H, W) bool foreground at ``shape`` (float32 bilinear, align_corners)."""
    x = logits.detach().to(torch.float32)[:, None]
    up = F.interpolate(x, size=tuple(shape), mode="bilinear", align_corners=True)[:, 0]
    return up >= logit_threshold(threshold)


def voted(masks: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) bool one-shot masks -> (N, H, W) bool: HSNet's vote per episode,
    ``votes / max(max vote, 1) >= 0.5``, evaluated exactly in integers as ``2 * votes >= max``."""
    votes = masks.sum(dim=1, dtype=torch.int32)  # (N, H, W)
    top = votes.flatten(1).amax(dim=1).clamp_min(1)  # (N,)
    return 2 * votes >= top[:, None, None]


def count_rows(pred: torch.Tensor, codes: torch.Tensor) -> np.ndarray:
    """(N, H, W) bool predictions and (N, H, W) uint8 target codes -> (N, 4) int64
    ``I_bg, U_bg, I_fg, U_fg``."""
    n = pred.shape[0]
    key = codes.to(torch.int64) + 3 * pred.to(torch.int64)  # 0..5: (p, code)
    key += 6 * torch.arange(n, device=key.device, dtype=torch.int64)[:, None, None]
    hist = torch.bincount(key.flatten(), minlength=6 * n).reshape(n, 6).cpu().numpy()
    n_bg, n_fg = hist[:, 0] + hist[:, 3], hist[:, 1] + hist[:, 4]
    p_bg, p_fg = hist[:, 3], hist[:, 4]
    return np.stack([n_bg - p_bg, n_bg + (n_fg - p_fg), p_fg, n_fg + p_bg], axis=1)


def score_batch(logits: torch.Tensor, targets: list[ScoredTarget], threshold: float = 0.5) -> np.ndarray:
    """(B, S, S) logits, or (B, K, S, S) one-shot logits to vote on, and the B episodes' scored
    targets -> (B, 4) int64 counts ``I_bg, U_bg, I_fg, U_fg`` (as ``score_episode`` computes them).

    Episodes that share a target size are upsampled, thresholded and counted together."""
    if logits.shape[0] != len(targets):
        raise ValueError(f"score_batch: {logits.shape[0]} logits for {len(targets)} targets")
    out = np.zeros((len(targets), 4), dtype=np.int64)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(targets):
        groups.setdefault(t.shape, []).append(i)
    for shape, idx in groups.items():
        sel = logits if len(idx) == len(targets) else logits[idx]
        if sel.dim() == 4:
            n, k = sel.shape[:2]
            pred = voted(
                predicted_masks(sel.reshape(n * k, *sel.shape[2:]), shape, threshold).reshape(n, k, *shape)
            )
        else:
            pred = predicted_masks(sel, shape, threshold)
        codes = targets[idx[0]].codes[None] if len(idx) == 1 else torch.stack([targets[i].codes for i in idx])
        out[idx] = count_rows(pred, codes.to(pred.device))
    return out
