"""``fssbench data synth|prepare|check``: generate, prepare and check datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.cli.common import add_command, positive_int
from benchmark.data.classes import DATASETS


def run_synth(args: argparse.Namespace) -> int:
    """``data synth``: write a synthetic dataset in the raw on-disk format; print how to prepare it."""
    from benchmark.data.synth import synth_dataset, synth_raw_roots

    out = Path(args.out)
    synth_dataset(args.dataset, out, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet)
    roots = " ".join(f"--{k} {v}" for k, v in synth_raw_roots(args.dataset, out).items())
    print(f"wrote a synthetic {args.dataset} dataset in the raw on-disk format to {out}")
    print(f"prepare it with: fssbench data prepare {args.dataset} {roots} --out DIR")
    return 0


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
    s = add_command(data, "synth", "write a small synthetic dataset in the raw VOC/SBD or COCO format")
    s.add_argument("--dataset", choices=DATASETS, required=True, help="which dataset's raw format")
    s.add_argument("--out", required=True, help="output folder (created; must not exist or be empty)")
    s.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same files)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
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
