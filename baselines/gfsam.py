"""GF-SAM ("Bridge the Points: Graph-based Few-shot Segment Anything Semantically", NeurIPS 2024),
rebuilt from its release (github.com/ANDYZAQ/GF-SAM at f227d1d; the specification is
/work/shared/docs/gfsam-method.md) on the suite's shared SAM backend and DINOv2 tokens.

DINOv2 ViT-L/14 pre-norm tokens of the query and the K supports give foreground and background
priors; up to 128 grid cells become single-point SAM prompts; the point masks are clustered by a
"mask covers point" graph and kept by two gates; their union is the prediction. The decision logic
is :mod:`baselines.gfsam_logic`, the settings :mod:`baselines.gfsam_config`; this module is the
harness's model.

The release's output is a binary mask m; :meth:`GFSAM.predict` returns it as logits
``+10`` (m = 1) / ``-10`` (m = 0), so ``logit >= 0`` and every probability cut in (0, 1) give m.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from baselines import gfsam_logic as logic
from baselines.dinov2_tokens import DINOv2TokenEncoder, dinov2_from_config
from baselines.field_method import SAMDINOv2Method
from baselines.gfsam_config import GFSAMConfig
from baselines.sam_backend import PromptableSAM, sam_from_config
from fssam.dinov2 import DINOv2Backbone
from fssam.errors import FSSAMError

MASK_LOGIT = 10.0  # the binary prediction as logits: +10 foreground, -10 background
TOKEN_KEY = "dinov2.prenorm"


def switches(config: GFSAMConfig) -> logic.Switches:
    """The decision-logic switches of a configuration."""
    return logic.Switches(config.token_norm, config.cls_score, config.fallback_pick, config.point_position)


class GFSAM(SAMDINOv2Method, nn.Module):
    """GF-SAM with the harness's protocol (``benchmark.methods.base.FewShotMethod``).

    Encoders: ``sam`` (run on the queries only) and ``dinov2`` (pre-norm tokens). ``predict`` runs
    the release's decision logic episode by episode (batch elements are independent).
    """

    def __init__(
        self, config: GFSAMConfig, sam: PromptableSAM | None = None, dino: DINOv2Backbone | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.sam = sam if sam is not None else sam_from_config(config)
        self.dino = dino if dino is not None else dinov2_from_config(config)
        if self.dino.input_size != config.dinov2_input_size:
            raise FSSAMError(
                f"dinov2_input_size: {config.dinov2_input_size}, but the DINOv2 given was built for "
                f"{self.dino.input_size}"
            )

    @property
    def encoders(self) -> dict[str, Any]:
        resize = "bilinear-antialias" if self.config.dinov2_antialias else "bilinear"
        sam = self.sam.encoder(self.image_size, roles=("query",))  # SAM prompts the query alone
        return {"sam": sam, "dinov2": DINOv2TokenEncoder(self.dino, resize)}

    @torch.no_grad()
    def predict(
        self,
        query_feats: Mapping[str, Tensor],
        support_feats: Mapping[str, Tensor],
        support_masks: Tensor,
        query_mask: Tensor | None = None,
        return_intermediates: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """(B, S, S) logits, +10 where the release's mask is 1, else -10.

        query_feats: the encoders' features of B queries; support_feats: of B*K supports (b-major);
        support_masks: (B, K, S, S) in {0, 1, 255} (255, PASCAL's boundary, counts as 0 as in the
        release's loader). ``query_mask`` is ignored. With ``return_intermediates``, also a dict:
        ``prior_fg`` (B, 1, g, g) A_mean, and ``episodes``, one dict per batch element (priors,
        points, point_labels, coords, masks, clusters, growth, consistency, gates, fallback).
        """
        b, k, size = support_masks.shape[0], support_masks.shape[1], self.image_size
        tokens_q, tokens_s = query_feats[TOKEN_KEY], support_feats[TOKEN_KEY]
        if tokens_s.shape[0] != b * k:
            raise FSSAMError(f"expected {b * k} support feature sets, got {tokens_s.shape[0]}")
        masks = (support_masks == 1).float().to(tokens_q.device)
        sam_feats = {n: v for n, v in query_feats.items() if not n.startswith("dinov2.")}
        preds, episodes = [], []
        for i in range(b):
            one = self.sam.select(sam_feats, i)

            def decode(coords: Tensor, labels: Tensor, one: dict[str, Tensor] = one) -> Tensor:
                out = self.sam.decode(
                    one, (size, size), point_coords=coords, point_labels=labels, multimask_output=False
                )
                return out.logits

            pred, inter = logic.run_episode(
                tokens_q[i], tokens_s[i * k : (i + 1) * k], masks[i], decode, switches(self.config)
            )
            preds.append(pred)
            episodes.append(inter)
        logits = torch.where(torch.stack(preds), MASK_LOGIT, -MASK_LOGIT).float()
        if not return_intermediates:
            return logits
        prior_fg = torch.stack([e["priors"].a_mean[None] for e in episodes])
        return logits, {"prior_fg": prior_fg, "episodes": episodes, "image_size": size}

    def forward(
        self, query: Tensor, supports: Tensor, support_masks: Tensor, **kw: Any
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """query (B, 3, S, S) float 0..255, supports (B, K, 3, S, S), support_masks (B, K, S, S) in
        {0, 1, 255} -> (B, S, S) logits (the encoders, then :meth:`predict`)."""
        b, k = supports.shape[:2]
        enc = self.encoders
        flat = supports.reshape(b * k, *supports.shape[2:])
        query_feats = {**enc["sam"].encode(query), **enc["dinov2"].encode(query)}
        return self.predict(query_feats, enc["dinov2"].encode(flat), support_masks, **kw)
