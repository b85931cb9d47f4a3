"""``fssbench profile``: episodes/s and peak memory per variant, or cells/s per Ray worker count."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.cli.common import add_command, add_device, add_work_dir, positive_float
from benchmark.cli.study_options import add_throughput_options, load_study_for
from benchmark.errors import FssBenchError


def run(args: argparse.Namespace) -> int:
    """``profile``: the feature cache's profile (local engine) or cells/s per Ray worker count."""
    study = load_study_for(args)
    work = Path(args.work_dir) if args.work_dir else None
    if args.engine == "ray":
        from benchmark.jobs.profile.engine import parse_worker_counts, print_engine_profile, profile_engine

        counts = parse_worker_counts(args.workers or "1,2")
        table = profile_engine(
            study, counts, work, args.ray_address, args.cpus_per_cell, progress=not args.quiet
        )
        print_engine_profile(study, table, args.ray_address or "a Ray instance started on this machine")
        return 0
    if args.workers or args.ray_address:
        raise FssBenchError("--workers and --ray-address apply to --engine ray only")
    if args.cache_bytes:
        from benchmark.jobs.profile.footprint import cache_bytes_per_image

        table = cache_bytes_per_image(study, work)
        print("feature cache per image (MiB), one image through each cacheable encoder of the study:")
        print(table.to_markdown(index=False, floatfmt=".2f"))
        return 0
    if args.footprint:
        from benchmark.jobs.profile.footprint import measure_footprint, print_footprint

        print_footprint(study, measure_footprint(study, work, progress=not args.quiet))
        return 0
    from benchmark.jobs.profile.study import print_profile, profile_study

    r = profile_study(
        study, work, progress=not args.quiet, dtype_episodes=args.dtype_episodes, compile=args.compile
    )
    print_profile(study, r)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``profile`` and its options."""
    pr = add_command(
        subparsers, "profile", "episodes/s and peak memory per variant, and the feature cache's speed-up"
    )
    pr.add_argument("study", help="study file (YAML)")
    pr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. episodes=20")
    add_work_dir(pr, "where the temporary runs go (default: the system temp folder)", default=None)
    add_device(pr, "device of every variant (default: the study's)")
    pr.add_argument(
        "--dtype-episodes",
        type=int,
        default=8,
        help="episodes on which fp16/bf16 cached features are compared with fp32 (0: skip)",
    )
    pr.add_argument(
        "--footprint",
        action="store_true",
        help="run the study once (cold cache) and print its wall time, peak RSS, harness per episode, "
        "cache bytes per image and tracking-store size",
    )
    pr.add_argument(
        "--cache-bytes",
        action="store_true",
        help="print the feature cache's MiB per image for each encoder of the study, fp32 and bf16",
    )
    pr.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: the cache profile; ray: cells/s per Ray worker count (--workers 1,2)",
    )
    pr.add_argument("--workers", default=None, help="--engine ray: worker counts to compare (default: 1,2)")
    pr.add_argument(
        "--ray-address", default=None, help="--engine ray: the cluster (default: one on this machine)"
    )
    pr.add_argument(
        "--cpus-per-cell", type=positive_float, default=None, help="--engine ray: CPUs per worker (default 1)"
    )
    add_throughput_options(pr)
    pr.set_defaults(fn=run)
