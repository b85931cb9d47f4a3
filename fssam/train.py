"""What FSSAM trains and how (spec section 8): Dice loss, AdamW on three SAM 2 modules, poly LR."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """FSSAM's WeightedDiceLoss: 1 - 2 sum(p t) / (sum p^2 + sum t^2), per image, averaged over the batch.

    Args:
        logits: (B, H, W); p = sigmoid(logits).
        target: (B, H, W) in {0, 1, 255}; t = (target == 1), so 255 counts as background.
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    t = (target == 1).float().flatten(1)
    dice = 2 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1) + eps)
    return (1 - dice).mean()


def poly_lr(base_lr: float, current_iter: int, max_iter: int, power: float = 0.9) -> float:
    """lr = base_lr * (1 - current_iter / max_iter) ** power, per iteration, no warm-up.

    ``current_iter`` counts from 1, as the authors' ``train.py`` does (``current_iter = epoch *
    len(loader) + i + 1``): the first step (0-based index 0) runs at ``current_iter = 1`` and the last
    (index ``max_iter - 1``) at ``current_iter = max_iter``, i.e. with lr 0.
    """
    if not 0 <= current_iter <= max_iter:
        raise ValueError(f"poly_lr: current_iter {current_iter} is outside [0, max_iter={max_iter}]")
    return base_lr * (1 - current_iter / max_iter) ** power


def make_optimizer(model, lr: float = 1e-3, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW with one parameter group per trainable module (the authors' ``get_optim``).

    Calls ``model.train_mode()``, so everything else is frozen.
    """
    model.train_mode()
    groups = [{"params": list(m.parameters()), "name": name} for name, m in model.trainable_modules().items()]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def train_step(
    model, batch: dict[str, Any], optimizer: torch.optim.Optimizer, lr: float | None = None
) -> float:
    """One optimisation step on an episode batch; returns the loss.

    ``batch`` holds ``query`` (B,3,S,S), ``supports`` (B,K,3,S,S), ``support_masks`` (B,K,S,S) and
    ``query_mask`` (B,S,S) in {0,1,255}. The frozen encoders run without gradients.
    """
    if lr is not None:
        for g in optimizer.param_groups:
            g["lr"] = lr
    logits = model(
        batch["query"], batch["supports"], batch["support_masks"], query_mask=batch.get("query_mask")
    )
    loss = dice_loss(logits, batch["query_mask"].to(logits.device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
