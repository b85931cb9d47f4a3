"""Pseudo Prompt Generator: the FG prior and the Disc prior from DINOv2 features (spec section 2).

    proto_fg = WGAP(F_s, m_s)             proto_bg = WGAP(F_s, 1 - m_s)
    S_fg = MinMax_p(cos(F_q, proto_fg))   S_bg = MinMax_p(cos(F_q, proto_bg))        (at the DINOv2 grid)
    prior_fg   = up(S_fg)                                                             (bilinear, align_corners)
    prior_disc = MinMax_allpix(ReLU(up(S_fg) - up(S_bg)))

K shots: both are computed per shot (each Disc prior min-max normalised on its own) and averaged,
with no renormalisation after averaging (FSSAM5s).
"""

from __future__ import annotations

import torch

from fssam.ops import cosine_map, minmax, resize, weighted_gap


def shot_priors(
    query_feat: torch.Tensor, support_feat: torch.Tensor, support_mask: torch.Tensor, out_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """FG and Disc priors of one shot.

    Args:
        query_feat: (B, C, h, w) DINOv2 patch features of the query.
        support_feat: (B, C, h, w) of the support.
        support_mask: (B, 1, H, W) support foreground in {0, 1} (ignore pixels already set to 0).
        out_size: side of the returned priors (the SAM 2 image size).
    Returns:
        prior_fg, prior_disc: (B, 1, out_size, out_size), values in [0, 1].
    """
    m = resize(support_mask.float(), support_feat.shape[-2:])
    proto_fg = weighted_gap(support_feat, m)
    proto_bg = weighted_gap(support_feat, 1.0 - m)
    s_fg = resize(minmax(cosine_map(query_feat, proto_fg)), out_size)
    s_bg = resize(minmax(cosine_map(query_feat, proto_bg)), out_size)
    return s_fg, minmax(torch.relu(s_fg - s_bg))


def pseudo_prompt_priors(
    query_feat: torch.Tensor, support_feats: torch.Tensor, support_masks: torch.Tensor, out_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """K-shot FG and Disc priors.

    Args:
        query_feat: (B, C, h, w).
        support_feats: (B, K, C, h, w).
        support_masks: (B, K, H, W) in {0, 1}.
        out_size: side of the returned priors.
    Returns:
        prior_fg, prior_disc: (B, 1, out_size, out_size), the means over shots of the per-shot priors.
    """
    fgs, discs = [], []
    for k in range(support_feats.shape[1]):
        fg, disc = shot_priors(query_feat, support_feats[:, k], support_masks[:, k : k + 1], out_size)
        fgs.append(fg)
        discs.append(disc)
    return torch.stack(fgs).mean(0), torch.stack(discs).mean(0)
