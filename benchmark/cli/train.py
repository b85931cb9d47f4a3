"""``fssbench train`` and ``fssbench export``: fine-tune on a training file; export its checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.cli.common import add_command, add_device, add_tracking_uri


def run_train(args: argparse.Namespace) -> int:
    """``train``: fine-tune into --out (default under fssbench-train/); 130 if interrupted."""
    from benchmark.specs.train import check_select_on_test, load_train

    spec = load_train(Path(args.train), args.overrides)  # validated before the model is built
    check_select_on_test(spec, args.select_on_test)
    if args.device is not None:
        from benchmark.device import check_device

        check_device(args.device, "--device")
    from benchmark.jobs.train.job import Trainer, print_outcome

    out = (
        Path(args.out)
        if args.out
        else Path("fssbench-train")
        / spec.name
        / (f"{spec.method}-{spec.dataset}-fold{spec.fold}-{spec.shot}shot")
    )
    trainer = Trainer(
        spec,
        out,
        tracking_uri=args.tracking_uri,
        resume=args.resume,
        select_on_test=args.select_on_test,
        device=args.device,
        progress=not args.quiet,
    )
    try:
        outcome = trainer.run()
    except KeyboardInterrupt:
        print(
            f"fssbench: interrupted; resume from the last checkpoint with --resume --out {out}",
            file=sys.stderr,
        )
        return 130
    if trainer.rank == 0:
        print_outcome(outcome, spec)
    return 0


def run_export(args: argparse.Namespace) -> int:
    """``export``: write the fine-tuned checkpoint with its base weights in its method's layout."""
    from benchmark.specs.train import load_train

    spec = load_train(Path(args.train), args.overrides)
    from benchmark.jobs.train.export import export_checkpoint
    from benchmark.methods import get_trainable

    out = export_checkpoint(spec, Path(args.checkpoint), Path(args.out))
    print(f"wrote {out} in {get_trainable(spec.method).layout}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``train`` and ``export`` (which takes the same training file and overrides)."""
    t = add_command(
        subparsers, "train", "fine-tune FSSAM or naive SAM 2 episodically on a fold's base classes"
    )
    t.add_argument("train", help="training file (YAML), e.g. ablations/train/pascal.yaml")
    t.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. fold=1 method=naive_sam2 train.max_iters=50"
    )
    t.add_argument(
        "--out",
        default=None,
        help="output folder: checkpoints, state, manifests (default: fssbench-train/<name>/<method>-<dataset>-fold<k>-<K>shot)",
    )
    add_tracking_uri(t)
    t.add_argument("--resume", action="store_true", help="continue from <out>/train-state.pt")
    t.add_argument(
        "--select-on-test",
        action="store_true",
        help="allow val.kind: test (model selection on test episodes; tagged fss.tuned_on_test=true)",
    )
    add_device(t, "device: auto, cpu, cuda (default: auto; cuda:LOCAL_RANK under torchrun)")
    t.set_defaults(fn=run_train)

    x = add_command(
        subparsers, "export", "write a fine-tuned checkpoint with its base weights in the authors' layout"
    )
    x.add_argument("train", help="the training file the checkpoint was trained with")
    x.add_argument("overrides", nargs="*", help="the same key=value overrides as for training")
    x.add_argument("--checkpoint", required=True, help="the fine-tuned checkpoint (best.pth or last.pth)")
    x.add_argument("--out", required=True, help="file to write (.pth)")
    x.set_defaults(fn=run_export)
