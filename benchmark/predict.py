"""One episode through a method and the scorer: features -> ``predict`` -> per-episode counts.

Part of the code that determines a cell's numbers (hashed into every cell key).
"""

from __future__ import annotations

import torch

from benchmark.episode_loader import EpisodeData
from benchmark.features import Featurizer
from benchmark.methods.base import FewShotMethod
from benchmark.metrics import intersection_union, prediction_at_label_size


def predict_episode(
    method: FewShotMethod, feat: Featurizer, data: EpisodeData, return_intermediates: bool = False
):
    """The method on one episode: (1, S, S) logits (and intermediates when asked)."""
    query = feat.encode([data.query])
    supports = feat.encode(data.supports)
    with torch.no_grad():
        return method.predict(
            query,
            supports,
            data.support_masks[None],
            query_mask=data.query_mask[None],
            return_intermediates=return_intermediates,
        )


def score_episode(logits: torch.Tensor, data: EpisodeData, threshold: float = 0.5) -> dict[str, int]:
    """One row of the per-episode table from (1, S, S) logits (foreground: probability >= threshold)."""
    pred = prediction_at_label_size(logits[0].float().cpu(), data.query_target.shape, threshold)
    i_bg, u_bg, i_fg, u_fg = intersection_union(pred, data.query_target)
    ep = data.episode
    return {"episode": ep.id, "class": ep.cls, "I_bg": i_bg, "U_bg": u_bg, "I_fg": i_fg, "U_fg": u_fg}
