"""Feature-cache identity: what changes a feature misses, what does not hits; concurrent fills are safe."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import fssam.model
import fssam.sam2_adapter
from benchmark.data.prepared import PreparedDataset
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.features import Featurizer
from benchmark.evaluation.loader import EpisodeImage, ImageStore
from fssam import FSSAM, FSSAMConfig

TINY = {"sam2_size": "t", "dinov2": "vits14", "dinov2_input_size": 224, "random_init": True}


@pytest.fixture(scope="module")
def models():
    m256 = FSSAM(FSSAMConfig(image_size=256, **TINY))
    m320 = FSSAM(FSSAMConfig(image_size=320, **TINY), dino=m256.dino)  # same DINOv2 weights, other S
    return m256, m320


def images(root: Path, size: int, n: int = 2) -> list[EpisodeImage]:
    store = ImageStore(PreparedDataset(root))
    rels = sorted(p.relative_to(root).as_posix() for p in (root / "JPEGImages").glob("*.jpg"))[:n]
    return [EpisodeImage(r, store.sha256(r), size, store) for r in rels]


def test_unchanged_identity_hits_on_disk_with_identical_features(models, pascal_root, tmp_path):
    m256, _ = models
    first = FeatureCache(tmp_path)
    a = Featurizer(m256, first).encode(images(pascal_root, 256))
    assert first.stats.misses == 4 and first.stats.hits == 0  # 2 images x (SAM 2, DINOv2)
    second = FeatureCache(tmp_path)  # a new process: memory empty, disk warm
    b = Featurizer(m256, second).encode(images(pascal_root, 256))
    assert second.stats.disk_hits == 4 and second.stats.misses == 0
    assert a.keys() == b.keys() == {"sam2.0", "sam2.1", "sam2.2", "dino"}
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_changed_image_size_misses_for_both_encoders(models, pascal_root, tmp_path):
    m256, m320 = models
    ident256, ident320 = m256.feature_identity(), m320.feature_identity()
    # the DINOv2 weights and input size are the same, but its input came through another resize
    assert ident256["dino"]["weights"] == ident320["dino"]["weights"]
    assert ident256["dino"]["resize_chain"] == [256, 224] and ident320["dino"]["resize_chain"] == [320, 224]
    assert ident256["sam2"]["image_size"] == 256 and ident320["sam2"]["image_size"] == 320
    cache = FeatureCache(tmp_path)
    Featurizer(m256, cache).encode(images(pascal_root, 256))
    misses = cache.stats.misses
    feats = Featurizer(m320, cache).encode(images(pascal_root, 320))
    assert cache.stats.misses - misses == 4 and cache.stats.hits == 0
    assert feats["sam2.2"].shape[-1] == 320 // 16


def test_the_precision_an_encoder_ran_in_is_part_of_its_identity(models, pascal_root, tmp_path, monkeypatch):
    m256, _ = models
    cache = FeatureCache(tmp_path)
    Featurizer(m256, cache).encode(images(pascal_root, 256, n=1))
    assert {v["precision"] for v in m256.feature_identity().values()} == {"fp32"}  # CPU
    # as on a CUDA machine with precision "auto" (bf16 autocast): other features, other keys
    bf16 = lambda device, precision: "bf16"  # noqa: E731
    monkeypatch.setattr(fssam.sam2_adapter, "effective_precision", bf16)
    monkeypatch.setattr(fssam.model, "effective_precision", bf16)
    assert {v["precision"] for v in m256.feature_identity().values()} == {"bf16"}
    misses = cache.stats.misses
    Featurizer(m256, cache).encode(images(pascal_root, 256, n=1))
    assert cache.stats.misses - misses == 2


def test_a_corrupt_cache_file_is_recomputed_not_trusted(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(6.0).reshape(1, 6)}

    cache.get_or_compute({"encoder": "toy"}, "ab" * 32, compute)
    (path,) = tmp_path.rglob("*.safetensors")
    path.write_bytes(b"garbage")
    fresh = FeatureCache(tmp_path)
    out = fresh.get_or_compute({"encoder": "toy"}, "ab" * 32, compute)
    assert len(calls) == 2 and torch.equal(out["x"], torch.arange(6.0).reshape(1, 6))
    assert torch.equal(load_file(str(path))["x"], out["x"])


def _fill(directory: str, worker: int) -> None:
    cache = FeatureCache(Path(directory), memory_bytes=0)
    for i in range(40):
        sha = f"{i:064x}"
        cache.get_or_compute(
            {"encoder": "toy", "size": 8}, sha, lambda i=i: {"x": torch.full((1, 64, 64, 64), float(i))}
        )


@pytest.mark.slow
def test_two_processes_filling_one_cache_leave_only_complete_files(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_fill, args=(str(tmp_path), w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert len(files) == 40
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in (".safetensors", ".json")]
    cache = FeatureCache(tmp_path)
    for i in range(40):
        out = cache.get_or_compute(
            {"encoder": "toy", "size": 8}, f"{i:064x}", lambda: pytest.fail("recomputed")
        )
        assert out["x"].shape == (1, 64, 64, 64) and bool((out["x"] == i).all())


def test_the_loaders_decode_and_resize_are_part_of_every_key(models, pascal_root, tmp_path, monkeypatch):
    import benchmark.evaluation.loader as loader

    m256, _ = models
    feat = Featurizer(m256, FeatureCache(tmp_path))
    for ident in feat.identities.values():
        assert ident["loader"]["image_size"] == 256 and ident["loader"]["version"] == loader.LOADER_VERSION
        assert ident["loader"]["pillow"]  # a Pillow upgrade may decode JPEGs differently
    feat.encode(images(pascal_root, 256, n=1))
    monkeypatch.setattr(loader, "LOADER_VERSION", "changed-resize/2")
    other = Featurizer(m256, feat.cache)
    other.encode(images(pascal_root, 256, n=1))
    assert feat.cache.stats.misses == 4 and feat.cache.stats.hits == 0


class _MeanColour:
    """A toy encoder: each image's mean colour, counting the images it saw."""

    def __init__(self, name: str, roles: tuple[str, ...] | None = None):
        self.name, self.seen = name, 0
        if roles is not None:
            self.roles = roles

    def identity(self) -> dict:
        return {"encoder": self.name}

    def encode(self, images: torch.Tensor) -> dict:
        self.seen += len(images)
        return {f"{self.name}.mean": images.mean(dim=(2, 3))}


class _TwoEncoders:
    image_size, device, random_init = 64, torch.device("cpu"), True

    def __init__(self):
        self.encoders = {"both": _MeanColour("both"), "query": _MeanColour("query", roles=("query",))}


def test_a_query_only_encoder_never_runs_on_supports(pascal_root, tmp_path):
    method = _TwoEncoders()
    feat = Featurizer(method, FeatureCache(tmp_path))
    imgs = images(pascal_root, 64, n=3)
    query, supports = feat.encode(imgs[:1], "query"), feat.encode(imgs[1:], "support")
    assert set(query) == {"both.mean", "query.mean"} and set(supports) == {"both.mean"}
    assert method.encoders["query"].seen == 1 and method.encoders["both"].seen == 3
    assert feat.passes == {"both": 3, "query": 1}
    expected = torch.stack([im.tensor().mean(dim=(1, 2)) for im in imgs[1:]])
    assert torch.allclose(supports["both.mean"], expected)
    # pixels are needed for a support only when an encoder that runs on supports misses the cache
    fresh = images(pascal_root, 64, n=4)[3]
    assert feat.needs_pixels(fresh, "support") and feat.needs_pixels(fresh, "query")
    feat.encode([fresh], "support")
    assert not feat.needs_pixels(fresh, "support") and feat.needs_pixels(fresh, "query")
