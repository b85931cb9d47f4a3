"""``fssbench cache info|prune|clear``: what the frozen-feature cache holds on disk; bound or clear it."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.cli.common import add_command, add_work_dir, non_negative_float
from benchmark.errors import FssBenchError


def run(args: argparse.Namespace) -> int:
    """``cache info|prune|clear`` on --cache-dir (default: <work-dir>/feature-cache)."""
    from benchmark.cache_admin import cache_info, clear, prune

    folder = Path(args.cache_dir) if args.cache_dir else Path(args.work_dir) / "feature-cache"
    if not folder.is_dir():
        raise FssBenchError(f"{folder}: no feature cache there (pass --work-dir or --cache-dir)")
    if args.cache_cmd == "info":
        usage = cache_info(folder)
        for u in usage:
            print(f"{u.bytes / 2**20:10.1f} MiB  {u.files:7d} files  {u.folder}  {u.encoder}")
        total = sum(u.bytes for u in usage)
        print(f"{total / 2**20:10.1f} MiB  {sum(u.files for u in usage):7d} files  in {folder}")
    elif args.cache_cmd == "prune":
        removed, freed = prune(folder, int(args.max_gb * 2**30))
        print(f"removed {removed} least recently used file(s), {freed / 2**20:.1f} MiB, from {folder}")
    else:
        if not args.yes:
            raise FssBenchError(f"clear removes {folder} entirely; pass --yes to confirm")
        print(f"removed {folder} ({clear(folder) / 2**20:.1f} MiB)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``cache`` and its commands ``info``, ``prune`` and ``clear``."""
    ca = add_command(
        subparsers, "cache", "what the frozen-feature cache holds on disk; bound or clear it"
    ).add_subparsers(dest="cache_cmd", required=True)
    ci = add_command(ca, "info", "size and files per encoder identity")
    cp_ = add_command(ca, "prune", "remove least recently used files down to --max-gb")
    cp_.add_argument("--max-gb", type=non_negative_float, required=True, help="size to keep, in GiB")
    cc = add_command(ca, "clear", "remove the whole cache")
    cc.add_argument("--yes", action="store_true", help="confirm")
    for q in (ci, cp_, cc):
        add_work_dir(q, "the work folder whose feature-cache/ to use")
        q.add_argument("--cache-dir", default=None, help="a cache folder (default: <work-dir>/feature-cache)")
        q.set_defaults(fn=run)
