"""Frozen features of episode images for one method, through the feature cache.

For each image and each of the method's encoders, the cache is asked for (encoder identity, image
SHA-256); the misses are decoded (once, whatever the number of encoders) and encoded in batches of
``encode_batch``. Features are stored in ``dtype`` (fp32, or fp16/bf16 to halve the cache); a
compact dtype rounds them the same way whether they come from the cache or were just computed, so
the numbers never depend on the cache's state, and it is part of the identity (the cache key).
"""

from __future__ import annotations

import time
from collections import Counter

import torch

from benchmark.device import FEATURE_DTYPE_NAMES
from benchmark.errors import FssBenchError
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.loader import EpisodeImage, loader_identity, method_image_resize
from benchmark.methods.base import Features, FewShotMethod

ROLES = ("query", "support")
"""The roles an image plays in an episode. An encoder may declare ``roles = ("query",)``: the
harness then runs it on the queries only (GF-SAM and Matcher prompt SAM on the query alone), and
the support features ``predict`` gets lack its keys."""

FEATURE_DTYPES = {
    name: getattr(torch, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[name])
    for name in FEATURE_DTYPE_NAMES
}
"""Storage dtypes of cached frozen features (``cache.dtype`` in a study), by name."""


def check_feature_dtype(dtype: str, where: str = "cache.dtype") -> str:
    if dtype not in FEATURE_DTYPES:
        raise FssBenchError(f"{where}: {dtype!r} is not one of {list(FEATURE_DTYPES)}")
    return dtype


class Featurizer:
    """``encode(images) -> Features``: the method's encoders' outputs, images along dim 0.

    Counts what it does for ``fssbench profile``: ``passes[encoder]`` (images run through each
    encoder), ``encode_seconds`` (time inside the encoders) and ``fetch_seconds`` (all of
    ``encode``: cache lookups, disk reads, encoders and the copy to the device).
    """

    def __init__(
        self, method: FewShotMethod, cache: FeatureCache, dtype: str = "fp32", encode_batch: int = 8
    ):
        self.method, self.cache, self.encode_batch = method, cache, max(1, int(encode_batch))
        self.dtype = check_feature_dtype(dtype)
        self.encoders = dict(method.encoders)
        self.image_resize = method_image_resize(method)  # "bilinear" unless the method names another
        loader = loader_identity(method.image_size, self.image_resize)  # decode and resize before any encoder
        storage = {"storage": dtype} if dtype != "fp32" else {}  # fp32 keys stay what they were
        self.identities = {
            name: {**enc.identity(), "loader": loader, **storage} for name, enc in self.encoders.items()
        }
        self.passes: Counter[str] = Counter()
        self.encode_seconds = self.fetch_seconds = 0.0

    def _cacheable(self, name: str) -> bool:
        return getattr(self.encoders[name], "cacheable", True)

    def applies(self, name: str, role: str) -> bool:
        """Whether encoder ``name`` runs on images in ``role`` (:data:`ROLES`)."""
        return role in getattr(self.encoders[name], "roles", ROLES)

    def needs_pixels(self, img: EpisodeImage, role: str | None = None) -> bool:
        """Whether encoding ``img`` in ``role`` (any role: None) will need its pixels (some encoder's
        features are not cached)."""
        if not self.encoders:
            return False
        return any(
            not self._cacheable(n) or not self.cache.contains(self.identities[n], img.sha256)
            for n in self.encoders
            if role is None or self.applies(n, role)
        )

    def _compact(self, feats: Features) -> Features:
        dtype = FEATURE_DTYPES[self.dtype]
        return {k: v.detach().to("cpu").to(dtype) for k, v in feats.items()}

    def _run_encoder(self, name: str, images: list[EpisodeImage]) -> list[Features]:
        out = self._encoder_outputs(name, images)
        if not self._cacheable(name):  # views: nothing keeps them (the merge below copies once)
            return [{k: v[i : i + 1] for k, v in out.items()} for i in range(len(images))]
        return [{k: v[i : i + 1].clone() for k, v in out.items()} for i in range(len(images))]

    def _encoder_outputs(self, name: str, images: list[EpisodeImage]) -> Features:
        """Encoder ``name`` on ``images`` in one pass: its features, images along dim 0."""
        enc, device = self.encoders[name], self.method.device
        for im in images:  # the pixels must be the ones the cache key names
            if im.resize != self.image_resize:
                raise FssBenchError(
                    f"{im.rel}: loaded with image resize {im.resize!r}, but the method takes "
                    f"{self.image_resize!r} (pass load_episode the method's image_resize)"
                )
        t0 = time.perf_counter()
        out = enc.encode(torch.stack([im.tensor() for im in images]))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.encode_seconds += time.perf_counter() - t0
        self.passes[name] += len(images)
        return out

    def encode(self, images: list[EpisodeImage], role: str = "query") -> Features:
        """The features of ``images`` in ``role`` (the encoders that apply to it), images along dim 0."""
        t0 = time.perf_counter()
        try:
            return self._encode(images, role)
        finally:
            self.fetch_seconds += time.perf_counter() - t0

    def _encode(self, images: list[EpisodeImage], role: str) -> Features:
        if not self.encoders:  # a method without encoders (all_foreground): nothing to look up or decode
            return {}
        names = [n for n in self.encoders if self.applies(n, role)]
        distinct = len({img.sha256 for img in images}) == len(images)
        if names and distinct and len(images) <= self.encode_batch and not any(map(self._cacheable, names)):
            # uncached encoders only (raw pixels): their outputs as they are, no per-image split and merge
            out = {k: v for n in names for k, v in self._encoder_outputs(n, images).items()}
            return {k: v.to(self.method.device).float() for k, v in out.items()}
        unique = list({img.sha256: img for img in images}.values())  # a repeated image is encoded once
        per_sha: dict[str, Features] = {img.sha256: {} for img in unique}
        for name in self.encoders:
            if not self.applies(name, role):
                continue
            cacheable, ident = self._cacheable(name), self.identities[name]
            missing = []
            for img in unique:
                found = self.cache.lookup(ident, img.sha256) if cacheable else None
                if found is None:
                    missing.append(img)
                else:
                    per_sha[img.sha256].update(found)
            for i in range(0, len(missing), self.encode_batch):
                chunk = missing[i : i + self.encode_batch]
                for img, feats in zip(chunk, self._run_encoder(name, chunk), strict=True):
                    if cacheable:
                        feats = self.cache.store(ident, img.sha256, self._compact(feats))
                    per_sha[img.sha256].update(feats)
        device = self.method.device
        out = {}
        for k in per_sha[unique[0].sha256]:
            x = torch.cat([per_sha[img.sha256][k].cpu() for img in images])
            if device.type == "cuda":  # pinned host memory: an asynchronous copy
                out[k] = x.pin_memory().to(device, non_blocking=True).float()
            else:
                out[k] = x.to(device).float()
        return out
