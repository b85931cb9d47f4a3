"""PerSAM and PerSAM-F (ICLR 2024, github.com/ZrrSkywalker/Personalize-SAM at a7e8724) on the shared
SAM backend, for 1-way K-shot segmentation (persam-method.md).

PerSAM (§2): the reference cells' mean SAM embedding locates the target on the query (cosine map),
its argmax / argmin become a positive / negative point, SAM's decoder runs once with target-guided
attention and target-semantic prompting (:mod:`baselines.persam_decoder`), then two vanilla
refinement passes (mask input; then box + mask input), each keeping the best predicted IoU.

PerSAM-F (§3): a max/mean target feature, a positive point only, two weights mixing SAM's three
multimask logits fitted on the reference(s) (:mod:`baselines.persam_f`), then two box + mask
refinement passes. No decoder modification.

Frame (*suite*, §5.2.2): the harness's square S x S image; SAM sees it through its own predictor
(1024 input). Logits returned are the final pass's logits at S x S (logit >= 0 foreground).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from baselines.field_method import SAMMethod
from baselines.persam_config import PerSAMConfig
from baselines.persam_f import fit_mixing_weights, mix_logits
from baselines.persam_prior import (
    any_pixel_cells,
    attention_bias,
    cell_features,
    cosine_map,
    mask_box,
    point_prior,
    reference_cells,
    target_feature,
    upsampled_map,
)
from baselines.persam_sam import frame_postprocess, guided_predict
from baselines.sam_backend import PromptableSAM, sam_from_config

EMPTY_LOGIT = -1e4
"""The logit of every pixel of an empty prediction (the suite's fallback, ``empty_reference``)."""


class _Fallback(Exception):
    """An episode the release cannot finish (NaN or a crash there): the suite predicts nothing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PerSAM(SAMMethod, nn.Module):
    """PerSAM (``config.finetune=False``) or PerSAM-F (``True``) with the harness protocol.

    ``predict(query_feats, support_feats, support_masks)`` -> (B, S, S) logits; ``forward`` takes
    images. ``return_intermediates=True`` adds, per episode: the location map ``sim`` (S, S), the
    ``points`` (xy) and labels, ``attn_sim`` (PerSAM), each pass's ``iou``, chosen index and mask,
    the ``boxes``, PerSAM-F's ``weights`` (omega) and ``losses``, and ``fallback`` (None or why the
    episode predicted nothing); over the batch, ``fallbacks`` (their count) and ``prior_fg``
    (B, 1, S, S), the location maps (zeros where none was made), which the report figures show.
    """

    def __init__(self, config: PerSAMConfig, sam: PromptableSAM | None = None) -> None:
        super().__init__()
        self.config = config
        self.sam = sam if sam is not None else sam_from_config(config)

    @property
    def encoders(self) -> dict[str, Any]:
        """SAM's image encoder only: PerSAM and PerSAM-F on one SAM share its cached features."""
        return {"sam": self.sam.encoder(self.config.image_size)}

    @property
    def _embed_key(self) -> str:
        return f"{self.sam.family}.embed"

    def predict(
        self,
        query: Mapping[str, Tensor],
        supports: Mapping[str, Tensor],
        support_masks: Tensor,
        query_mask: Tensor | None = None,
        return_intermediates: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """query: SAM features of B images; supports: of B*K (b-major); support_masks (B, K, S, S)
        in {0, 1, 255} (1 = foreground). -> (B, S, S) logits (and the intermediates)."""
        b, k = support_masks.shape[:2]
        size = self.config.image_size
        logits, steps = [], []
        for i in range(b):
            shots = [self.sam.select(dict(supports), i * k + j) for j in range(k)]
            masks = [support_masks[i, j].to(self.device) == 1 for j in range(k)]
            out, info = self._episode(self.sam.select(dict(query), i), shots, masks)
            logits.append(out.reshape(size, size))
            steps.append(info)
        logits = torch.stack(logits)
        if return_intermediates:
            fallbacks = [s["fallback"] for s in steps if s["fallback"] is not None]
            zeros = torch.zeros(size, size, device=self.device)
            prior = torch.stack([s.get("sim", zeros) for s in steps])[:, None]  # the figures' "FG prior"
            return logits, {
                "episodes": steps,
                "fallbacks": len(fallbacks),
                "prior_fg": prior,
                "image_size": size,
            }
        return logits

    def forward(self, query: Tensor, supports: Tensor, support_masks: Tensor, **kw: Any):
        """query (B, 3, S, S), supports (B, K, 3, S, S) float 0..255, support_masks (B, K, S, S)."""
        enc = self.encoders["sam"]
        b, k = supports.shape[:2]
        return self.predict(
            enc.encode(query), enc.encode(supports.reshape(b * k, *supports.shape[2:])), support_masks, **kw
        )

    # ------------------------------------------------------------------------------- one episode

    def _episode(
        self, query: dict[str, Tensor], shots: list[dict], masks: list[Tensor]
    ) -> tuple[Tensor, dict]:
        info: dict[str, Any] = {"fallback": None}
        try:
            cells = self._reference_cells(masks, info)
            if self.config.finetune:
                return self._persam_f(query, shots, masks, cells, info), info
            return self._persam(query, shots, cells, info), info
        except _Fallback as e:
            info["fallback"] = e.reason
            s = self.config.image_size
            return torch.full((s, s), EMPTY_LOGIT, device=self.device), info

    def _reference_cells(self, masks: list[Tensor], info: dict) -> list[Tensor]:
        cells = [reference_cells(m, self.config.mask_fg_value, self.sam.input_size) for m in masks]
        info["reference_cells"] = [int(c.sum()) for c in cells]
        if self.config.empty_reference == "any-pixel":
            cells = [
                c if c.any() else any_pixel_cells(m, c.shape[0]) for c, m in zip(cells, masks, strict=True)
            ]
        if not any(c.any() for c in cells):
            raise _Fallback("empty-reference")
        return cells

    def _target_and_map(self, query_embed: Tensor, shots: list[dict], cells: list[Tensor], pooling: str):
        """(target feature (C,), cosine map (1, 1, 64, 64)) pooled over the shots (``shot_pooling``)."""
        embeds = [s[self._embed_key][0] for s in shots]
        if self.config.shot_pooling == "union":
            target = target_feature(cell_features(embeds, cells), pooling)
            return target, cosine_map(target, query_embed)
        per_shot = [
            target_feature(cell_features([e], [c]), pooling)
            for e, c in zip(embeds, cells, strict=True)
            if c.any()
        ]
        sims = torch.stack([cosine_map(t, query_embed) for t in per_shot])
        return torch.stack(per_shot).mean(0), sims.mean(0)

    def _location(self, sim64: Tensor, info: dict) -> Tensor:
        s = self.config.image_size
        sim = upsampled_map(sim64, frame_postprocess(self.sam, (s, s)))
        info["sim"] = sim
        return sim

    def _refine(
        self, query: dict, coords: Tensor, labels: Tensor, box: Tensor | None, mask_input: Tensor, info: dict
    ):
        """One vanilla multimask pass; -> (its output, the index of the best predicted IoU)."""
        s = self.config.image_size
        out = self.sam.decode(
            query,
            (s, s),
            coords,
            labels,
            None if box is None else box[None],
            mask_input,
            multimask_output=True,
        )
        best = int(torch.argmax(out.iou[0]))
        info.setdefault("passes", []).append(
            {"iou": out.iou[0], "best": best, "mask": out.logits[0, best] > 0}
        )
        return out, best

    def _box(self, mask: Tensor, info: dict, step: str) -> Tensor:
        box = mask_box(mask)
        if box is None:
            raise _Fallback(f"empty-mask-{step}")
        info.setdefault("boxes", []).append(box)
        return box

    def _persam(self, query: dict, shots: list[dict], cells: list[Tensor], info: dict) -> Tensor:
        s, dev = self.config.image_size, self.device
        target, sim64 = self._target_and_map(query[self._embed_key][0], shots, cells, "mean")
        sim = self._location(sim64, info)
        pos, neg = point_prior(sim)
        coords = torch.stack([pos, neg])[None].float()
        labels = torch.tensor([[1, 0]], device=dev)
        attn_sim = attention_bias(sim, sim64.shape[-1])
        info.update(points=coords[0], labels=labels[0], attn_sim=attn_sim)
        first = guided_predict(
            self.sam,
            query,
            (s, s),
            coords,
            labels,
            False,
            attn_sim,
            target.reshape(1, 1, -1),
            self.config.target_alias,
        )
        info["passes"] = [{"iou": first.iou[0], "best": 0, "mask": first.logits[0, 0] > 0}]
        one, b1 = self._refine(query, coords, labels, None, first.low_res, info)
        box = self._box(one.logits[0, b1] > 0, info, "refine1")
        two, b2 = self._refine(query, coords, labels, box, one.low_res[:, b1 : b1 + 1], info)
        return two.logits[0, b2]

    def _persam_f(
        self, query: dict, shots: list[dict], masks: list[Tensor], cells: list[Tensor], info: dict
    ) -> Tensor:
        s, dev = self.config.image_size, self.device
        target, sim64 = self._target_and_map(query[self._embed_key][0], shots, cells, "max-mean")
        weights = self._fit(shots, masks, cells, target, info)
        pos, _ = point_prior(self._location(sim64, info))
        coords, labels = pos[None, None].float(), torch.ones(1, 1, dtype=torch.long, device=dev)
        info.update(points=coords[0], labels=labels[0])
        first = self.sam.decode(query, (s, s), coords, labels, multimask_output=True)
        mixed = mix_logits(first.logits[0], weights)
        info["passes"] = [{"iou": first.iou[0], "best": None, "mask": mixed > 0}]
        box = self._box(mixed > 0, info, "mixed")
        one, b1 = self._refine(
            query, coords, labels, box, mix_logits(first.low_res[0], weights)[None, None], info
        )
        box = self._box(one.logits[0, b1] > 0, info, "refine1")
        two, b2 = self._refine(query, coords, labels, box, one.low_res[:, b1 : b1 + 1], info)
        return two.logits[0, b2]

    def _fit(
        self, shots: list[dict], masks: list[Tensor], cells: list[Tensor], pooled: Tensor, info: dict
    ) -> Tensor:
        """PerSAM-F's weights (2, 1), fitted on every shot with reference cells. Each shot locates
        itself with the pooled feature (``union``) or with its own (``average-maps``); K = 1: the release."""
        s, cfg, key = self.config.image_size, self.config, self._embed_key
        post = frame_postprocess(self.sam, (s, s))
        logits, targets = [], []
        for shot, mask, c in zip(shots, masks, cells, strict=True):
            if not c.any():
                continue
            own = (
                pooled
                if cfg.shot_pooling == "union"
                else target_feature(cell_features([shot[key][0]], [c]), "max-mean")
            )
            pos, _ = point_prior(upsampled_map(cosine_map(own, shot[key][0]), post))
            out = self.sam.decode(shot, (s, s), pos[None, None].float(), torch.ones(1, 1, dtype=torch.long))
            logits.append(out.logits[0].flatten(1))
            targets.append(mask.flatten().float())
        fit = fit_mixing_weights(logits, targets, cfg.lr, cfg.iters, cfg.weight_decay, cfg.adam_eps)
        info.update(weights=torch.cat((1 - fit.weights.sum(0), fit.weights[:, 0])), losses=fit.losses)
        return fit.weights
