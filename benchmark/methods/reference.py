"""Registration of the model-free reference predictors (``baselines.trivial``): sanity floors.

``mean_colour`` sees raw pixels through an ``rgb`` encoder that is not cached (it only resizes);
``all_foreground`` needs no pixels, so it has no encoder and the harness decodes nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import Tensor

from benchmark.methods.registry import BuildContext, MethodEntry


class RGBEncoder:
    """Pixels as features: (N, 3, S, S) -> {"rgb": (N, 3, S, S)} (nothing to cache)."""

    cacheable = False

    def __init__(self, image_size: int):
        self.image_size = image_size

    def identity(self) -> dict[str, Any]:
        return {"encoder": "rgb", "image_size": self.image_size}

    def encode(self, images: Tensor) -> dict[str, Tensor]:
        return {"rgb": images.float()}


class ReferencePredictor:
    """A pixel-level function (query (B,3,S,S), supports (B,K,3,S,S), masks (B,K,S,S)) as a method.

    With ``pixels=False`` the method has no encoder and the function gets ``None`` for the query
    and the supports (it reads the shapes from the masks)."""

    random_init = False

    def __init__(
        self,
        fn: Callable[[Tensor | None, Tensor | None, Tensor], Tensor],
        image_size: int,
        device: torch.device,
        pixels: bool = True,
    ):
        self.fn, self._size, self._device, self.pixels = fn, image_size, device, pixels

    @property
    def image_size(self) -> int:
        return self._size

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def reads_masks(self) -> bool:
        """Without pixels the function reads only the masks' shape (``all_foreground``): the harness
        then passes zero-filled views of that shape (:func:`benchmark.evaluation.loader.load_episode`)."""
        return self.pixels

    @property
    def encoders(self) -> dict[str, RGBEncoder]:
        return {"rgb": RGBEncoder(self._size)} if self.pixels else {}

    def weight_hashes(self) -> dict[str, str]:
        return {}

    def predict(self, query, supports, support_masks: Tensor, **extras: Any):
        b, k = support_masks.shape[:2]
        q = s = None
        if self.pixels:
            q = query["rgb"].to(self._device)
            s = supports["rgb"].to(self._device).reshape(b, k, *q.shape[1:])
        masks = support_masks if support_masks.device == self._device else support_masks.to(self._device)
        logits = self.fn(q, s, masks)
        return (logits, {}) if extras.get("return_intermediates") else logits


def _entry(name: str, description: str, pixels: bool = True) -> MethodEntry:
    def build(settings: dict[str, Any], ctx: BuildContext) -> ReferencePredictor:
        from baselines import trivial

        return ReferencePredictor(getattr(trivial, name), int(settings["image_size"]), ctx.device, pixels)

    def validate(settings: dict[str, Any]) -> None:
        size = settings["image_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"image_size must be a positive integer, got {size!r}")

    return MethodEntry(
        name=name,
        description=description,
        defaults={"image_size": 512},
        build=build,
        weight_sources=lambda settings: {},
        validate=validate,
    )


MEAN_COLOUR = _entry("mean_colour", "reference: nearest support colour prototype (no model)")
ALL_FOREGROUND = _entry("all_foreground", "reference: every pixel foreground (no model)", pixels=False)
