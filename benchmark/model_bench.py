"""``fssbench bench-model``: time one FSSAM episode, with and without precomputed frozen features.

A measurement, not a test: it prints seconds per episode (median of the repeats after one warm-up)
and the ratio, on random-init weights (timing does not depend on the weight values), loudly labelled.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch

from fssam import FSSAM, FSSAMConfig


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(
    sam2_size: str = "s",
    dinov2: str = "vitb14",
    image_size: int = 512,
    shots: int = 1,
    repeats: int = 3,
    device: str = "cpu",
    threads: int | None = None,
) -> dict:
    """Seconds per episode for ``model(...)`` (encoders included) and ``model.predict`` (features cached)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    cfg = FSSAMConfig(sam2_size=sam2_size, dinov2=dinov2, image_size=image_size, random_init=True)
    model = FSSAM(cfg).to(dev)
    g = torch.Generator().manual_seed(0)
    query = (torch.rand(1, 3, image_size, image_size, generator=g) * 255).to(dev)
    supports = (torch.rand(1, shots, 3, image_size, image_size, generator=g) * 255).to(dev)
    masks = (torch.rand(1, shots, image_size, image_size, generator=g) > 0.5).long().to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        q = model.encode_images(query)
        s = model.encode_images(supports.flatten(0, 1))

        def full():
            model(query, supports, masks)
            sync()

        def cached():
            model.predict(q, s, masks)
            sync()

        t_full = _median_seconds(full, repeats)
        t_cached = _median_seconds(cached, repeats)
    return {
        "sam2": f"SAM 2.0-{sam2_size}",
        "dinov2": dinov2,
        "image_size": image_size,
        "shots": shots,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "seconds_full": t_full,
        "seconds_cached": t_cached,
        "ratio": t_full / t_cached,
    }


def print_bench(r: dict) -> None:
    print("RANDOM-INIT WEIGHTS (timing only; predictions are meaningless)")
    print(
        f"FSSAM episode, {r['sam2']} + DINOv2 {r['dinov2']}, {r['image_size']} px, {r['shots']}-shot, "
        f"{r['device']} ({r['machine']})"
    )
    print(f"  encoders + predict (no cache):   {r['seconds_full']:.3f} s/episode")
    print(f"  predict on precomputed features: {r['seconds_cached']:.3f} s/episode")
    print(f"  ratio: {r['ratio']:.1f}x")
