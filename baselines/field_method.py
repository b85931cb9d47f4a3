"""The harness protocol's plumbing shared by the field's SAM methods (GF-SAM, PerSAM(-F), Matcher).

A model mixes in :class:`SAMMethod` (SAM only) or :class:`SAMDINOv2Method` (SAM and DINOv2) and
keeps its ``config`` (``image_size``, ``image_resize``, ``seed``), ``sam`` (a
:class:`~baselines.sam_backend.PromptableSAM`) and ``dino`` (a DINOv2 backbone); the mixin gives
the properties the harness reads (``benchmark.methods.base.FewShotMethod``).
"""

from __future__ import annotations

import torch

from baselines.dinov2_tokens import dinov2_weights_id


class SAMMethod:
    """``image_size``, ``image_resize``, ``device``, ``random_init`` and ``weight_hashes`` of a
    method on one SAM."""

    @property
    def image_size(self) -> int:
        """Side S of the square frame the harness resizes images to."""
        return self.config.image_size

    @property
    def image_resize(self) -> str:
        """How the loader resizes images to S: "pil-bilinear" (HSNet's PIL resize) or "bilinear"."""
        return self.config.image_resize

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def random_init(self) -> bool:
        return bool(self.sam.random_init)

    def weight_hashes(self) -> dict[str, str]:
        return {"sam": self.sam.weights_id()}


class SAMDINOv2Method(SAMMethod):
    """:class:`SAMMethod` for a method on SAM and DINOv2 (random DINOv2 weights: ``seed + 1``)."""

    @property
    def random_init(self) -> bool:
        return bool(self.sam.random_init or self.dino.random_init)

    def weight_hashes(self) -> dict[str, str]:
        return super().weight_hashes() | {"dinov2": dinov2_weights_id(self.dino, self.config.seed)}
