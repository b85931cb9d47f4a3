"""Naive SAM 2 for few-shot segmentation (FSSAM spec section 7, the paper's Fig. 1(b)).

The K supports are encoded with their ground-truth masks as conditioning-frame memories, the query's
stride-16 features attend to them with SAM 2's plain memory attention, and the mask decoder
predicts. It shares FSSAM's SAM 2 adapter (fssam/sam2_adapter.py) and frozen-feature format, so the
harness can score both on the same cached features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fssam.config import FSSAMConfig
from fssam.errors import FSSAMError
from fssam.finetune import TrainableSAM2
from fssam.model import EncodedImages
from fssam.sam2_adapter import (
    SAM2ImageEncoder,
    autocast_context,
    decode,
    encode_image,
    flatten_levels,
    memory_tokens,
    sam2_from_config,
    split_shots,
    weights_id,
)
from fssam.scma import memory_attention
from fssam.stages import SharedStages


class NaiveSAM2(TrainableSAM2):
    """Supports as SAM 2 conditioning memories; the query attends to them; decode.

    Uses the SAM 2 fields of :class:`FSSAMConfig` (version, size, image size, checkpoint,
    ``random_init``, precision); the FSSAM switches do not apply.
    """

    def __init__(self, config: FSSAMConfig, sam2: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.sam2 = sam2 or sam2_from_config(config)
        self.freeze()

    @property
    def random_init(self) -> bool:
        return bool(getattr(self.sam2, "fss_random_init", False))

    def weight_hashes(self) -> dict[str, str]:
        return {"sam2": weights_id(self.sam2, self.config.seed)} | self.finetuned_hashes()

    dino = None  # the baseline has no priors

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return self.sam2.device

    @property
    def encoders(self) -> dict[str, SAM2ImageEncoder]:
        """SAM 2's image encoder only (the same identity, and so the same cached features, as FSSAM's)."""
        return {"sam2": SAM2ImageEncoder(self.sam2, self.config.precision)}

    def feature_identity(self) -> dict[str, dict[str, Any]]:
        return {name: enc.identity() for name, enc in self.encoders.items()}

    @torch.no_grad()
    def encode_sam2(self, images: Tensor):
        images = images.to(self.sam2.device)
        with autocast_context(images.device, self.config.precision):
            return encode_image(self.sam2, images)

    def encode_images(self, images: Tensor) -> EncodedImages:
        """(N, 3, H, W) float RGB 0..255 -> SAM 2 features."""
        return EncodedImages(self.encode_sam2(images))

    def support_memory(
        self, supports: EncodedImages, support_masks: Tensor, stages: SharedStages | None = None
    ) -> tuple[Tensor, Tensor, int]:
        """Memory tokens [S_1..S_K ; pointers] (M, B, 64), their positions, and the pointer-token count.

        The support memories are the same stage as FSSAM's, so the two share them on one batch."""
        sam = self.sam2
        b, k, size = support_masks.shape[0], support_masks.shape[1], self.config.image_size
        s_mask = (support_masks.to(supports.sam2.top.device) == 1).float().reshape(b * k, 1, size, size)
        mem = self.mask_memory("support_memory", supports.sam2, s_mask, stages)
        return memory_tokens(sam, split_shots(mem, b, k))

    def predict(
        self,
        query: EncodedImages | Mapping[str, Tensor],
        supports: EncodedImages | Mapping[str, Tensor],
        support_masks: Tensor,
        query_mask: Tensor | None = None,
        return_intermediates: bool = False,
        stages: SharedStages | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """(B, S, S) foreground logits; same arguments as :meth:`fssam.FSSAM.predict`."""
        sam, size = self.sam2, self.config.image_size
        query, supports = EncodedImages.coerce(query), EncodedImages.coerce(supports)
        b, k = support_masks.shape[:2]
        if len(supports) != b * k:
            raise FSSAMError(f"expected {b * k} support feature sets, got {len(supports)}")
        with autocast_context(query.sam2.top.device, self.config.precision):
            memory, memory_pos, n_ptr = self.support_memory(supports, support_masks, stages)
            feats, pos, sizes = flatten_levels(sam, query.sam2, positions="top")
            pix = memory_attention(sam.memory_attention, feats[-1], pos[-1], memory, memory_pos, n_ptr)
            h, w = sizes[-1]
            out = decode(sam, pix.permute(1, 2, 0).reshape(b, sam.hidden_dim, h, w), query.sam2)
        if return_intermediates:
            return out.logits, {
                "ious": out.ious,
                "multimask_logits": out.multimask_logits,
                "image_size": size,
            }
        return out.logits

    def forward(self, query: Tensor, supports: Tensor, support_masks: Tensor, **kw: Any):
        b, k = supports.shape[:2]
        return self.predict(
            self.encode_images(query),
            self.encode_images(supports.reshape(b * k, *supports.shape[2:])),
            support_masks,
            **kw,
        )
