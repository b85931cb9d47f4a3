"""``fssbench run``: run a study, every cell, on the local or the Ray engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.cli.common import add_command, add_device, add_tracking_uri, add_work_dir, non_negative_float
from benchmark.cli.study_options import (
    add_engine_options,
    add_throughput_options,
    load_study_for,
    refuse_ray_options,
    shard_spec,
)


def run(args: argparse.Namespace) -> int:
    """``run``: every cell of the study on the chosen engine; 1 if a cell failed, 130 if interrupted."""
    study = load_study_for(args)
    from benchmark.jobs.run import RunJob, summary_table

    common = dict(
        tracking_uri=args.tracking_uri,
        work_dir=Path(args.work_dir),
        force=args.force,
        use_cache=not args.no_cache,
        progress=not args.quiet,
        shard=args.shard,
        fail_fast=args.fail_fast,
        cache_max_bytes=None if args.cache_max_gb is None else int(args.cache_max_gb * 2**30),
        compile=args.compile,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )
    if args.engine == "ray":
        from benchmark.engines.ray import RayEngine
        from benchmark.io_utils import say

        engine = RayEngine.for_study(
            study.resources,
            ray_address=args.ray_address,
            workers=args.workers,
            gpus_per_cell=args.gpus_per_cell,
            cpus_per_cell=args.cpus_per_cell,
            progress=not args.quiet,
            log=say,
        )
        runner = RunJob(study, engine=engine, **common)
    else:
        refuse_ray_options(args)
        runner = RunJob(study, **common)
    try:
        cells = runner.run()
    except KeyboardInterrupt:
        print(
            "fssbench: interrupted; finished episodes are kept: rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    summary = summary_table(cells)
    if not summary.empty:
        print()
        print(summary.to_markdown(index=False, floatfmt=".1f"))
    print()
    if args.engine == "ray":
        print(f"feature caches: on the Ray workers; on disk here: {runner.cache.disk_size() / 2**20:.1f} MiB")
    else:
        print(runner.cache.stats.summary() + f"; on disk: {runner.cache.disk_size() / 2**20:.1f} MiB")
    csv = runner.cells_csv
    print(f"tracking: {runner.tracker.uri} (experiment {study.name!r}); cells: {csv}")
    if study.random_init:
        print("WARNING: RANDOM-INIT WEIGHTS: these numbers check the pipeline, they are not results")
    if runner.failures:
        print(
            f"{len(runner.failures)} cell(s) FAILED (recorded as FAILED in MLflow, tag fss.error):",
            file=sys.stderr,
        )
        for f in runner.failures:
            print(f"  {f.cell}: {f.error}", file=sys.stderr)
        print("fix the cause and rerun the same command: finished cells are skipped", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``run`` and its options."""
    r = add_command(subparsers, "run", "run a study: every variant x dataset x fold x shot x seed cell")
    r.add_argument("study", help="study file (YAML), e.g. ablations/component-ablation.yaml")
    r.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. episodes=50 model.random_init=true"
    )
    add_tracking_uri(r)
    add_work_dir(r, "manifests, episode journals, locks, feature cache")
    add_device(r, "device of every variant: auto, cpu, cuda, cuda:1 (default: the study's)")
    r.add_argument("--force", action="store_true", help="rerun cells that are already finished")
    r.add_argument("--no-cache", action="store_true", help="recompute frozen features for every episode")
    r.add_argument(
        "--cache-dir",
        default=None,
        help="feature cache folder (default: <work-dir>/feature-cache); on a shared file system it serves every Ray node",
    )
    r.add_argument(
        "--cache-max-gb",
        type=non_negative_float,
        default=None,
        help="bound the disk feature cache (least recently used files are evicted; default: unbounded)",
    )
    r.add_argument(
        "--shard",
        type=shard_spec,
        default="0/1",
        metavar="I/N",
        help="run only cells i, i+N, ... (I/N), to split a study over processes",
    )
    r.add_argument(
        "--fail-fast", action="store_true", help="stop at the first failing cell (else: record it, go on)"
    )
    add_engine_options(r)
    add_throughput_options(r)
    r.set_defaults(fn=run)
