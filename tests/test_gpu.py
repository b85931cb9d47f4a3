"""The GPU path: bf16 autocast on CUDA against fp32 on CPU with the same random weights, batched and
through the feature cache; and ``torch.compile`` against eager. Skipped, with the reason, on machines
without CUDA (every machine this project's CI has); ``scripts/gpu-check.sh`` runs them on a GPU."""

from __future__ import annotations

import copy

import pytest
import torch

from benchmark.data.prepared import PreparedDataset
from benchmark.device import compile_method
from benchmark.episode_loader import ImageStore, load_episode
from benchmark.episodes import build_manifest, manifest_episodes
from benchmark.feature_cache import FeatureCache
from benchmark.features import Featurizer
from benchmark.methods import build_method, get_method
from benchmark.metrics import prediction_at_label_size
from benchmark.predict import predict_batch
from tests.helpers import TINY, TINY_128

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)"
)


def _episodes(root, size, n=6):
    m = build_manifest(root, 0, 1, "fssam", 321, n, "test", "interleaved", "pascal")
    store = ImageStore(PreparedDataset(root))
    return [load_episode(store, m["images"], e, size) for e in manifest_episodes(m)]


def _masks(logits, datas):
    return [
        prediction_at_label_size(logits[j].float().cpu(), d.query_target.shape) for j, d in enumerate(datas)
    ]


def _agreement(a, b) -> float:
    return sum(int((x == y).sum()) for x, y in zip(a, b, strict=True)) / sum(x.numel() for x in a)


@needs_cuda
@pytest.mark.parametrize("method", ["fssam", "naive_sam2"])
def test_bf16_on_cuda_agrees_with_fp32_on_cpu(pascal_root, method):
    entry = get_method(method)
    settings = entry.resolve({k: v for k, v in TINY.items() if k in entry.all_defaults})
    datas = _episodes(pascal_root, TINY["image_size"])
    cpu = build_method(method, settings, torch.device("cpu"))
    gpu = copy.deepcopy(cpu).to("cuda")  # the same random weights
    ref = predict_batch(cpu, Featurizer(cpu, FeatureCache(None)), datas)
    got = predict_batch(gpu, Featurizer(gpu, FeatureCache(None)), datas[:3])
    got = torch.cat([got, predict_batch(gpu, Featurizer(gpu, FeatureCache(None)), datas[3:])])
    assert got.device.type == "cuda" and got.dtype == torch.float32
    agree = _agreement(_masks(ref, datas), _masks(got, datas))
    print(f"{method}: bf16 CUDA vs fp32 CPU mask agreement {100 * agree:.2f}%")
    assert agree >= 0.98


@pytest.mark.slow
def test_compiled_modules_give_the_eager_logits(pascal_root):
    entry = get_method("fssam")
    model = build_method("fssam", entry.resolve(TINY_128), torch.device("cpu"))
    datas = _episodes(pascal_root, 128, n=2)
    feat = Featurizer(model, FeatureCache(None))
    eager = predict_batch(model, feat, datas)
    keys = list(model.state_dict())
    assert compile_method(model) == 5 and compile_method(model) == 0  # once per module
    assert list(model.state_dict()) == keys  # in place: checkpoints and weight hashes unchanged
    compiled = predict_batch(model, Featurizer(model, FeatureCache(None)), datas)
    assert (compiled - eager).abs().max().item() <= 1e-4
