"""``fssbench episodes``: write a hashed episode manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.cli.common import add_command, positive_int
from benchmark.data.classes import COCO_SPLITS, DATASETS
from benchmark.episodes import protocol_names
from benchmark.episodes.manifest import Manifest
from benchmark.episodes.protocols.fssam_exact import EXACT_LISTS
from benchmark.errors import FssBenchError


def run(args: argparse.Namespace) -> int:
    """``episodes``: write the manifest (other content at --out only with --overwrite); print its hash."""
    import warnings

    from benchmark.episodes import get_protocol
    from benchmark.episodes.manifest import load_manifest, save_manifest
    from benchmark.episodes.manifests import ManifestRequest, ValPoolWarning, build_manifest

    protocol = get_protocol(args.protocol)
    protocol = protocol.configure({k: getattr(args, k) for k in protocol.user_options})
    request = ManifestRequest(
        Path(args.data_root),
        fold=args.fold,
        shot=args.shot,
        seed=args.seed,
        episodes=args.episodes,
        kind=args.kind,
        coco_split=args.split,
        dataset=args.dataset,
        resolution=args.eval_resolution,
        eval_size=args.eval_size,
        val_source=args.val_source,
        holdout_fraction=args.holdout_fraction,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ValPoolWarning)
        manifest = build_manifest(protocol, request)
    for w in caught:  # the left-out classes as one plain line; any other warning as Python shows it
        if issubclass(w.category, ValPoolWarning):
            print(f"note: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        try:
            same = load_manifest(out).sha256 == manifest.sha256
        except FssBenchError:
            same = False
        if not same:
            raise FssBenchError(f"{out} exists with other content; pass --overwrite or choose another --out")
    save_manifest(manifest, out)
    print(
        f"{manifest.sha256}  {out}  ({manifest.num_episodes} {manifest.kind} episodes, "
        f"{manifest.dataset} fold {manifest.fold}, {manifest.shot}-shot, {manifest.protocol}, "
        f"seed {manifest.seed}{_draw_note(manifest)})"
    )
    return 0


def _draw_note(manifest: Manifest) -> str:
    """ ", 4 loader workers, own lists, scored resized to 400 px" (and a val manifest's held-out
    source and left-out classes) for manifests that record these."""
    draw, ev = manifest.draw or {}, manifest.scoring
    parts = [f"{draw['loader_workers']} loader workers"] if "loader_workers" in draw else []
    parts += [f"{draw['lists']} lists"] if "lists" in draw else []
    if ev and ev.resolution == "resized":
        parts.append(f"scored resized to {ev.size} px")
    if ev and not ev.ignore:
        parts.append("no ignore label")
    if manifest.source.holdout is not None:
        parts.append(f"from the train split's held-out {manifest.source.holdout.fraction}")
    if manifest.left_out:
        parts.append(f"{len(manifest.left_out)} base class(es) left out")
    return "".join(f", {p}" for p in parts)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``episodes`` and its options."""
    e = add_command(subparsers, "episodes", "write a hashed episode manifest")
    e.add_argument("--dataset", choices=DATASETS, required=True, help="dataset of the data root")
    e.add_argument("--data-root", required=True, help="prepared data root")
    e.add_argument("--fold", type=int, required=True, choices=range(4), metavar="{0..3}", help="test fold")
    e.add_argument("--shot", type=positive_int, required=True, help="supports per episode (K)")
    e.add_argument(
        "--protocol",
        choices=protocol_names(),
        default="fssam",
        help="episode protocol (fssam-exact: the FSSAM release's own test episodes, exactly)",
    )
    e.add_argument(
        "--loader-workers",
        type=int,
        default=32,
        help="fssam-exact: the DataLoader workers whose random streams the release draws with (theirs: 32); "
        "the protocol's draw_workers, not decoding threads",
    )
    e.add_argument(
        "--lists",
        choices=EXACT_LISTS,
        default="own",
        help="fssam-exact: the root's PFENet-format lists, or the release's PASCAL lists (matched by image id)",
    )
    e.add_argument(
        "--eval-resolution",
        choices=("original", "resized"),
        default=None,
        help="where episodes are scored: the label's size, or a square (default: the protocol's; hsnet resized)",
    )
    e.add_argument(
        "--eval-size", type=positive_int, default=None, help="side of the resized square (HSNet: 400)"
    )
    e.add_argument(
        "--seed", type=int, default=None, help="sampler seed (default: the protocol's, fssam 321, hsnet 0)"
    )
    e.add_argument(
        "--episodes", type=positive_int, default=None, help="episodes (default: the protocol's, 1000)"
    )
    e.add_argument(
        "--kind",
        choices=("test", "val"),
        default="test",
        help="test: novel classes; val: base classes, on images without a novel-class pixel",
    )
    e.add_argument(
        "--val-source",
        choices=("val", "train-holdout"),
        default="val",
        help="--kind val: draw from the val split, or from a held-out slice of the train split",
    )
    e.add_argument(
        "--holdout-fraction",
        type=float,
        default=None,
        help="--val-source train-holdout: the share of the train split held out (default 0.1)",
    )
    e.add_argument("--split", choices=COCO_SPLITS, default="interleaved", help="COCO-20i class split")
    e.add_argument("--out", required=True, help="manifest file to write (JSON)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing manifest with other content")
    e.set_defaults(fn=run)
