"""Options of the commands that run a study (``run``, ``profile``) or a search (``search``): the
throughput options, the engine options, ``--shard``, and the study they describe.

Imports nothing heavy at module level: torch and MLflow load only once the study has been validated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.cli.common import non_negative_float, positive_float, positive_int
from benchmark.device import FEATURE_DTYPE_NAMES
from benchmark.errors import FssBenchError


def shard_spec(text: str) -> tuple[int, int]:
    """argparse type of ``--shard``: ``I/N`` with 0 <= I < N, refused at parse time (before the
    study is read or torch imported)."""
    try:
        i, n = (int(x) for x in text.split("/"))
        if not 0 <= i < n:
            raise ValueError
        return i, n
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, e.g. 0/2, got {text!r}") from None


def add_throughput_options(p: argparse.ArgumentParser) -> None:
    """--batch-size, --cache-dtype, --compile, --deterministic (``run`` and ``profile``)."""
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="episodes per forward (the study's batch_size; default 1)",
    )
    p.add_argument(
        "--cache-dtype",
        choices=FEATURE_DTYPE_NAMES,
        default=None,
        help="storage dtype of cached frozen features (the study's cache.dtype; changes the numbers slightly)",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the encoders, memory attention and decoder"
    )
    p.add_argument(
        "--deterministic", action="store_true", help="deterministic kernels (no cuDNN autotuning, no TF32)"
    )


def throughput_overrides(args: argparse.Namespace) -> list[str]:
    """The study overrides that --batch-size and --cache-dtype stand for."""
    out = []
    if args.batch_size is not None:
        out.append(f"batch_size={args.batch_size}")
    if args.cache_dtype is not None:
        out.append(f"cache.dtype={args.cache_dtype}")
    return out


def load_study_for(args: argparse.Namespace):
    """The study of ``run``/``profile``: the file with its overrides, --batch-size/--cache-dtype and
    --device applied (validated before torch or MLflow are imported); --deterministic switched on."""
    from benchmark.specs.study import load_study, with_device

    study = load_study(Path(args.study), args.overrides + throughput_overrides(args))
    if args.device is not None:
        study = with_device(study, args.device)
    if args.deterministic:
        from benchmark.device import set_deterministic

        set_deterministic()
    return study


def refuse_ray_options(args: argparse.Namespace) -> None:
    """The Ray engine's options given with --engine local: an error naming the option."""
    for flag in ("ray_address", "workers", "gpus_per_cell", "cpus_per_cell"):
        if getattr(args, flag) is not None:
            raise FssBenchError(f"--{flag.replace('_', '-')} applies to --engine ray only")


def add_engine_options(p: argparse.ArgumentParser, search: bool = False) -> None:
    """--engine local|ray and the Ray engine's options (``run``, ``search``: Optuna workers)."""
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: cells one after the other in this process; ray: on Ray workers (benchmark/engines)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join: auto, HOST:PORT (default: start one on this machine, loopback only)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="Optuna workers on Ray, sharing one study (default: 2)"
        if search
        else "Ray workers (default: as many as the cluster holds)",
    )
    p.add_argument(
        "--gpus-per-cell",
        type=non_negative_float,
        default=None,
        help="GPUs each Ray worker reserves (default: the study's resources, else 1 with GPUs, 0 without)",
    )
    p.add_argument(
        "--cpus-per-cell",
        type=positive_float,
        default=None,
        help="CPUs each Ray worker reserves, its torch threads (default: the study's resources, else 1)",
    )
