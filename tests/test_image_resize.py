"""The loader's per-method image resize: ``bilinear`` (torch, the default) or ``pil-bilinear`` (the
HSNet-family releases' PIL resize), through ``load_episode`` and the feature cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmark.data.prepared import PreparedDataset
from benchmark.episodes import get_protocol
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.features import Featurizer
from benchmark.evaluation.loader import (
    LOADER_VERSION,
    ImageStore,
    load_episode,
    loader_identity,
    method_image_resize,
    resize_image,
)


def pil_resized(image: np.ndarray, size: int) -> torch.Tensor:
    """The release's resize, written from its description: PIL bilinear on the uint8 image, CHW float."""
    out = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return torch.tensor(out.transpose(2, 0, 1).copy(), dtype=torch.float32)


@pytest.mark.parametrize("shape, size", [((53, 37), 24), ((20, 31), 64), ((40, 40), 40)])
def test_pil_bilinear_is_pillows_own_resize_exactly(shape, size):
    rng = np.random.default_rng(size)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = resize_image(image, size, "pil-bilinear")
    assert got.shape == (3, size, size) and got.dtype == torch.float32
    assert torch.equal(got, pil_resized(image, size))
    assert torch.equal(got, got.round())  # PIL's uint8 values


def test_downscaling_with_pil_is_antialiased_unlike_the_default():
    # one white column in every 4: a 4x downscale with torch bilinear (no antialias) samples at
    # x = 4j + 1.5, between two black columns, so it sees no white at all; PIL's antialiased filter
    # spreads over the whole period and keeps about a quarter of the white
    _, xx = np.mgrid[0:64, 0:64]
    image = np.repeat(np.where(xx % 4 == 0, 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)
    torch_out = resize_image(image, 16)
    pil_out = resize_image(image, 16, "pil-bilinear")
    assert torch.equal(torch_out, torch.zeros(3, 16, 16))
    assert torch.equal(pil_out, pil_resized(image, 16))
    assert 40 < float(pil_out.mean()) < 90  # about 255 / 4


def test_an_unknown_resize_is_refused():
    with pytest.raises(FssBenchError, match="'area' is not one of"):
        resize_image(np.zeros((4, 4, 3), np.uint8), 2, "area")

    class Odd:
        image_resize = "nearest"

    with pytest.raises(FssBenchError, match="image_resize: 'nearest'"):
        method_image_resize(Odd())


class PixelsEncoder:
    """A cacheable encoder that returns the pixels it sees: (N, 3, S, S) -> {"px": same}."""

    def identity(self) -> dict[str, Any]:
        return {"encoder": "pixels-test"}

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"px": images.float()}


class PixelsMethod:
    """Just enough of a method for the Featurizer: one cacheable encoder at ``size``."""

    random_init = True

    def __init__(self, size: int, resize: str | None = None):
        self.image_size, self.device = size, torch.device("cpu")
        self.encoders = {"px": PixelsEncoder()}
        if resize is not None:
            self.image_resize = resize


@pytest.fixture(scope="module")
def episode_inputs(pascal_root):
    manifest = build_manifest(
        get_protocol("fssam"), ManifestRequest(pascal_root, 0, 1, seed=321, episodes=2, dataset="pascal")
    )
    return manifest, ImageStore(PreparedDataset(pascal_root)), pascal_root


def test_a_pil_bilinear_method_gets_pils_pixels_through_load_episode(episode_inputs, tmp_path):
    manifest, store, root = episode_inputs
    size = 48
    pil_method, default_method = PixelsMethod(size, "pil-bilinear"), PixelsMethod(size)
    assert method_image_resize(default_method) == "bilinear"
    ep = manifest.episodes[0]
    with Image.open(root / manifest.images[ep.query][0]) as im:  # decoded here, not by the loader
        original = np.asarray(im.convert("RGB"))
    data = load_episode(
        store, manifest.images, ep, size, manifest.evaluation, method_image_resize(pil_method)
    )
    assert torch.equal(data.query.tensor(), pil_resized(original, size))
    feats = Featurizer(pil_method, FeatureCache(tmp_path)).encode([data.query])
    assert torch.equal(feats["px"][0], pil_resized(original, size))
    # the default method: torch bilinear, as before
    plain = load_episode(store, manifest.images, ep, size, manifest.evaluation)
    expected = F.interpolate(
        torch.from_numpy(original.copy()).permute(2, 0, 1).float()[None], size=(size, size), mode="bilinear"
    )[0]
    assert torch.equal(plain.query.tensor(), expected)
    # labels are resized with nearest whatever the image resize
    assert torch.equal(data.support_masks, plain.support_masks)
    # pixels loaded one way are never encoded (and cached) under the other's key
    with pytest.raises(FssBenchError, match="loaded with image resize 'bilinear'"):
        Featurizer(pil_method, FeatureCache(tmp_path / "fresh")).encode([plain.query])


def test_the_two_resizes_have_different_cache_identities_and_the_default_key_is_unchanged(
    episode_inputs, tmp_path
):
    import PIL

    manifest, store, _ = episode_inputs
    # the default identity is exactly the three fields it had before the resize could be chosen
    assert loader_identity(64) == {"version": LOADER_VERSION, "image_size": 64, "pillow": PIL.__version__}
    assert loader_identity(64, "bilinear") == loader_identity(64)
    assert loader_identity(64, "pil-bilinear") == {**loader_identity(64), "resize": "pil-bilinear"}
    default_method, pil_method = PixelsMethod(64), PixelsMethod(64, "pil-bilinear")
    cache = FeatureCache(tmp_path)
    plain, pil = Featurizer(default_method, cache), Featurizer(pil_method, cache)
    assert plain.identities["px"]["loader"] == loader_identity(64)
    assert pil.identities["px"]["loader"] == loader_identity(64, "pil-bilinear")
    ep = manifest.episodes[0]
    a = load_episode(store, manifest.images, ep, 64, manifest.evaluation)
    b = load_episode(store, manifest.images, ep, 64, manifest.evaluation, "pil-bilinear")
    plain.encode([a.query])
    pil.encode([b.query])
    assert cache.stats.misses == 2 and cache.stats.hits == 0  # one image, two keys
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2
    again = Featurizer(pil_method, FeatureCache(tmp_path)).encode([b.query])
    assert torch.equal(again["px"][0], b.query.tensor())
