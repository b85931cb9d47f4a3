"""Frozen features of an episode's images for one method, through the feature cache.

For each image and each of the method's encoders, the cache is asked for (encoder identity, image
SHA-256); only on a miss is the image decoded (once, whatever the number of encoders) and encoded.
"""

from __future__ import annotations

import torch

from benchmark.episode_loader import EpisodeImage, loader_identity
from benchmark.feature_cache import FeatureCache
from benchmark.methods.base import Features, FewShotMethod


class Featurizer:
    """``encode(images) -> Features``: the method's encoders' outputs, images along dim 0."""

    def __init__(self, method: FewShotMethod, cache: FeatureCache):
        self.method, self.cache = method, cache
        self.encoders = dict(method.encoders)
        loader = loader_identity(method.image_size)  # the decode and resize before any encoder
        self.identities = {name: {**enc.identity(), "loader": loader} for name, enc in self.encoders.items()}

    def encode(self, images: list[EpisodeImage]) -> Features:
        per_image: list[Features] = []
        for img in images:
            feats: Features = {}
            for name, enc in self.encoders.items():

                def compute(enc=enc, img=img) -> Features:
                    return enc.encode(img.tensor()[None])

                if getattr(enc, "cacheable", True):
                    feats.update(self.cache.get_or_compute(self.identities[name], img.sha256, compute))
                else:
                    feats.update(compute())
            per_image.append(feats)
        device = self.method.device
        return {k: torch.cat([f[k] for f in per_image]).to(device) for k in per_image[0]}
