"""PerSAM-F's two mixing weights (persam-method.md §3.2): fitted on the reference image(s), SAM frozen.

``omega = (1 - w1 - w2, w1, w2)`` mixes SAM's 3 multimask logits; ``w`` (2, 1) starts at 1/3 each
and is fitted with AdamW (eps 1e-4, weight decay 0.01 by default) under a cosine schedule to
``dice + focal`` of the mixed logits against the reference mask. K shots (a suite design, §4): the
K losses are summed every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


def mixing(weights: Tensor) -> Tensor:
    """omega (3, 1) = (1 - w1 - w2, w1, w2) from w (2, 1)."""
    return torch.cat((1 - weights.sum(0, keepdim=True), weights), dim=0)


def mix_logits(logits: Tensor, weights: Tensor) -> Tensor:
    """sum_k omega_k logits_k: logits (3, ...) and w (2, 1) -> (...)."""
    omega = mixing(weights).reshape(3, *([1] * (logits.dim() - 1)))
    return (logits * omega).sum(0)


def dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """1 - (2 sum(sigma(l) gt) + 1) / (sum sigma(l) + sum gt + 1); logits, target (P,)."""
    p = logits.sigmoid()
    return 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)


def focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """mean over pixels of alpha_t * BCE(l, gt) * (1 - p_t)^2, alpha 0.25; logits, target (P,)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    return (alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA).mean()


def _shot_loss(mixed: Tensor, target: Tensor) -> Tensor:
    return dice_loss(mixed, target) + focal_loss(mixed, target)


@dataclass
class FitResult:
    """The fitted ``weights`` (2, 1) (detached) and the loss before each step (``iters`` floats)."""

    weights: Tensor
    losses: list[float]


def fit_mixing_weights(
    logits: list[Tensor],
    targets: list[Tensor],
    lr: float = 1e-3,
    iters: int = 1000,
    weight_decay: float = 0.01,
    eps: float = 1e-4,
) -> FitResult:
    """Fit w on K shots: logits K x (3, P) multimask logits, targets K x (P,) float {0, 1}."""
    with torch.inference_mode(False), torch.enable_grad():  # also under the harness's no_grad
        logits = [x.detach().clone() for x in logits]
        targets = [t.detach().clone().to(logits[0].dtype) for t in targets]
        dtype, device = logits[0].dtype, logits[0].device
        weights = torch.full((2, 1), 1 / 3, dtype=dtype, device=device, requires_grad=True)
        optimizer = torch.optim.AdamW([weights], lr=lr, eps=eps, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iters)
        losses: list[float] = []
        for _ in range(iters):
            loss = sum(_shot_loss(mix_logits(x, weights), t) for x, t in zip(logits, targets, strict=True))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
    return FitResult(weights.detach(), losses)
