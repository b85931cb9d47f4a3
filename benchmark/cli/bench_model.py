"""``fssbench bench-model``: time one episode with and without precomputed features."""

from __future__ import annotations

import argparse

from benchmark.cli.common import add_command, add_device, positive_int


def run(args: argparse.Namespace) -> int:
    """``bench-model``: time one episode of models with random weights; print the table."""
    from benchmark.jobs.profile.model import bench_model, print_bench

    print_bench(
        bench_model(
            args.sam2_size,
            args.dinov2,
            args.image_size,
            args.shots,
            args.repeats,
            args.device,
            args.threads,
            args.method,
            args.batch_size,
        )
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``bench-model`` and its options."""
    b = add_command(
        subparsers, "bench-model", "time one episode with and without precomputed features (random weights)"
    )
    b.add_argument("--method", default="fssam", choices=("fssam", "naive_sam2"), help="method to time")
    b.add_argument("--sam2-size", default="s", choices=("t", "s", "b+", "l"), help="SAM 2 size")
    b.add_argument(
        "--dinov2", default="vitb14", choices=("vits14", "vitb14", "vitl14", "vitg14"), help="DINOv2"
    )
    b.add_argument("--image-size", type=positive_int, default=512, help="SAM 2 input size (a multiple of 64)")
    b.add_argument("--shots", type=positive_int, default=1, help="supports per episode (K)")
    b.add_argument("--repeats", type=positive_int, default=3, help="timed repeats after one warm-up (median)")
    add_device(b, "torch device", default="cpu")
    b.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    b.add_argument(
        "--batch-size", type=positive_int, default=1, help="episodes per forward (time per episode)"
    )
    b.set_defaults(fn=run)
