"""The ``fssbench`` parser, composed of one module per command, and :func:`main`."""

from __future__ import annotations

import argparse

from benchmark import __version__
from benchmark.cli import (
    bench_model,
    cache,
    compare,
    data,
    demo,
    episodes,
    fetch,
    profile,
    report,
    run,
    search,
    train,
)
from benchmark.cli.common import HelpWithDefaults
from benchmark.cli.guards import notes_as_one_line, run_command

COMMANDS = (data, episodes, run, search, train, cache, fetch, profile, report, compare, bench_model, demo)
"""The command modules, in the order ``fssbench --help`` lists their commands."""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the global options and every command's parser (``args.fn`` runs it)."""
    p = argparse.ArgumentParser(
        prog="fssbench",
        description="Few-shot segmentation benchmark suite for SAM 2 / FSSAM.",
        formatter_class=HelpWithDefaults,
    )
    p.add_argument("--version", action="version", version=f"fssam-bench {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    subparsers = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit status."""
    args = build_parser().parse_args(argv)
    notes_as_one_line()
    return run_command(args)
