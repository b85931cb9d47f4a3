"""``fssbench bench-model``: time one episode of a method, with and without precomputed frozen features.

A measurement, not a test: it prints seconds per episode (median of the repeats after one warm-up)
and the ratio, on random-init weights (timing does not depend on the weight values), loudly labelled.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch

from benchmark.methods import build_method, get_method


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
    method: str = "fssam",
    batch_size: int = 1,
) -> dict:
    """Seconds per episode for encoders + ``predict`` and for ``predict`` alone (features cached),
    ``batch_size`` episodes per forward (the time is divided by it)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    entry = get_method(method)
    wanted = {"sam2_size": sam2_size, "dinov2": dinov2, "image_size": image_size, "random_init": True}
    model = build_method(method, entry.resolve({k: v for k, v in wanted.items() if k in entry.defaults}), dev)
    g = torch.Generator().manual_seed(0)
    b = batch_size
    query = (torch.rand(b, 3, image_size, image_size, generator=g) * 255).to(dev)
    supports = (torch.rand(b * shots, 3, image_size, image_size, generator=g) * 255).to(dev)
    masks = (torch.rand(b, shots, image_size, image_size, generator=g) > 0.5).long().to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def encode(images):
        return {k: v for enc in model.encoders.values() for k, v in enc.encode(images).items()}

    with torch.no_grad():
        q, s = encode(query), encode(supports)

        def full():
            model.predict(encode(query), encode(supports), masks)
            sync()

        def cached():
            model.predict(q, s, masks)
            sync()

        t_full = _median_seconds(full, repeats) / b
        t_cached = _median_seconds(cached, repeats) / b
    return {
        "method": method,
        "sam2": f"SAM 2.0-{sam2_size}",
        "dinov2": dinov2,
        "image_size": image_size,
        "shots": shots,
        "batch_size": b,
        "precision": model.config.precision if hasattr(model, "config") else "auto",
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
        f"{r['method']} episode, {r['sam2']} + DINOv2 {r['dinov2']}, {r['image_size']} px, {r['shots']}-shot, "
        f"batch {r['batch_size']}, {r['device']} ({r['machine']}, precision {r['precision']})"
    )
    print(f"  encoders + predict (no cache):   {r['seconds_full']:.3f} s/episode")
    print(f"  predict on precomputed features: {r['seconds_cached']:.3f} s/episode")
    print(f"  ratio: {r['ratio']:.1f}x")
