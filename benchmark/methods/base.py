"""What the harness knows of a few-shot segmentation method: two small protocols, and a third for
the methods that can be fine-tuned.

The harness never names a concrete model class. It asks a method for its frozen encoders, caches
what they compute per image, and hands the merged features of an episode to ``predict``::

    feats = {k: v for enc in method.encoders.values() for k, v in enc.encode(images).items()}
    logits = method.predict(query_feats, support_feats, support_masks, query_mask=...)  # (B, S, S)

FSSAM (``fssam.FSSAM``), the naive SAM 2 baseline (``baselines.naive_sam2.NaiveSAM2``) and the
model-free references (``benchmark.methods.reference``) satisfy these protocols structurally: the
method packages never import the harness. A method whose registry entry declares the ``trainable``
capability (:class:`benchmark.methods.registry.Trainable`) builds a :class:`TrainableMethod`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

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
        computed on the same batch); to one whose ``predict`` has an ``episode_ids`` parameter,
        the B episodes' manifest ids. Returns (B, S, S) foreground logits (logit >= 0 is FG).

    Optional: ``reads_masks = False`` says the method reads only the masks' shape, never their
    values; the harness then gives it zero-filled masks of that shape and reads no label for them.
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


@runtime_checkable
class TrainableMethod(FewShotMethod, Protocol):
    """A :class:`FewShotMethod` that ``fssbench train`` fine-tunes: a ``torch.nn.Module`` whose
    ``forward(query_images, support_images, support_masks, query_mask=...)`` takes (B, 3, S, S),
    (B, K, 3, S, S) and (B, K, S, S) and returns (B, S, S) logits.

    ``trainable_modules()``: name -> module, what training changes (one optimizer group each, in
    this order; the fine-tuned checkpoint holds exactly these).
    ``train_mode()``: exactly those modules get gradients and train mode (dropout); everything else
    is frozen and in eval mode. Returns the trainable parameters.
    """

    def trainable_modules(self) -> Mapping[str, nn.Module]: ...

    def train_mode(self) -> list[nn.Parameter]: ...
