"""What the harness knows of a few-shot segmentation method: two small protocols.

The harness never names a concrete model class. It asks a method for its frozen encoders, caches
what they compute per image, and hands the merged features of an episode to ``predict``::

    feats = {k: v for enc in method.encoders.values() for k, v in enc.encode(images).items()}
    logits = method.predict(query_feats, support_feats, support_masks, query_mask=...)  # (B, S, S)

FSSAM (``fssam.FSSAM``), the naive SAM 2 baseline (``baselines.naive_sam2.NaiveSAM2``) and the
model-free references (``benchmark.methods.reference``) satisfy these protocols structurally: the
method packages never import the harness.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import Tensor

Features = dict[str, "Tensor"]
"""Named feature tensors with the images along dim 0, e.g. ``{"sam2.2": (N, 256, S/16, S/16)}``."""


@runtime_checkable
class FrozenEncoder(Protocol):
    """A frozen, deterministic image encoder whose outputs may be cached per image.

    ``encode``: (N, 3, S, S) float RGB 0..255 at the method's image size -> :data:`Features`.
    ``identity()``: a JSON-able dict naming everything the output depends on besides the image
    (architecture, weight hash, every resize in the chain, precision, preprocessing version); it is
    the feature-cache key. An encoder may set ``cacheable = False`` (cheap ones: raw pixels).
    """

    def identity(self) -> dict[str, Any]: ...

    def encode(self, images: Tensor) -> Features: ...


@runtime_checkable
class FewShotMethod(Protocol):
    """A 1-way K-shot segmentation method, as the harness drives it.

    ``predict(query, supports, support_masks, **episode_extras)``:
        query: merged encoder features of B query images; supports: of B*K support images
        (b-major); support_masks: (B, K, S, S) uint8 in {0, 1, 255}. Extras the harness passes:
        ``query_mask`` (B, S, S), the query's target at model size (only an oracle may use it),
        ``return_intermediates`` (figures) and, to a method whose ``predict`` has a ``stages``
        parameter, ``stages`` (:class:`fssam.stages.SharedStages`: reuse what another variant
        computed on the same batch). Returns (B, S, S) foreground logits (logit >= 0 is FG).
    """

    @property
    def encoders(self) -> Mapping[str, FrozenEncoder]: ...

    @property
    def image_size(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def random_init(self) -> bool: ...

    def weight_hashes(self) -> dict[str, str]: ...

    def predict(
        self, query: Features, supports: Features, support_masks: Tensor, **episode_extras: Any
    ) -> Tensor | tuple[Tensor, dict[str, Any]]: ...
