"""Matcher ("Segment Anything with One Shot Using All-Purpose Feature Matching", ICLR 2024),
rebuilt from its release (matcher-method.md) on the shared SAM backend and the suite's DINOv2.

Per episode: DINOv2 pre-norm tokens of query and supports -> bidirectional Hungarian patch
matching -> points -> random point subsets as SAM prompts, pooled with SAM's dense-grid masks
(the modified automatic mask generator) -> box NMS -> EMD/purity/coverage scores -> filters ->
the union of the best masks. The decision logic is in :mod:`baselines.matcher_logic`, the mask
generator in :mod:`baselines.matcher_amg`, the settings in :mod:`baselines.matcher_config`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from baselines.dinov2_tokens import DINOv2TokenEncoder, dinov2_from_config
from baselines.field_method import SAMDINOv2Method
from baselines.matcher_amg import AMGSettings, MatcherMaskGenerator, record_count
from baselines.matcher_config import MatcherConfig
from baselines.matcher_logic import (
    foreground_rows,
    instance_scores,
    metric_filter,
    patch_level_matching,
    points_box,
    reference_masks,
    sample_subsets,
    score_filter,
    similarity,
    topk_filter,
)
from baselines.sam_backend import PromptableSAM, sam_from_config
from fssam.dinov2 import DINOv2Backbone

MASK_LOGIT = 10.0  # the binary prediction as logits: +10 foreground, -10 background
DINO_KEY = "dinov2.prenorm"


def episode_rng(seed: int, episode: int) -> random.Random:
    """The ``rng: episode`` stream of one episode: seeded from SHA-256 of (seed, episode id)."""
    digest = hashlib.sha256(f"matcher:{seed}:{episode}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def amg_settings(cfg: MatcherConfig) -> AMGSettings:
    """The mask generator's arguments from the release's flags (§2.7's mapping column)."""
    return AMGSettings(
        points_per_side=cfg.points_per_side,
        points_per_batch=cfg.points_per_batch,
        pred_iou_thresh=cfg.pred_iou_thresh,
        stability_score_thresh=cfg.stability_score_thresh,
        sel_pred_iou_thresh=cfg.iou_filter,
        sel_stability_score_thresh=cfg.sel_stability_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        multimask_output=cfg.dense_multimask_output > 0,
        sel_multimask_output=cfg.multimask_output,
        output_layer=cfg.dense_multimask_output,
        sel_output_layer=cfg.output_layer,
        dense_pred=cfg.use_dense_mask,
        dense_layer_flag=cfg.dense_layer_flag,
    )


class Matcher(SAMDINOv2Method, nn.Module):
    """Matcher on the harness protocol: ``encoders`` {"sam", "dinov2"}, ``predict`` -> (B, S, S)
    logits (+10 on the predicted union, -10 elsewhere), ``forward`` on pixels."""

    def __init__(
        self, config: MatcherConfig, sam: PromptableSAM | None = None, dino: DINOv2Backbone | None = None
    ):
        super().__init__()
        self.config = config
        self.sam = sam or sam_from_config(config)
        self.dino = dino or dinov2_from_config(config)
        self.stream = random.Random(config.seed)  # rng: release (one per model, i.e. per cell)

    @property
    def encoders(self) -> dict[str, Any]:
        return {
            "sam": self.sam.encoder(image_size=self.config.image_size, roles=("query",)),
            "dinov2": DINOv2TokenEncoder(self.dino, resize=self.config.dinov2_resize),
        }

    def episode_stream(self, episode: int) -> random.Random:
        """The random stream the sampler draws from for ``episode`` (see ``MatcherConfig.rng``)."""
        if self.config.rng == "release":
            return self.stream
        return episode_rng(self.config.seed, episode)

    @torch.no_grad()
    def predict(
        self,
        query_feats: Mapping[str, Tensor],
        support_feats: Mapping[str, Tensor],
        support_masks: Tensor,
        query_mask: Tensor | None = None,
        return_intermediates: bool = False,
        episode_ids: list[int] | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """B episodes -> (B, S, S) logits (and, when asked, ``{"episodes": [per-episode dict]}``).

        query_feats / support_feats: merged encoder features of B queries / B*K supports
        (b-major); support_masks: (B, K, S, S) {0, 1, 255}; episode_ids: the episodes' ids (the
        ``rng: episode`` seeds; default 0..B-1). ``query_mask`` is not used."""
        b, k = support_masks.shape[:2]
        ids = list(range(b)) if episode_ids is None else [int(e) for e in episode_ids]
        preds, infos = [], []
        for i in range(b):
            pred, info = self.predict_episode(
                {name: v[i : i + 1] for name, v in query_feats.items()},
                support_feats[DINO_KEY][i * k : (i + 1) * k],
                support_masks[i],
                self.episode_stream(ids[i]),
            )
            preds.append(pred)
            infos.append(info)
        logits = torch.where(torch.stack(preds), MASK_LOGIT, -MASK_LOGIT)
        if return_intermediates:
            return logits, {"episodes": infos, "image_size": self.config.image_size}
        return logits

    def predict_episode(
        self, query: Mapping[str, Tensor], support_tokens: Tensor, support_masks: Tensor, rng: random.Random
    ) -> tuple[Tensor, dict[str, Any]]:
        """One episode: the (S, S) bool union and its intermediates (§2.1-§2.6)."""
        cfg, size, grid = self.config, self.config.image_size, self.config.grid
        device = support_tokens.device
        masks = reference_masks(support_masks.to(device))
        rows = foreground_rows(masks, grid)
        sim = similarity(
            query[DINO_KEY][0].float(), support_tokens.reshape(-1, support_tokens.shape[-1]).float()
        )
        cost = (1.0 - sim) / 2.0
        match = patch_level_matching(sim, rows, grid, size // grid)
        subsets = sample_subsets(
            len(match.cells), cfg.sample_range_min, cfg.sample_range_max, cfg.max_sample_iterations, rng
        )
        groups = [match.points[torch.tensor(g, dtype=torch.int64)] for g in subsets]
        box = points_box(match.points, size) if cfg.use_box else None
        info: dict[str, Any] = {"rows": rows.cpu(), "matching": match, "subsets": subsets, "box": box}
        proposals = self.generator(query).generate(groups, box, device)
        info["proposals"] = proposals
        if record_count(proposals) == 0:  # the release crashes here (torch.cat([]), §5.7)
            info["kept"] = torch.zeros(0, dtype=torch.int64)
            return torch.zeros(size, size, dtype=torch.bool, device=device), info
        proposal_masks = proposals["masks"]
        scores = instance_scores(proposal_masks, cost, rows, match.points, grid, cfg.alpha, cfg.beta, cfg.exp)
        kept = self.merge(scores, support_masks.shape[0])
        info |= {"scores": scores, "kept": kept}
        return proposal_masks[kept.to(proposal_masks.device)].any(0), info

    def merge(self, scores: Any, shots: int) -> Tensor:
        """The metric filters then the score filter (or top-k) of §2.6: the merged masks' indices."""
        cfg = self.config
        alive = metric_filter(
            [
                (scores.coverage, cfg.coverage_filter),
                (scores.emd_score, cfg.emd_filter),
                (scores.purity, cfg.purity_filter),
            ]
        )
        count = cfg.merging_count(shots)
        if cfg.use_score_filter:
            chosen = score_filter(
                scores.score[alive], cfg.deep_score_filter, cfg.deep_score_norm_filter, count, cfg.score_norm
            )
        else:
            chosen = topk_filter(scores.score[alive], count, cfg.topk_scores_threshold)
        return alive[chosen]

    def generator(self, query: Mapping[str, Tensor]) -> MatcherMaskGenerator:
        """The mask generator on the query's SAM features: SAM 1 through :class:`ReleaseSam1Decoder`
        (the release's prompt mapping), SAM 2 through the backend's ``sam.decode``."""
        size = self.config.image_size
        feats = self.sam.select(dict(query), 0)
        if self.sam.family == "sam1":
            return MatcherMaskGenerator(
                ReleaseSam1Decoder(self.sam, feats, size), size, amg_settings(self.config)
            )

        def decode(coords: Tensor, labels: Tensor, boxes: Tensor | None, multimask: bool):
            out = self.sam.decode(
                feats,
                frame_hw=(size, size),
                point_coords=coords,
                point_labels=labels,
                boxes=boxes,
                multimask_output=multimask,
            )
            return out.logits, out.iou

        return MatcherMaskGenerator(decode, size, amg_settings(self.config))

    def encode(self, images: Tensor, role: str = "query") -> dict[str, Tensor]:
        """(N, 3, S, S) float RGB 0..255 -> the merged features of the encoders that run on
        ``role`` ("query": SAM and DINOv2; "support": DINOv2 only)."""
        encoders = [e for e in self.encoders.values() if role in getattr(e, "roles", ("query", "support"))]
        return {k: v for enc in encoders for k, v in enc.encode(images).items()}

    def forward(
        self, query: Tensor, supports: Tensor, support_masks: Tensor, **kw: Any
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """query (B, 3, S, S) 0..255, supports (B, K, 3, S, S), support_masks (B, K, S, S) {0, 1, 255}."""
        b, k = supports.shape[:2]
        return self.predict(
            self.encode(query),
            self.encode(supports.reshape(b * k, *supports.shape[2:]), role="support"),
            support_masks,
            **kw,
        )


class ReleaseSam1Decoder:
    """SAM 1's prompted decoder as the release's mask generator calls it (§1.5, §1.6): the
    official ``SamPredictor.predict_torch(..., return_logits=True)`` on the query's features, the
    prompts mapped by ``ResizeLongestSide.apply_coords``/``apply_boxes`` in float64 NumPy, the dense
    grid's points then kept float64 (``torch.as_tensor``) and the selected prompts cast to float32.
    (The backend's ``sam.decode`` casts to float32 before mapping: the same up to the last bit.)"""

    def __init__(self, sam: PromptableSAM, features: Mapping[str, Tensor], size: int):
        from segment_anything import SamPredictor

        self.device, self.size = sam.device, size
        self.predictor = SamPredictor(sam.model)
        self.predictor.features = features["sam1.embed"].to(self.device)
        self.predictor.original_size = (size, size)
        self.predictor.input_size = self.predictor.transform.get_preprocess_shape(size, size, sam.input_size)
        self.predictor.is_image_set = True

    def __call__(
        self, coords: Tensor, labels: Tensor, boxes: Tensor | None, multimask: bool
    ) -> tuple[Tensor, Tensor]:
        """coords (N, P, 2) frame pixels (float64: the dense grid), labels (N, P), boxes (N, 4)."""
        frame, transform = (self.size, self.size), self.predictor.transform
        dtype = torch.float64 if coords.dtype == torch.float64 else torch.float32
        points = transform.apply_coords(coords.detach().cpu().double().numpy(), frame)
        in_points = torch.as_tensor(points, dtype=dtype, device=self.device)
        in_boxes = None
        if boxes is not None:
            mapped = transform.apply_boxes(boxes.detach().cpu().double().numpy(), frame)
            in_boxes = torch.as_tensor(mapped, dtype=torch.float32, device=self.device)
        logits, iou, _ = self.predictor.predict_torch(
            in_points, labels.to(self.device), in_boxes, multimask_output=multimask, return_logits=True
        )
        return logits, iou
