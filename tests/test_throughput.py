"""Throughput without changing a number: batched episodes, stages shared across variants, compact
cached features, background decoding (issue 14)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark.data.prepared import PreparedDataset
from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import save_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.cell import CellSpec, cell_key, evaluate_cell
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.features import Featurizer
from benchmark.evaluation.loader import ImageStore, load_episode
from benchmark.evaluation.predict import predict_batch, predict_episode
from benchmark.jobs.run import StudyRunner
from benchmark.methods import WeightPool, build_method, get_method
from benchmark.specs.study import load_study
from fssam.stages import StageMemo
from tests.helpers import ROOT, TINY_128

SHIPPED = ROOT / "ablations" / "component-prior-ablation.yaml"


@pytest.fixture(scope="module")
def episodes(pascal_root, tmp_path_factory):
    """(manifest path, the episode inputs) of 6 one-shot and 4 two-shot episodes at 128 px."""
    out = {}
    for shot, n in ((1, 6), (2, 4)):
        m = build_manifest(
            get_protocol("fssam"),
            ManifestRequest(pascal_root, 0, shot, seed=321, episodes=n, dataset="pascal"),
        )
        path = tmp_path_factory.mktemp("m") / f"{shot}shot.json"
        save_manifest(m, path)
        store = ImageStore(PreparedDataset(pascal_root))
        out[shot] = (path, [load_episode(store, m.images, e, 128) for e in m.episodes])
    return out


@pytest.fixture(scope="module")
def models():
    pool = WeightPool()

    def build(method: str = "fssam", **switches):
        entry = get_method(method)
        settings = entry.resolve(
            {k: v for k, v in {**TINY_128, **switches}.items() if k in entry.all_defaults}
        )
        return build_method(method, settings, torch.device("cpu"), pool)

    return build


VARIANTS = [
    ("fssam", {}),
    ("fssam", {"scma": False}),
    ("fssam", {"imr_iters": 0}),
    ("fssam", {"prior": "fg"}),
    ("fssam", {"prior": "none"}),
    ("fssam", {"prior": "oracle"}),
    ("naive_sam2", {}),
]


@pytest.mark.parametrize("shot", [1, 2])
@pytest.mark.parametrize("method,switches", VARIANTS, ids=[f"{m}-{s}" for m, s in VARIANTS])
def test_batched_logits_equal_one_episode_at_a_time(episodes, models, method, switches, shot):
    model = models(method, **switches)
    _, datas = episodes[shot]
    feat = Featurizer(model, FeatureCache(None))
    alone = torch.cat([predict_episode(model, feat, d) for d in datas])
    for b in (2, 3, len(datas)):
        batched = torch.cat([predict_batch(model, feat, datas[i : i + b]) for i in range(0, len(datas), b)])
        assert batched.shape == alone.shape == (len(datas), 128, 128)
        assert (batched - alone).abs().max().item() <= 1e-5


def test_a_batch_of_mixed_shot_counts_is_refused(episodes, models):
    model = models("fssam")
    feat = Featurizer(model, FeatureCache(None))
    with pytest.raises(ValueError, match="same number of shots"):
        predict_batch(model, feat, [episodes[1][1][0], episodes[2][1][0]])


def test_shared_stages_give_identical_logits_and_are_reused(episodes, models):
    """Every variant run after the others on one memo equals the variant run alone, bit for bit."""
    _, datas = episodes[2]
    memo = StageMemo()
    batches = [datas[:2], datas[2:]]
    for method, switches in VARIANTS:
        model = models(method, **switches)
        feat = Featurizer(model, FeatureCache(None))
        for batch in batches:
            shared = predict_batch(model, feat, batch, memo)
            alone = predict_batch(model, feat, batch)
            assert torch.equal(shared, alone), (method, switches)
    # what must have been reused: the support memory by every variant after the first (x2 batches),
    # the priors and FG/Disc memories by the prior variants, IMR by no-scma
    assert memo.hits >= 2 * 6 + 2 * 2 + 2
    memo.scope("another manifest")
    assert memo.used == 0


def test_a_different_batch_misses_the_memo(episodes, models):
    _, datas = episodes[1]
    memo = StageMemo()
    model = models("fssam")
    feat = Featurizer(model, FeatureCache(None))
    predict_batch(model, feat, datas[:2], memo)
    hits = memo.hits
    predict_batch(model, feat, datas[1:3], memo)  # overlaps, but is not the same batch
    predict_batch(models("fssam", scma_scale=5.0), feat, datas[2:4], memo)
    assert memo.hits == hits
    full = StageMemo(max_bytes=0)  # nothing fits: computed every time, still right
    assert torch.equal(predict_batch(model, feat, datas[:2], full), predict_batch(model, feat, datas[:2]))
    assert full.used == 0 and full.hits == 0


def test_compact_features_are_rounded_the_same_from_cache_and_fresh(episodes, models, tmp_path):
    model = models("fssam")
    images = [episodes[1][1][0].query, episodes[1][1][1].query]
    exact = Featurizer(model, FeatureCache(None)).encode(images)
    cache = FeatureCache(tmp_path / "c")
    cold = Featurizer(model, cache, dtype="bf16").encode(images)
    assert cache.stats.misses == 4  # 2 images x (SAM 2, DINOv2): the fp32 identity is another key
    warm = Featurizer(model, FeatureCache(tmp_path / "c"), dtype="bf16").encode(images)  # from disk
    for k in exact:
        rounded = exact[k].to(torch.bfloat16).float()  # bf16 storage, computed independently
        assert torch.equal(cold[k], rounded) and torch.equal(warm[k], rounded)
        assert cold[k].dtype == torch.float32
    on_disk = next((tmp_path / "c").rglob("*.safetensors"))
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(on_disk)).values()} == {torch.bfloat16}
    fp32 = FeatureCache(tmp_path / "c")
    Featurizer(model, fp32).encode(images)
    assert fp32.stats.misses == 4 and fp32.stats.disk_hits == 0  # bf16 files never serve fp32
    with pytest.raises(FssBenchError, match="cache.dtype"):
        Featurizer(model, fp32, dtype="int8")


def test_feature_dtype_is_in_the_cell_key_and_batch_size_is_not(tmp_path):
    spec = CellSpec("fssam", get_method("fssam").resolve(TINY_128), tmp_path / "m.json", tmp_path, "cpu")
    base = cell_key(spec, "a" * 64, {"sam2": "s"})
    assert cell_key(dataclasses.replace(spec, batch_size=8), "a" * 64, {"sam2": "s"}) == base
    assert cell_key(dataclasses.replace(spec, feature_dtype="fp32"), "a" * 64, {"sam2": "s"}) == base
    keys = {
        cell_key(dataclasses.replace(spec, feature_dtype=d), "a" * 64, {"sam2": "s"})
        for d in ("fp16", "bf16")
    }
    assert len(keys) == 2 and base not in keys


@pytest.fixture
def numeric_switches():
    """Restores torch's process-wide precision and determinism switches after a test flips them."""
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (
        cuda.allow_tf32,
        cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.benchmark,
        cudnn.deterministic,
    )
    yield
    cuda.allow_tf32, cudnn.allow_tf32 = saved[0], saved[1]
    torch.set_float32_matmul_precision(saved[2])
    torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])
    cudnn.benchmark, cudnn.deterministic = saved[5], saved[6]


def test_a_cuda_cell_key_names_the_gpu_its_precision_switches_and_the_batch_size(
    tmp_path, monkeypatch, numeric_switches
):
    """On CUDA (pretended: a fake GPU name on this CPU machine) the key changes exactly when the
    GPU model, a TF32 or float32-precision switch, a determinism switch or the batch size changes,
    and comes back when the switch does; on CPU none of the CUDA switches nor the batch size count."""
    import benchmark.evaluation.cell

    gpu = {"name": "NVIDIA H100 80GB HBM3"}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu["name"])
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    monkeypatch.setattr(benchmark.evaluation.cell, "resolve_device", lambda name: torch.device(name))
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what set_deterministic would set
    settings = get_method("fssam").resolve(TINY_128)
    cuda_spec = CellSpec("fssam", settings, tmp_path / "m.json", tmp_path, "cuda")
    cpu_spec = dataclasses.replace(cuda_spec, device="cpu")

    def key(spec=cuda_spec) -> str:
        return cell_key(spec, "a" * 64, {"sam2": "s"})

    base, cpu_base = key(), key(cpu_spec)
    assert base != cpu_base
    assert key(dataclasses.replace(cuda_spec, device="cuda:0")) == base  # the same GPU model
    assert key(dataclasses.replace(cuda_spec, compile=True)) == base  # how, not what
    assert key(dataclasses.replace(cuda_spec, batch_size=8)) != base  # batched == unbatched unshown on GPU
    assert key(dataclasses.replace(cpu_spec, batch_size=8)) == cpu_base  # shown on CPU (tests above)

    def set_gpu(name):
        gpu["name"] = name

    def set_flag(obj, attr):
        return lambda value: setattr(obj, attr, value)

    cudnn = torch.backends.cudnn
    switches = [  # (what, set it, its default here, another value)
        ("GPU model", set_gpu, "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"),
        ("matmul TF32", set_flag(torch.backends.cuda.matmul, "allow_tf32"), False, True),
        ("cuDNN TF32", set_flag(cudnn, "allow_tf32"), True, False),
        # "high" is the same switch as matmul TF32 (torch keeps them in step): the key is the same
        ("float32 matmul precision", torch.set_float32_matmul_precision, "highest", "medium"),
        ("deterministic algorithms", torch.use_deterministic_algorithms, False, True),
        ("cuDNN benchmark", set_flag(cudnn, "benchmark"), False, True),
        ("cuDNN deterministic", set_flag(cudnn, "deterministic"), False, True),
    ]
    seen = {base}
    for what, flip, default, other in switches:
        flip(other)
        changed = key()
        assert changed not in seen, what  # a new key, unlike every other switch's
        seen.add(changed)
        # torch couples matmul TF32 to the float32 matmul precision ("high"), which oneDNN's CPU
        # matmuls follow (tf32, or bf16 at "medium"): those two are in CPU keys as well
        if what not in ("matmul TF32", "float32 matmul precision"):
            assert key(cpu_spec) == cpu_base, what
        flip(default)
        assert key() == base, what
    from benchmark.device import set_deterministic

    set_deterministic()  # --deterministic: no TF32, no autotuning, deterministic algorithms
    assert key() not in seen


def test_a_cpu_key_names_a_reduced_float32_matmul_precision(tmp_path, numeric_switches):
    """On CPU, float32 matmul precision "medium" lets oneDNN multiply in bf16 (other numbers), so it
    is in the key; back at "highest" the key is the one it always was."""
    a = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    spec = CellSpec("fssam", get_method("fssam").resolve(TINY_128), tmp_path / "m.json", tmp_path, "cpu")
    base, full = cell_key(spec, "a" * 64, {"sam2": "s"}), a @ a
    torch.set_float32_matmul_precision("medium")
    reduced_differs = not torch.equal(a @ a, full)  # bf16 where oneDNN has it (x86-64 with AVX-512/AMX)
    assert cell_key(spec, "a" * 64, {"sam2": "s"}) != base
    torch.set_float32_matmul_precision("highest")
    assert torch.equal(a @ a, full) and cell_key(spec, "a" * 64, {"sam2": "s"}) == base
    print(f"float32 matmul precision 'medium' changes CPU matmuls here: {reduced_differs}")


def test_cells_equal_across_batch_sizes_and_loader_threads(episodes, pascal_root):
    path, _ = episodes[1]
    settings = get_method("fssam").resolve(TINY_128)
    spec = CellSpec("fssam", settings, path, pascal_root, "cpu", "c")
    pool = WeightPool()
    ref = evaluate_cell(spec, FeatureCache(None), pool=pool, decode_threads=1)
    for b, workers in ((4, 1), (3, 3), (6, 2)):
        r = evaluate_cell(
            dataclasses.replace(spec, batch_size=b), FeatureCache(None), pool=pool, decode_threads=workers
        )
        pd.testing.assert_frame_equal(r.table, ref.table)
    # one encoder pass per unique image and encoder on a cold cache
    m = ref.manifest
    unique = {m.images[i][0] for e in m.episodes for i in (e.query, *e.supports)}
    assert ref.encoder_passes == {"sam2": len(unique), "dino": len(unique)}
    assert set(ref.timings) >= {"load_wait", "encode", "episode_path", "feature_io"}


def tiny_study(pascal_root: Path, *extra: str):
    overrides = [
        f"data.pascal={pascal_root}",
        "episodes=4",
        "folds=[0]",
        "model.fssam_checkpoint=null",  # random init refuses the authors' trained model
        *[f"model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in TINY_128.items()],
        *extra,
    ]
    return load_study(SHIPPED, overrides)


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_the_shipped_component_prior_study_is_identical_with_shared_stages(pascal_root, tmp_path):
    shared = tiny_study(pascal_root, "batch_size=2")
    assert shared.cache.stages_gb > 0 and len(shared.variants) == 8
    alone = tiny_study(pascal_root, "batch_size=2", "cache.stages_gb=0")
    runner_shared, runner_alone = (
        StudyRunner(
            study,
            tracking_uri=f"sqlite:///{tmp_path / name}.db",
            work_dir=tmp_path / name,
            progress=False,
            qualitative=0,
        )
        for study, name in ((shared, "a"), (alone, "b"))
    )
    cells_shared = runner_shared.run()
    assert runner_shared.stages is not None and runner_shared.stages.hits > 0
    cells_alone = runner_alone.run()
    assert runner_alone.stages is None
    assert list(cells_shared["cell_key"]) == list(cells_alone["cell_key"])
    for a, b in zip(
        sorted((tmp_path / "a" / "cells").glob("*/episodes.jsonl")),
        sorted((tmp_path / "b" / "cells").glob("*/episodes.jsonl")),
        strict=True,
    ):
        assert a.parent.name == b.parent.name
        assert a.read_text().splitlines()[1:] == b.read_text().splitlines()[1:]


def test_study_cache_block_is_validated(pascal_root, tmp_path):
    with pytest.raises(FssBenchError, match=r"cache\.dtype: 'fp8'"):
        tiny_study(pascal_root, "cache.dtype=fp8")
    with pytest.raises(FssBenchError, match=r"cache\.max_gbs: unknown field \(did you mean 'max_gb'\?\)"):
        tiny_study(pascal_root, "cache.max_gbs=3")
    with pytest.raises(FssBenchError, match=r"cache\.stages_gb: expected a number >= 0"):
        tiny_study(pascal_root, "cache.stages_gb=-1")
    with pytest.raises(FssBenchError, match=r"batch_size: expected a positive integer"):
        tiny_study(pascal_root, "batch_size=0")
    s = tiny_study(pascal_root, "cache.dtype=bf16", "cache.max_gb=2.5", "batch_size=4")
    assert (s.cache.dtype, s.cache.max_gb, s.batch_size) == ("bf16", 2.5, 4)
    runner = StudyRunner(s, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", work_dir=tmp_path, progress=False)
    assert runner.cache.max_disk_bytes == int(2.5 * 2**30)
    cells = runner.cells(runner.build_manifests())
    assert {(c.spec.batch_size, c.spec.feature_dtype) for c in cells} == {(4, "bf16")}


@pytest.mark.slow
def test_profile_counts_encoder_passes_and_splits_the_time(pascal_root, tmp_path, capsys):
    from benchmark.jobs.profile.study import PASCAL_GRID, print_profile, profile_study

    study = tiny_study(pascal_root, "episodes=2", "batch_size=2")
    r = profile_study(study, tmp_path, progress=False, dtype_episodes=2)
    m = build_manifest(
        get_protocol("fssam"), ManifestRequest(pascal_root, 0, 1, seed=321, episodes=2, dataset="pascal")
    )
    unique = {m.images[i][0] for e in m.episodes for i in (e.query, *e.supports)}
    # every variant uses SAM 2 features, five use DINOv2's: two encoders over the same images
    assert r["unique_images"] == len(unique) and r["expected_cold_passes"] == 2 * len(unique)
    assert r["encoder_passes"]["cold cache"] == 2 * len(unique) and r["encoder_passes"]["warm cache"] == 0
    # without the cache each cell encodes its own episodes: 8 variants' SAM 2 and 5 variants' DINOv2
    per_cell = sum(len({m.images[i][0] for i in (e.query, *e.supports)}) for e in m.episodes)
    assert r["encoder_passes"]["no cache"] == (8 + 5) * per_cell
    for label, parts in r["split"].items():
        assert all(v >= 0 for v in parts.values()) and sum(parts.values()) <= r["seconds"][label] + 1e-6
    assert len(r["dtype_effect"]) == 16 and r["dtype_effect"]["mask agreement %"].between(0, 100).all()
    g = r["grid"]
    assert g["forwards"] == 8 * 4 * 2 * 1000
    assert g["total_s"] == pytest.approx(
        PASCAL_GRID["unique_images"] * 2 * g["per_pass_s"] + g["forwards"] * g["per_forward_s"]
    )
    print_profile(study, r)
    out = capsys.readouterr().out
    assert (
        "RANDOM-INIT" in out and "unique images x encoders" in out and "projected full PASCAL-5i grid" in out
    )


def test_the_grid_is_projected_from_the_cells_measured_stages_not_the_studys_wall_time():
    from benchmark.jobs.profile.study import PASCAL_GRID, project_grid

    def run(seconds: float, cells: list[dict]) -> dict:
        return {"seconds": seconds, "cells": pd.DataFrame(cells)}

    # hand-made runs: two cells of 10 episodes; the warm run's cells took 2 s (of which the method
    # 1.2 s and its encoders 0.3 s) inside a 10 s study (8 s of store, manifests and model builds)
    cold = run(30.0, [{"status": "run", "encoder_passes": 40, "encode_s": 4.0}] * 2)
    warm = run(
        10.0,
        [{"status": "run", "episodes_run": 10, "seconds": 1.0, "episode_path_s": 0.6, "encode_s": 0.15}] * 2
        + [
            {
                "status": "skipped (done)",
                "episodes_run": 0,
                "seconds": 9.0,
                "episode_path_s": 9.0,
                "encode_s": 0,
            }
        ],
    )
    g = project_grid(cold, warm, encoders=2)
    assert g["per_forward_s"] == pytest.approx(2.0 / 20)  # not 10 s / 20
    assert g["harness_per_forward_s"] == pytest.approx((2.0 - 1.2 - 0.3) / 20)
    assert g["harness_share"] == pytest.approx(0.5 / 2.0) and g["setup_s"] == pytest.approx(8.0)
    assert g["per_pass_s"] == pytest.approx(8.0 / 80)
    forwards = 8 * 4 * 2 * 1000
    assert g["total_s"] == pytest.approx(PASCAL_GRID["unique_images"] * 2 * 0.1 + forwards * 0.1)
    # the total splits into the model (encoders, episode paths) and the harness
    assert g["harness_s"] == pytest.approx(forwards * 0.5 / 20)
    assert g["model_s"] == pytest.approx(PASCAL_GRID["unique_images"] * 2 * 0.1 + forwards * 1.5 / 20)
    assert g["model_s"] + g["harness_s"] == pytest.approx(g["total_s"])
