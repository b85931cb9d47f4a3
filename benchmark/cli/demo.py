"""``fssbench demo``: the whole pipeline on generated data, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.cli.common import add_command, positive_int


def run(args: argparse.Namespace) -> int:
    """``demo``: the whole pipeline on generated data in --out."""
    from benchmark.jobs.demo import run_demo

    run_demo(Path(args.out), episodes=args.episodes, tracking_uri=args.tracking_uri, progress=not args.quiet)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``demo`` and its options."""
    d = add_command(subparsers, "demo", "the whole pipeline on generated data, end to end")
    d.add_argument("--out", default="fssbench-demo", help="working folder (reused if it exists)")
    d.add_argument("--episodes", type=positive_int, default=24, help="episodes per manifest")
    d.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db)"
    )
    d.set_defaults(fn=run)
