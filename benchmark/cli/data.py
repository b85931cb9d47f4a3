"""``fssbench data synth|prepare|check``: generate, prepare and check datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.cli.common import add_command, positive_int
from benchmark.data.classes import DATASETS
from benchmark.errors import FssBenchError


def run_synth(args: argparse.Namespace) -> int:
    """``data synth``: write a synthetic dataset in the raw on-disk format; print how to prepare it."""
    from benchmark.data.synth import synth_dataset, synth_raw_roots

    out = Path(args.out)
    request = _scale_request(args)
    if request is None:
        synth_dataset(args.dataset, out, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet)
    else:
        from benchmark.data.synth_scale import synth_scaled_dataset

        summary = synth_scaled_dataset(
            args.dataset, out, request, args.seed, args.workers, args.overwrite, not args.quiet
        )
        counts = ", ".join(f"{k[2:]} {v}" for k, v in summary.items() if k.startswith("n_"))
        print(f"{counts}; nominal size {request.size[0]}x{request.size[1]}")
    roots = " ".join(f"--{k} {v}" for k, v in synth_raw_roots(args.dataset, out).items())
    print(f"wrote a synthetic {args.dataset} dataset in the raw on-disk format to {out}")
    print(f"prepare it with: fssbench data prepare {args.dataset} {roots} --out DIR")
    return 0


def _scale_request(args: argparse.Namespace):
    """The real-size request of ``data synth`` (None: the default small dataset)."""
    from benchmark.data.synth_frequencies import COCO_REAL_SIZE, PASCAL_REAL_SIZE
    from benchmark.data.synth_scale_plans import ScaleRequest

    if args.scale is None and args.images is None:
        given = [
            f
            for f, v in (("--size", args.size), ("--fraction", args.fraction), ("--workers", args.workers))
            if v
        ]
        if given:
            raise FssBenchError(f"{', '.join(given)} need --scale real or --images N")
        return None
    if args.fraction is not None and not 0 < args.fraction <= 1:
        raise FssBenchError(f"--fraction {args.fraction}: must be in (0, 1]")
    size = args.size or (PASCAL_REAL_SIZE if args.dataset == "pascal" else COCO_REAL_SIZE)
    return ScaleRequest(args.images, size, 1.0 if args.fraction is None else args.fraction)


def _size(text: str) -> tuple[int, int]:
    """``WxH`` -> (W, H), each at least 96."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WxH, e.g. 500x375") from None
    if min(w, h) < 96:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides must be at least 96 px")
    return w, h


def run_prepare(args: argparse.Namespace) -> int:
    """``data prepare pascal|coco``: build a data root from raw downloads; print its splits and folds."""
    if args.dataset == "pascal":
        from benchmark.data.prepare_pascal import prepare_pascal

        info = prepare_pascal(
            Path(args.voc),
            Path(args.sbd),
            Path(args.out),
            args.workers,
            args.overwrite,
            args.copy_images,
            not args.quiet,
        )
    else:
        from benchmark.data.prepare_coco import prepare_coco

        info = prepare_coco(
            Path(args.coco), Path(args.out), args.workers, args.overwrite, args.copy_images, not args.quiet
        )
    s = info["splits"]
    print(
        f"prepared {args.dataset} at {args.out}: train {s['train']['images']} images, val {s['val']['images']} images"
    )
    for key, f in sorted(info["folds"].items()):
        print(f"  {key}: {f['val_images']} val (test) images, {f['train_images']} train images")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """``data check``: print every problem of a prepared data root; exit status 0 if none, else 1."""
    from benchmark.data.check import check_prepared

    report = check_prepared(Path(args.root), progress=not args.quiet, workers=args.workers)
    for p in report.problems:
        print(p)
    if report.ok:
        print(f"{args.root}: OK ({report.checked_images} image/mask pairs checked)")
        return 0
    print(
        f"{args.root}: {len(report.problems)} problem(s) in {report.checked_images} image/mask pairs",
        file=sys.stderr,
    )
    return 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``data`` and its commands ``synth``, ``prepare pascal|coco`` and ``check``."""
    data = add_command(subparsers, "data", "generate, prepare and check datasets").add_subparsers(
        dest="data_cmd", required=True
    )
    s = add_command(
        data, "synth", "write a synthetic dataset in the raw VOC/SBD or COCO format (small, or real-size)"
    )
    s.add_argument("--dataset", choices=DATASETS, required=True, help="which dataset's raw format")
    s.add_argument("--out", required=True, help="output folder (created; must not exist or be empty)")
    s.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same files)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument(
        "--scale",
        choices=("real",),
        default=None,
        help="the real datasets' image counts, sizes, class frequencies",
    )
    mode.add_argument(
        "--images", type=positive_int, default=None, help="N images in all, split in the real proportions"
    )
    s.add_argument(
        "--size", type=_size, default=None, help="nominal WxH with --scale/--images (500x375, 640x480)"
    )
    s.add_argument(
        "--fraction",
        type=float,
        default=None,
        help="with --scale/--images: keep this fraction of the training images (validation whole)",
    )
    s.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="with --scale/--images: processes (default: all cores)",
    )
    s.set_defaults(fn=run_synth)

    prep = add_command(data, "prepare", "build a data root (masks, lists, fold lists) from raw downloads")
    prep_sub = prep.add_subparsers(dest="dataset", required=True)
    pp = add_command(prep_sub, "pascal", "VOC2012 + SBD -> SegmentationClassAug and PASCAL-5i lists")
    pp.add_argument("--voc", required=True, help="VOC2012 folder (or VOCdevkit, or its parent)")
    pp.add_argument("--sbd", required=True, help="SBD 'dataset' folder (or benchmark_RELEASE)")
    pc = add_command(
        prep_sub, "coco", "COCO 2014 images + instances JSON -> semantic masks and COCO-20i lists"
    )
    pc.add_argument("--coco", required=True, help="folder with train2014/, val2014/, annotations/")
    for q in (pp, pc):
        q.add_argument("--out", required=True, help="prepared data root to create")
        q.add_argument(
            "--workers",
            type=positive_int,
            default=None,
            help="worker processes (default: CPU count, at most 8)",
        )
        q.add_argument("--overwrite", action="store_true", help="replace an existing output folder once done")
        q.add_argument(
            "--copy-images", action="store_true", help="copy images instead of symlinking the image folders"
        )
        q.set_defaults(fn=run_prepare)

    c = add_command(data, "check", "validate a prepared data root and list every problem")
    c.add_argument("root", help="prepared data root (the --out of `data prepare`)")
    c.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="worker processes reading the images and masks (default: every core)",
    )
    c.set_defaults(fn=run_check)
