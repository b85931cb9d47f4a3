"""Episodes through a method and the scorer: features -> ``predict`` -> per-episode counts.

B episodes of one cell go through the method in one forward (:func:`predict_batch`); every
image is resized to S x S, so a batch needs no padding, and episodes with different shot counts
are run as separate groups. Part of the code that determines a cell's numbers (hashed into every
cell key).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect

import numpy as np
import torch

from benchmark.evaluation.features import Featurizer
from benchmark.evaluation.loader import EpisodeData
from benchmark.evaluation.metrics import EPISODE_COLUMNS, intersection_union, prediction_at_label_size
from benchmark.evaluation.predictions import StoredPrediction
from benchmark.evaluation.scoring import score_batch
from benchmark.methods.base import FewShotMethod
from fssam.stages import SharedStages, StageMemo


@functools.cache
def _accepts_stages(cls: type) -> bool:
    return "stages" in inspect.signature(cls.predict).parameters


@functools.cache
def _accepts_episode_ids(cls: type) -> bool:
    return "episode_ids" in inspect.signature(cls.predict).parameters


def batch_token(feat: Featurizer, batch: list[EpisodeData]) -> str:
    """What a batch's shared stages depend on besides the model: its images (by content), masks,
    the features' storage dtype and the device (:mod:`fssam.stages`)."""
    h = hashlib.sha256(f"{feat.dtype}:{feat.method.device}:{len(batch)}".encode())
    for d in batch:
        for img in (d.query, *d.supports):
            h.update(img.sha256.encode())
        h.update(d.support_masks.numpy().tobytes())
        h.update(d.query_mask.numpy().tobytes())
    return h.hexdigest()


def predict_batch(
    method: FewShotMethod,
    feat: Featurizer,
    batch: list[EpisodeData],
    memo: StageMemo | None = None,
    return_intermediates: bool = False,
):
    """The method on B episodes with the same shot count: (B, S, S) logits (and intermediates).

    With ``memo``, a method whose ``predict`` takes ``stages`` reuses the stages another variant
    already computed on the same batch (identical results). A method whose ``predict`` takes
    ``episode_ids`` gets the episodes' manifest ids (e.g. to seed a per-episode random stream;
    ``kshot: voting`` gives each one-shot prediction its episode's id)."""
    if len({len(d.supports) for d in batch}) != 1:
        raise ValueError("predict_batch: every episode of a batch must have the same number of shots")
    query = feat.encode([d.query for d in batch], "query")
    supports = feat.encode([s for d in batch for s in d.supports], "support")
    extras = {}
    if memo is not None and _accepts_stages(type(method)):
        extras["stages"] = SharedStages(memo, batch_token(feat, batch))
    if _accepts_episode_ids(type(method)):
        extras["episode_ids"] = [d.episode.id for d in batch]
    with torch.no_grad():
        return method.predict(
            query,
            supports,
            _stacked([d.support_masks for d in batch]),
            query_mask=_stacked([d.query_mask for d in batch]),
            return_intermediates=return_intermediates,
            **extras,
        )


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, without the copy for one episode (its tensors are its own, not cached)."""
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)


def predict_votes(
    method: FewShotMethod, feat: Featurizer, batch: list[EpisodeData], memo: StageMemo | None = None
) -> torch.Tensor:
    """``kshot: voting`` (``benchmark.methods.registry.SCORING_DEFAULTS``): HSNet's
    ``predict_mask_nshot`` for any method. The method on each support alone, (B, K, S, S) logits (shot k of episode b
    at ``[b, k]``); :func:`score_episode` turns them into the voted mask."""
    k = len(batch[0].supports)
    singles = [one_shot(d, i) for d in batch for i in range(k)]
    logits = predict_batch(method, feat, singles, memo)
    return logits.reshape(len(batch), k, *logits.shape[-2:])


def one_shot(data: EpisodeData, i: int) -> EpisodeData:
    """The episode with support ``i`` alone (a 1-shot episode on the same query)."""
    return dataclasses.replace(
        data,
        supports=[data.supports[i]],
        support_masks=data.support_masks[i : i + 1],
        support_label_files=data.support_label_files[i : i + 1],
    )


def predict_scored(
    method: FewShotMethod,
    feat: Featurizer,
    batch: list[EpisodeData],
    kshot: str,
    memo: StageMemo | None = None,
) -> torch.Tensor:
    """The logits a cell scores: (B, S, S) from the method on all supports (``kshot: joint``, and
    every 1-shot episode), or (B, K, S, S) one-shot logits to vote on (``kshot: voting``, K > 1)."""
    if kshot == "voting" and len(batch[0].supports) > 1:
        return predict_votes(method, feat, batch, memo)
    return predict_batch(method, feat, batch, memo)


def voted_mask(masks: torch.Tensor) -> torch.Tensor:
    """(K, H, W) bool one-shot masks -> (H, W) bool: HSNet's vote (sum / max(max vote, 1) >= 0.5)."""
    votes = masks.to(torch.int64).sum(0)
    max_vote = max(int(votes.max()), 1)
    return votes.float() / max_vote >= 0.5


def predict_episode(
    method: FewShotMethod, feat: Featurizer, data: EpisodeData, return_intermediates: bool = False
):
    """The method on one episode: (1, S, S) logits (and intermediates when asked)."""
    return predict_batch(method, feat, [data], return_intermediates=return_intermediates)


def scored_mask(logits: torch.Tensor, shape: tuple[int, ...], threshold: float = 0.5) -> torch.Tensor:
    """(1, S, S) logits, or (1, K, S, S) one-shot logits to vote on -> the (H, W) bool prediction at
    ``shape`` (foreground: probability >= threshold; votes thresholded one by one, then
    :func:`voted_mask`)."""
    masks = prediction_at_label_size(logits[0].float().cpu(), tuple(shape), threshold)
    return voted_mask(masks) if logits.dim() == 4 else masks


def score_episode(logits: torch.Tensor, data: EpisodeData, threshold: float = 0.5) -> dict[str, int]:
    """One row of the per-episode table from (1, S, S) logits (foreground: probability >= threshold),
    or from (1, K, S, S) one-shot logits (``kshot: voting``: each thresholded at the scored size, then
    :func:`voted_mask`)."""
    target = data.query_target
    pred = scored_mask(logits, target.shape, threshold)
    i_bg, u_bg, i_fg, u_fg = intersection_union(pred, target)
    ep = data.episode
    return {"episode": ep.id, "class": ep.cls, "I_bg": i_bg, "U_bg": u_bg, "I_fg": i_fg, "U_fg": u_fg}


def score_rows(
    logits: torch.Tensor,
    batch: list[EpisodeData],
    threshold: float = 0.5,
    predictions: list | None = None,
) -> list[dict[str, int]]:
    """The per-episode table's rows of a batch from (B, S, S) logits or (B, K, S, S) one-shot logits
    (``kshot: voting``): :func:`benchmark.evaluation.scoring.score_batch`, equal to
    :func:`score_episode` on each episode. ``predictions``, a list, receives each row's counted
    prediction at the scored size, packed (a
    :class:`~benchmark.evaluation.predictions.StoredPrediction`)."""
    packed: list[np.ndarray] | None = [] if predictions is not None else None
    counts = score_batch(logits, [d.scored for d in batch], threshold, packed=packed)
    if predictions is not None and packed is not None:
        predictions.extend(
            StoredPrediction(d.scored.shape, bits) for d, bits in zip(batch, packed, strict=True)
        )
    columns = EPISODE_COLUMNS[2:]  # I_bg, U_bg, I_fg, U_fg
    return [
        {"episode": d.episode.id, "class": d.episode.cls, **dict(zip(columns, row, strict=True))}
        for d, row in zip(batch, counts.tolist(), strict=True)
    ]
