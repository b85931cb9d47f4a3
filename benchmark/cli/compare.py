"""``fssbench compare``: the same cells of several experiments side by side, with paired differences."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.cli.common import add_command, add_tracking_uri


def run(args: argparse.Namespace) -> int:
    """``compare``: print the tables of paired differences and write them to --out."""
    from reports.compare import compare_experiments

    out = Path(args.out) if args.out else Path("reports-out") / ("compare-" + "-vs-".join(args.experiments))
    for table in compare_experiments(args.experiments, args.tracking_uri, out):
        print(table.to_markdown())
    print(f"tables (Markdown, LaTeX, CSV) in {out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``compare`` and its options."""
    cp = add_command(
        subparsers, "compare", "the same cells of several experiments side by side, with paired differences"
    )
    cp.add_argument(
        "experiments", nargs="+", help="MLflow experiments; each after the first is compared with it"
    )
    add_tracking_uri(cp)
    cp.add_argument("--out", default=None, help="output folder (default: reports-out/compare-A-vs-B)")
    cp.set_defaults(fn=run)
