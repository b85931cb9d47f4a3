"""FSSAM: the whole pipeline of spec section 1 on the official sam2 modules.

Frozen encoders and the episode computation are separate steps, so that a harness can encode every
image once and reuse the features across variants and episodes::

    q = model.encode_images(query)                 # (B, 3, S, S) float RGB 0..255
    s = model.encode_images(supports.flatten(0, 1))  # (B*K, 3, S, S), b-major
    logits = model.predict(q, s, support_masks)    # (B, K, S, S) in {0, 1, 255} -> (B, S, S)

``model(query, supports, support_masks)`` does both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fssam.config import FSSAMConfig
from fssam.dinov2 import build_dinov2
from fssam.errors import FSSAMError
from fssam.finetune import TrainableSAM2
from fssam.imr import iterative_memory_refinement
from fssam.ops import resize
from fssam.priors import pseudo_prompt_priors
from fssam.sam2_adapter import (
    PREPROCESSING_VERSION,
    MaskMemory,
    SAM2Features,
    SAM2ImageEncoder,
    autocast_context,
    decode,
    effective_precision,
    encode_image,
    flatten_levels,
    memory_tokens,
    module_sha256,
    sam2_from_config,
    split_shots,
    weights_id,
)
from fssam.scma import Calibration, MemoryLayout, memory_attention
from fssam.stages import SharedStages, run_stage


@dataclass
class EncodedImages:
    """Frozen features of N images: SAM 2 FPN levels and, when the prior needs them, DINOv2 tokens.

    ``sam2.levels``: (N, 32, S/4, S/4), (N, 64, S/8, S/8), (N, 256, S/16, S/16); ``dino``: (N, C, g, g).
    """

    sam2: SAM2Features
    dino: Tensor | None = None

    def __len__(self) -> int:
        return self.sam2.top.shape[0]

    def select(self, index: Tensor | slice | list[int]) -> EncodedImages:
        return EncodedImages(self.sam2.select(index), None if self.dino is None else self.dino[index])

    @staticmethod
    def cat(items: list[EncodedImages]) -> EncodedImages:
        dino = None if items[0].dino is None else torch.cat([it.dino for it in items])
        return EncodedImages(SAM2Features.cat([it.sam2 for it in items]), dino)

    def to(self, device: torch.device | str) -> EncodedImages:
        return EncodedImages(
            SAM2Features([x.to(device) for x in self.sam2.levels]),
            None if self.dino is None else self.dino.to(device),
        )

    def to_tensors(self) -> dict[str, Tensor]:
        """Flat dict of tensors (for safetensors / torch.save caches)."""
        out = {f"sam2.{i}": x.contiguous() for i, x in enumerate(self.sam2.levels)}
        if self.dino is not None:
            out["dino"] = self.dino.contiguous()
        return out

    @staticmethod
    def from_tensors(d: Mapping[str, Tensor]) -> EncodedImages:
        levels = [d[f"sam2.{i}"] for i in range(sum(k.startswith("sam2.") for k in d))]
        return EncodedImages(SAM2Features(levels), d.get("dino"))

    @staticmethod
    def coerce(x: EncodedImages | Mapping[str, Tensor]) -> EncodedImages:
        """Accept features as EncodedImages or as the flat dict the encoders return (``to_tensors``)."""
        return x if isinstance(x, EncodedImages) else EncodedImages.from_tensors(x)


class DINOv2PriorEncoder:
    """The DINOv2 backbone of the priors as a cacheable encoder (the harness's ``FrozenEncoder``).

    ``encode``: (N, 3, S, S) float RGB 0..255 at SAM 2's image size S -> ``{"dino": (N, C, g, g)}``.
    The backbone resizes S to its own input size, so both sizes of that chain are in ``identity()``.
    """

    def __init__(self, dino: nn.Module, source_size: int, precision: str = "auto"):
        self.dino, self.source_size, self.precision = dino, source_size, precision

    @property
    def device(self) -> torch.device:
        return next(self.dino.parameters()).device

    def identity(self) -> dict[str, Any]:
        if not hasattr(self.dino, "_fss_sha256"):
            self.dino._fss_sha256 = module_sha256(self.dino)
        return {
            "encoder": f"dinov2-{self.dino.arch}",
            "weights": self.dino._fss_sha256,
            "resize_chain": [self.source_size, self.dino.input_size],  # loader -> S, backbone -> input size
            "input_size": self.dino.input_size,
            "preprocessing": PREPROCESSING_VERSION,
            "precision": effective_precision(self.device, self.precision),
        }

    @torch.no_grad()
    def encode(self, images: Tensor) -> dict[str, Tensor]:
        images = images.to(self.device)
        with autocast_context(images.device, self.precision):
            return {"dino": self.dino(images).float()}


class FSSAM(TrainableSAM2):
    """FSSAM (ICML 2025) with every ablation switch of :class:`FSSAMConfig`.

    Sub-modules keep the authors' names (``sam2``: the official ``SAM2Base``; ``dino``: the DINOv2
    backbone), so the authors' checkpoints map onto ``state_dict`` directly (see fssam/checkpoint.py).
    """

    def __init__(self, config: FSSAMConfig, sam2: nn.Module | None = None, dino: nn.Module | None = None):
        super().__init__()
        self.config = config
        if sam2 is None:
            sam2 = sam2_from_config(config)
        if dino is None and config.needs_dinov2:
            dino = build_dinov2(
                config.dinov2,
                checkpoint=config.dinov2_checkpoint,
                random_init=config.random_init,
                input_size=config.dinov2_input_size,
                seed=config.seed + 1,
            )
        if sam2.image_size != config.image_size:
            raise FSSAMError(f"SAM 2 model runs at {sam2.image_size} px but image_size={config.image_size}")
        self.sam2 = sam2
        self.dino = dino
        self.freeze()

    # ---------------------------------------------------------------------------------- provenance

    @property
    def random_init(self) -> bool:
        """True if any weights are random (a random-init model must be labelled everywhere)."""
        return bool(getattr(self.sam2, "fss_random_init", False) or getattr(self.dino, "random_init", False))

    def weight_hashes(self) -> dict[str, str]:
        """sha256 of the weight files, or ``random-init:...`` identifiers (seed and torch version)."""
        out = {"sam2": weights_id(self.sam2, self.config.seed)}
        if self.dino is not None:
            out["dinov2"] = (
                self.dino.weights_sha256 or f"random-init:seed{self.config.seed + 1}:torch{torch.__version__}"
            )
        return out | self.finetuned_hashes()

    @property
    def image_size(self) -> int:
        """S: the side images and masks are resized to before the encoders."""
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return self.sam2.device

    @property
    def encoders(self) -> dict[str, SAM2ImageEncoder | DINOv2PriorEncoder]:
        """The frozen encoders, by name: ``sam2`` always, ``dino`` when the prior needs DINOv2.

        Their outputs are a pure function of the image and ``identity()``, so a harness may cache
        them; ``predict`` takes the merged dicts of their outputs.
        """
        out: dict[str, Any] = {"sam2": SAM2ImageEncoder(self.sam2, self.config.precision)}
        if self.dino is not None:
            out["dino"] = DINOv2PriorEncoder(self.dino, self.image_size, self.config.precision)
        return out

    def feature_identity(self) -> dict[str, dict[str, Any]]:
        """What ``encode_images``' outputs depend on, per encoder (the feature-cache keys)."""
        return {name: enc.identity() for name, enc in self.encoders.items()}

    @torch.no_grad()
    def encode_sam2(self, images: Tensor) -> SAM2Features:
        """SAM 2 frozen features only. images: (N, 3, H, W) float RGB 0..255."""
        images = images.to(self.sam2.device)
        with self._autocast(images.device):
            return encode_image(self.sam2, images)

    @torch.no_grad()
    def encode_dino(self, images: Tensor) -> Tensor:
        """DINOv2 patch tokens only, (N, C, g, g)."""
        if self.dino is None:
            raise FSSAMError(f"prior={self.config.prior!r} uses no DINOv2 backbone")
        images = images.to(self.sam2.device)
        with self._autocast(images.device):
            return self.dino(images).float()

    # ------------------------------------------------------------------------------------ inference

    def _autocast(self, device: torch.device):
        return autocast_context(device, self.config.precision)

    def encode_images(self, images: Tensor) -> EncodedImages:
        """Frozen encoders. images: (N, 3, H, W) float RGB 0..255 (resized to the model sizes)."""
        return EncodedImages(
            self.encode_sam2(images), self.encode_dino(images) if self.dino is not None else None
        )

    def predict(
        self,
        query: EncodedImages | Mapping[str, Tensor],
        supports: EncodedImages | Mapping[str, Tensor],
        support_masks: Tensor,
        query_mask: Tensor | None = None,
        return_intermediates: bool = False,
        stages: SharedStages | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """Foreground logits of the queries.

        Args:
            query: features of B query images (EncodedImages, or the merged dict of ``encoders``'
                outputs: ``sam2.0..2`` and ``dino``).
            supports: features of B*K support images, ordered (b0k0, b0k1, ..., b1k0, ...).
            support_masks: (B, K, S, S) in {0, 1, 255}; 255 counts as background.
            query_mask: (B, S, S) in {0, 1, 255}; only for ``prior="oracle"``.
            stages: shared stages (fssam/stages.py): the support memory, priors, pseudo-query
                memories and IMR are taken from there when another variant already computed them
                on the same batch (identical results), else computed and offered to it.
        Returns:
            (B, S, S) logits, and with ``return_intermediates`` a dict of priors, memories and IMR steps.
        """
        cfg, sam = self.config, self.sam2
        query, supports = EncodedImages.coerce(query), EncodedImages.coerce(supports)
        b, k, size = support_masks.shape[0], support_masks.shape[1], cfg.image_size
        if tuple(support_masks.shape[-2:]) != (size, size):
            raise FSSAMError(f"support masks must be {size}x{size}, got {tuple(support_masks.shape[-2:])}")
        if len(supports) != b * k or len(query) != b:
            raise FSSAMError(
                f"expected {b} query and {b * k} support feature sets, got {len(query)}, {len(supports)}"
            )
        device = query.sam2.top.device
        s_mask = (support_masks.to(device) == 1).float()
        with self._autocast(device):
            inter: dict[str, Any] = {}
            s_mem = self.mask_memory(
                "support_memory", supports.sam2, s_mask.reshape(b * k, 1, size, size), stages
            )
            q_mem = self._query_memory(query, supports, s_mask, s_mem, query_mask, inter, stages)
            memories = split_shots(s_mem, b, k) + ([q_mem] if q_mem is not None else [])
            memory, memory_pos, n_ptr = memory_tokens(sam, memories)
            h, w = s_mem.features.shape[-2:]
            layout = MemoryLayout(
                shots=k,
                tokens_per_memory=h * w,
                ptr_tokens=n_ptr // len(memories),
                has_query=q_mem is not None,
            )
            calibration = None
            if cfg.scma and q_mem is not None:
                grid_masks = F.interpolate(s_mask, size=(h, w), mode="nearest")
                calibration = Calibration(grid_masks, cfg.scma_scale, released=cfg.kshot_mode == "released")
            vision_feats, vision_pos, _ = flatten_levels(sam, query.sam2, positions="top")
            pix = memory_attention(
                sam.memory_attention,
                vision_feats[-1],
                vision_pos[-1],
                memory,
                memory_pos,
                num_obj_ptr_tokens=n_ptr,
                layout=layout,
                # the intended multi-shot averaging is part of the SCMA branch, as in the authors' code
                average=calibration is not None and cfg.kshot_mode == "intended",
                average_pointers=cfg.kshot_pointers == "average",
                calibration=calibration,
            )
            pix = pix.permute(1, 2, 0).reshape(b, sam.hidden_dim, h, w)
            out = decode(sam, pix, query.sam2)
        logits = out.logits.float()
        if not return_intermediates:
            return logits
        if "imr_disc_priors" in inter:  # the Disc prior after each IMR iteration, at image size (figures)
            inter["imr_disc_priors"] = [resize(p, size) for p in inter["imr_disc_priors"]]
        inter.update(
            support_memory=s_mem.features.reshape(b, k, *s_mem.features.shape[1:]),
            memory=None if q_mem is None else q_mem.features,
            multimask_logits=out.multimask_logits,
            ious=out.ious,
            object_score_logits=out.object_score_logits,
        )
        return logits, inter

    def _query_memory(
        self,
        query: EncodedImages,
        supports: EncodedImages,
        s_mask: Tensor,
        s_mem: MaskMemory,
        query_mask: Tensor | None,
        inter: dict[str, Any],
        stages: SharedStages | None = None,
    ) -> MaskMemory | None:
        """The pseudo-query memory for the configured prior (None for ``prior="none"``)."""
        cfg = self.config
        b, k, size = s_mask.shape[0], s_mask.shape[1], cfg.image_size
        if cfg.prior == "none":
            return None
        if cfg.prior == "oracle":
            if query_mask is None:
                raise FSSAMError("prior='oracle' needs the query's ground-truth mask (query_mask=...)")
            gt = (query_mask.to(s_mask.device) == 1).float().reshape(b, 1, size, size)
            inter.update(prior_fg=gt, prior_disc=gt)
            return self.mask_memory("oracle_memory", query.sam2, gt, stages)
        if query.dino is None or supports.dino is None:
            raise FSSAMError(
                f"prior={cfg.prior!r} needs DINOv2 features; encode the images with DINOv2 enabled"
            )
        s_dino = supports.dino.reshape(b, k, *supports.dino.shape[1:])
        dino = self.encoders["dino"].identity()  # what the priors depend on besides the batch
        prior_fg, prior_disc = run_stage(
            stages,
            "priors",
            {"dino": dino, "image_size": size},
            lambda: pseudo_prompt_priors(query.dino.float(), s_dino.float(), s_mask, size),
        )
        inter.update(prior_fg=prior_fg, prior_disc=prior_disc)
        fg_mem = self.mask_memory("fg_memory", query.sam2, prior_fg, stages, dino=dino)
        if cfg.prior == "fg":
            inter.update(fg_memory=fg_mem.features)
            return fg_mem
        disc_mem = self.mask_memory("disc_memory", query.sam2, prior_disc, stages, dino=dino)
        imr = run_stage(
            stages,
            "imr",
            self.sam2_stage_params() | {"dino": dino, "iters": cfg.imr_iters, "version": cfg.imr_version},
            lambda: iterative_memory_refinement(
                fg_mem.features,
                disc_mem.features,
                s_mem.features.reshape(b, k, *s_mem.features.shape[1:]),
                s_mask,
                prior_fg,
                prior_disc,
                iters=cfg.imr_iters,
                version=cfg.imr_version,
            ),
        )
        inter.update(
            fg_memory=fg_mem.features,
            disc_memory=disc_mem.features,
            imr_disc_memories=imr.disc_memories,
            imr_weights=imr.weights,
            imr_disc_priors=imr.disc_priors,  # at image size when returned (below)
        )
        return MaskMemory(imr.memory, disc_mem.pos, disc_mem.obj_ptr)

    def forward(
        self,
        query: Tensor,
        supports: Tensor,
        support_masks: Tensor,
        query_mask: Tensor | None = None,
        return_intermediates: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """query (B,3,S,S) and supports (B,K,3,S,S) float RGB 0..255, support_masks (B,K,S,S) in {0,1,255}
        -> (B,S,S) foreground logits (and the intermediates when asked)."""
        b, k = supports.shape[:2]
        q = self.encode_images(query)
        s = self.encode_images(supports.reshape(b * k, *supports.shape[2:]))
        return self.predict(
            q, s, support_masks, query_mask=query_mask, return_intermediates=return_intermediates
        )

    @classmethod
    def from_authors_checkpoint(
        cls,
        path: str | Path,
        sam2_config: str = "sam2_hiera_s",
        image_size: int = 512,
        dinov2: str = "vitb14",
        **switches: Any,
    ) -> FSSAM:
        """Build FSSAM and load a checkpoint saved by the authors' train.py (see fssam/checkpoint.py)."""
        from fssam.checkpoint import load_authors_checkpoint

        return load_authors_checkpoint(cls, path, sam2_config, image_size, dinov2, **switches)
