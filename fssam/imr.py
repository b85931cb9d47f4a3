"""Iterative Memory Refinement (spec section 4), at the memory grid (32x32 at 512 px) on 64-d memories.

    A   = mean_k MinMax_p(cos(Q_fg[:,p], WGAP(S_k, m_k)))      query(FG memory)-support similarity, once
    for t = 0..T-1:
        B_t       = MinMax_p(cos(Q_fg[:,p], WGAP(D_t, p_d,t)))  query-query similarity to the Disc memory
        W_t       = ReLU(B_t + A - 1)                           high only where both are high ("v2": MinMax_p(W_t))
        D_{t+1}   = W_t * Q_fg + (1 - W_t) * D_t                fuse FG-memory features into the Disc memory
        p_d,t+1   = MinMax_p(W_t * p_fg + (1 - W_t) * p_d,t)    update the Disc prior for the next prototype
    Mem_Q = D_T

Masks and priors are brought to the memory grid with bilinear, align_corners=True resizing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fssam.config import IMR_VERSIONS
from fssam.ops import cosine_map, minmax, resize, weighted_gap


@dataclass
class IMRResult:
    memory: torch.Tensor  # (B, C, h, w) refined pseudo-query memory D_T
    disc_memories: list[torch.Tensor]  # D_0..D_T
    disc_priors: list[torch.Tensor]  # p_d,0..p_d,T at the memory grid, (B, 1, h, w)
    weights: list[torch.Tensor]  # W_0..W_{T-1}, (B, 1, h, w)


def support_similarity(
    fg_memory: torch.Tensor, support_memories: torch.Tensor, support_masks: torch.Tensor
) -> torch.Tensor:
    """A = mean_k MinMax_p(cos(Q_fg, WGAP(S_k, m_k))).

    Args:
        fg_memory: (B, C, h, w) query memory under the FG prior.
        support_memories: (B, K, C, h, w).
        support_masks: (B, K, H, W) in {0, 1}.
    Returns:
        (B, 1, h, w) in [0, 1].
    """
    grid = fg_memory.shape[-2:]
    maps = []
    for k in range(support_memories.shape[1]):
        m = resize(support_masks[:, k : k + 1].float(), grid)
        maps.append(minmax(cosine_map(fg_memory, weighted_gap(support_memories[:, k], m))))
    return torch.stack(maps).mean(0)


def refine_step(
    weight: torch.Tensor,
    fg_memory: torch.Tensor,
    disc_memory: torch.Tensor,
    prior_fg: torch.Tensor,
    prior_disc: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One blend: D' = W Q_fg + (1 - W) D and p_d' = MinMax(W p_fg + (1 - W) p_d).

    Args:
        weight: (B, 1, h, w) in [0, 1]; fg_memory, disc_memory: (B, C, h, w); priors: (B, 1, h, w).
    """
    memory = weight * fg_memory + (1.0 - weight) * disc_memory
    prior = minmax(weight * prior_fg + (1.0 - weight) * prior_disc)
    return memory, prior


def iterative_memory_refinement(
    fg_memory: torch.Tensor,
    disc_memory: torch.Tensor,
    support_memories: torch.Tensor,
    support_masks: torch.Tensor,
    prior_fg: torch.Tensor,
    prior_disc: torch.Tensor,
    iters: int = 3,
    version: str = "v1",
) -> IMRResult:
    """Run T = ``iters`` IMR iterations (0 returns the Disc memory unchanged).

    Args:
        fg_memory: (B, C, h, w) Mem_Q^FG.  disc_memory: (B, C, h, w) Mem_Q^Disc.
        support_memories: (B, K, C, h, w) Mem_S per shot.  support_masks: (B, K, H, W) in {0, 1}.
        prior_fg, prior_disc: (B, 1, H, W) priors at image size.
    """
    if version not in IMR_VERSIONS:
        raise ValueError(f"imr version must be one of {IMR_VERSIONS}, got {version!r}")
    if iters < 0:
        raise ValueError(f"imr iterations must be >= 0, got {iters}")
    grid = fg_memory.shape[-2:]
    p_fg = resize(prior_fg, grid)
    p_d = resize(prior_disc, grid)
    d = disc_memory
    result = IMRResult(memory=d, disc_memories=[d], disc_priors=[p_d], weights=[])
    if iters == 0:
        return result
    a = support_similarity(fg_memory, support_memories, support_masks)
    for _ in range(iters):
        b = minmax(cosine_map(fg_memory, weighted_gap(d, p_d)))
        w = torch.relu(b + a - 1.0)
        if version == "v2":
            w = minmax(w)
        d, p_d = refine_step(w, fg_memory, d, p_fg, p_d)
        result.disc_memories.append(d)
        result.disc_priors.append(p_d)
        result.weights.append(w)
    result.memory = d
    return result
