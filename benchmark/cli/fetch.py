"""``fssbench fetch weights|data|register``: official weights and datasets, verified and resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.cli.common import add_command, non_negative_int
from benchmark.cli.data import run_check, run_prepare
from benchmark.data.classes import DATASETS
from benchmark.errors import FssBenchError


def run(args: argparse.Namespace) -> int:
    """``fetch weights|data|register``; 130 if interrupted (partial downloads are kept)."""
    try:
        return _fetch(args)
    except KeyboardInterrupt:
        print(
            "fssbench: interrupted; partial downloads (*.part) are kept and an interrupted extraction "
            "left nothing: run the same command to resume",
            file=sys.stderr,
        )
        return 130


def _fetch(args: argparse.Namespace) -> int:
    progress = not args.quiet
    if args.fetch_cmd == "weights":
        from benchmark.fetch.weights import fetch_weights, list_weights

        out = Path(args.out)
        if args.list:
            print(f"{'name':14} {'file':30} {'approx. size':>12}  on disk in {out}")
            for row in list_weights(out):
                print(f"{row.name:14} {row.file:30} {row.approx_mb:9,.0f} MiB  {row.on_disk}")
            print(
                "(approx. size: parameters x 4 bytes; `fssbench fetch weights NAME...` downloads and verifies)"
            )
            return 0
        if not args.names:
            raise FssBenchError(
                "fetch weights: name the checkpoints (e.g. sam2-s dinov2-vitb14), or pass --list"
            )
        from benchmark.fetch.sources import weights_named

        for w in weights_named(args.names):  # all names checked before the first download
            (f,) = fetch_weights([w.name], out, args.mirror, progress, retries=args.retries)
            print(f"{f.status:10} {f.path}  sha256 {f.sha256}", flush=True)
        print(f"lock file: {out / 'fssbench-lock.json'}")
        return 0
    if args.fetch_cmd == "data":
        from benchmark.fetch.data import fetch_data, prepare_command

        out = Path(args.out)
        for f, what in fetch_data(args.dataset, out, args.mirror, progress, retries=args.retries):
            print(f"{f.status:10} {f.path}  sha256 {f.sha256}  ({what})")
        prepared = Path(args.prepare) if args.prepare else Path("data") / args.dataset
        command = prepare_command(args.dataset, out, prepared)
        if not args.prepare:
            print(f"raw {args.dataset} is in {out}; prepare it with:\n  {command}")
            return 0
        print(f"+ {command}")
        ns = {"pascal": {"voc": out / "VOCdevkit", "sbd": out / "benchmark_RELEASE"}, "coco": {"coco": out}}
        run_prepare(
            argparse.Namespace(
                dataset=args.dataset,
                out=str(prepared),
                workers=None,
                overwrite=False,
                copy_images=False,
                quiet=args.quiet,
                **ns[args.dataset],
            )
        )
        print(f"+ fssbench data check {prepared}")
        return run_check(argparse.Namespace(root=str(prepared), quiet=args.quiet, workers=None))
    from benchmark.fetch.weights import register_checkpoint

    path, sha, what = register_checkpoint(
        Path(args.file), args.as_, Path(args.root), args.sam2_config, args.dinov2, args.force
    )
    print(f"{what}: {path}  sha256 {sha}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``fetch`` and its commands ``weights``, ``data`` and ``register``."""
    f = add_command(
        subparsers, "fetch", "download the official weights and datasets, verified and resumable"
    ).add_subparsers(dest="fetch_cmd", required=True)
    fw = add_command(
        f, "weights", "SAM 2.0/2.1 and DINOv2 checkpoints from Meta's URLs, loaded strictly once fetched"
    )
    fw.add_argument("names", nargs="*", help="checkpoints, e.g. sam2-s dinov2-vitb14 (see --list)")
    fw.add_argument("--list", action="store_true", help="names, approximate sizes and what is on disk")
    fw.add_argument("--out", default="checkpoints", help="folder for the files and their lock file")
    fd = add_command(
        f, "data", "raw PASCAL (VOC2012 + SBD) or COCO 2014 archives, extracted for `data prepare`"
    )
    fd.add_argument("dataset", choices=DATASETS, help="which dataset")
    fd.add_argument("--out", default="raw", help="raw root: archives, their lock file, extracted folders")
    fd.add_argument(
        "--prepare", default=None, metavar="DIR", help="then run `data prepare` into DIR and `data check` it"
    )
    for q in (fw, fd):
        q.add_argument(
            "--mirror",
            default=None,
            help="base URL of a mirror serving HOST/PATH of each official URL (default: $FSSBENCH_MIRROR)",
        )
        q.add_argument(
            "--retries",
            type=non_negative_int,
            default=5,
            help="retries of a transfer that makes no progress (each resumes, with back-off)",
        )
        q.set_defaults(fn=run)
    fr = add_command(
        f, "register", "verify a manually downloaded FSSAM checkpoint and file it where the studies look"
    )
    fr.add_argument("file", help="the checkpoint from the FSSAM release (best_1shot.pth / best_5shot.pth)")
    fr.add_argument(
        "--as", dest="as_", required=True, metavar="NAME", help="fssam/{pascal|coco}/split{0-3}/{1|5}shot"
    )
    fr.add_argument(
        "--root", default="exp", help="folder of the authors' exp/ tree (the studies' fssam_checkpoint)"
    )
    fr.add_argument(
        "--sam2-config", default="sam2_hiera_s", help="the checkpoint's SAM 2 config (authors: s, b+, l)"
    )
    fr.add_argument("--dinov2", default="vitb14", help="the checkpoint's DINOv2 arch")
    fr.add_argument("--force", action="store_true", help="replace a different checkpoint already filed there")
    fr.set_defaults(fn=run)
