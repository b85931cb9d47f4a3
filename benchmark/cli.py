"""The ``fssbench`` command line.

Every command turns FssBenchError (bad input) into one line on stderr and exit status 2, and writes
its outputs atomically, so a failed or interrupted command leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmark import __version__
from benchmark.data.classes import COCO_SPLITS, DATASETS
from benchmark.device import FEATURE_DTYPE_NAMES
from benchmark.errors import USER_ERRORS, FssBenchError


def _cmd_synth(args: argparse.Namespace) -> int:
    from benchmark.data.synth import synth_dataset, synth_raw_roots

    out = Path(args.out)
    synth_dataset(args.dataset, out, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet)
    roots = " ".join(f"--{k} {v}" for k, v in synth_raw_roots(args.dataset, out).items())
    print(f"wrote a synthetic {args.dataset} dataset in the raw on-disk format to {out}")
    print(f"prepare it with: fssbench data prepare {args.dataset} {roots} --out DIR")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
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


def _cmd_check(args: argparse.Namespace) -> int:
    from benchmark.data.check import check_prepared

    report = check_prepared(Path(args.root), progress=not args.quiet)
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


def _cmd_episodes(args: argparse.Namespace) -> int:
    import warnings

    from benchmark.episodes import ValPoolWarning, build_manifest, load_manifest, save_manifest

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ValPoolWarning)
        manifest = build_manifest(
            Path(args.data_root),
            fold=args.fold,
            shot=args.shot,
            protocol=args.protocol,
            seed=args.seed,
            episodes=args.episodes,
            kind=args.kind,
            coco_split=args.split,
            dataset=args.dataset,
            loader_workers=args.loader_workers,
            lists=args.lists,
            resolution=args.eval_resolution,
            eval_size=args.eval_size,
            val_source=args.val_source,
            holdout_fraction=args.holdout_fraction,
        )
    for w in caught:  # the left-out classes as one plain line; any other warning as Python shows it
        if issubclass(w.category, ValPoolWarning):
            print(f"note: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        try:
            same = load_manifest(out)["sha256"] == manifest["sha256"]
        except FssBenchError:
            same = False
        if not same:
            raise FssBenchError(f"{out} exists with other content; pass --overwrite or choose another --out")
    save_manifest(manifest, out)
    print(
        f"{manifest['sha256']}  {out}  ({manifest['num_episodes']} {manifest['kind']} episodes, "
        f"{manifest['dataset']} fold {manifest['fold']}, {manifest['shot']}-shot, {manifest['protocol']}, "
        f"seed {manifest['seed']}{_draw_note(manifest)})"
    )
    return 0


def _draw_note(manifest: dict) -> str:
    """ ", 4 loader workers, own lists, scored resized to 400 px" (and a val manifest's held-out
    source and left-out classes) for manifests that record these."""
    draw, ev = manifest.get("draw", {}), manifest.get("eval")
    parts = [f"{draw['loader_workers']} loader workers"] if "loader_workers" in draw else []
    parts += [f"{draw['lists']} lists"] if "lists" in draw else []
    if ev and ev["resolution"] == "resized":
        parts.append(f"scored resized to {ev['size']} px")
    if ev and not ev["ignore_255"]:
        parts.append("no ignore label")
    if "holdout" in manifest["source"]:
        parts.append(f"from the train split's held-out {manifest['source']['holdout']['fraction']}")
    if manifest.get("left_out"):
        parts.append(f"{len(manifest['left_out'])} base class(es) left out")
    return "".join(f", {p}" for p in parts)


def _cmd_demo(args: argparse.Namespace) -> int:
    from benchmark.demo import run_demo

    run_demo(Path(args.out), episodes=args.episodes, tracking_uri=args.tracking_uri, progress=not args.quiet)
    return 0


def _cmd_bench_model(args: argparse.Namespace) -> int:
    from benchmark.model_bench import bench_model, print_bench

    print_bench(
        bench_model(
            args.sam2_size,
            args.dinov2,
            args.image_size,
            args.shots,
            args.repeats,
            args.device,
            args.threads,
            args.method,
            args.batch_size,
        )
    )
    return 0


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
    from benchmark.study import load_study, with_device

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


def _cmd_run(args: argparse.Namespace) -> int:
    study = load_study_for(args)
    from benchmark.runner import StudyRunner, summary_table

    common = dict(
        tracking_uri=args.tracking_uri,
        work_dir=Path(args.work_dir),
        force=args.force,
        use_cache=not args.no_cache,
        progress=not args.quiet,
        shard=args.shard,
        fail_fast=args.fail_fast,
        cache_max_bytes=None if args.cache_max_gb is None else int(args.cache_max_gb * 2**30),
        compile=args.compile,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )
    if args.engine == "ray":
        from benchmark.engines.ray_study import RayStudyRunner

        runner: StudyRunner = RayStudyRunner(
            study,
            ray_address=args.ray_address,
            workers=args.workers,
            gpus_per_cell=args.gpus_per_cell,
            cpus_per_cell=args.cpus_per_cell,
            **common,
        )
    else:
        refuse_ray_options(args)
        runner = StudyRunner(study, **common)
    try:
        cells = runner.run()
    except KeyboardInterrupt:
        print(
            "fssbench: interrupted; finished episodes are kept: rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    summary = summary_table(cells)
    if not summary.empty:
        print()
        print(summary.to_markdown(index=False, floatfmt=".1f"))
    print()
    if args.engine == "ray":
        print(f"feature caches: on the Ray workers; on disk here: {runner.cache.disk_size() / 2**20:.1f} MiB")
    else:
        print(runner.cache.stats.summary() + f"; on disk: {runner.cache.disk_size() / 2**20:.1f} MiB")
    csv = runner.cells_csv
    print(f"tracking: {runner.tracker.uri} (experiment {study.name!r}); cells: {csv}")
    if study.random_init:
        print("WARNING: RANDOM-INIT WEIGHTS: these numbers check the pipeline, they are not results")
    if runner.failures:
        print(
            f"{len(runner.failures)} cell(s) FAILED (recorded as FAILED in MLflow, tag fss.error):",
            file=sys.stderr,
        )
        for f in runner.failures:
            print(f"  {f.cell}: {f.error}", file=sys.stderr)
        print("fix the cause and rerun the same command: finished cells are skipped", file=sys.stderr)
        return 1
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from benchmark.search_file import load_search

    spec = load_search(Path(args.search), args.overrides)  # validated before torch or MLflow load
    if args.device is not None:
        from benchmark.device import check_device

        check_device(args.device, "--device")
    from benchmark.search import SearchRunner, check_test_tuning, print_outcome

    check_test_tuning(spec, args.allow_test_tuning)
    common = dict(
        tracking_uri=args.tracking_uri,
        work_dir=Path(args.work_dir),
        storage=args.storage,
        study_name=args.study_name,
        trials=args.trials,
        timeout=args.timeout,
        allow_test_tuning=args.allow_test_tuning,
        device=args.device,
        heartbeat_s=args.heartbeat,
        use_cache=not args.no_cache,
    )
    if args.engine != "ray":
        refuse_ray_options(args)
    runner = SearchRunner(spec, progress=not args.quiet, **common)
    try:
        if args.engine == "ray":
            from benchmark.engines.ray_search import run_search_on_ray
            from benchmark.tracking import Tracker

            outcome = run_search_on_ray(
                spec,
                workers=args.workers or 2,
                ray_address=args.ray_address,
                gpus_per_worker=args.gpus_per_cell,
                cpus_per_worker=args.cpus_per_cell or 1.0,
                progress=not args.quiet,
                **common,
            )
            runner.tracker = Tracker(args.tracking_uri)
        else:
            outcome = runner.run()
    except KeyboardInterrupt:
        print(
            "fssbench: interrupted; finished trials and scored episodes are kept: rerun the same "
            "command to resume the study (the interrupted trial is retried)",
            file=sys.stderr,
        )
        return 130
    print()
    assert runner.tracker is not None
    print_outcome(outcome, spec, runner.tracker.uri)
    if outcome.failures:
        print(
            f"fssbench: {outcome.failures} trial(s) failed in a row (see fss.error in MLflow)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from benchmark.train_file import check_select_on_test, load_train

    spec = load_train(Path(args.train), args.overrides)  # validated before the model is built
    check_select_on_test(spec, args.select_on_test)
    if args.device is not None:
        from benchmark.device import check_device

        check_device(args.device, "--device")
    from benchmark.trainer import Trainer, print_outcome

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


def _cmd_export(args: argparse.Namespace) -> int:
    from benchmark.train_file import load_train

    spec = load_train(Path(args.train), args.overrides)
    from benchmark.trainer import export_checkpoint

    out = export_checkpoint(spec, Path(args.checkpoint), Path(args.out))
    layout = "Meta's SAM 2 layout (sam2_checkpoint)" if spec.method == "naive_sam2" else "the authors' layout"
    print(f"wrote {out} in {layout}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
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


def _cmd_fetch(args: argparse.Namespace) -> int:
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
        _cmd_prepare(
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
        return _cmd_check(argparse.Namespace(root=str(prepared), quiet=args.quiet))
    from benchmark.fetch.weights import register_checkpoint

    path, sha, what = register_checkpoint(
        Path(args.file), args.as_, Path(args.root), args.sam2_config, args.dinov2, args.force
    )
    print(f"{what}: {path}  sha256 {sha}")
    return 0


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _cmd_profile(args: argparse.Namespace) -> int:
    study = load_study_for(args)
    work = Path(args.work_dir) if args.work_dir else None
    if args.engine == "ray":
        from benchmark.engine_profile import parse_worker_counts, print_engine_profile, profile_engine

        counts = parse_worker_counts(args.workers or "1,2")
        table = profile_engine(
            study, counts, work, args.ray_address, args.cpus_per_cell, progress=not args.quiet
        )
        print_engine_profile(study, table, args.ray_address or "a Ray instance started on this machine")
        return 0
    if args.workers or args.ray_address:
        raise FssBenchError("--workers and --ray-address apply to --engine ray only")
    from benchmark.profile import print_profile, profile_study

    r = profile_study(
        study, work, progress=not args.quiet, dtype_episodes=args.dtype_episodes, compile=args.compile
    )
    print_profile(study, r)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from reports.compare import compare_experiments

    out = Path(args.out) if args.out else Path("reports-out") / ("compare-" + "-vs-".join(args.experiments))
    for table in compare_experiments(args.experiments, args.tracking_uri, out):
        print(table.to_markdown())
    print(f"tables (Markdown, LaTeX, CSV) in {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from reports.build import build_report

    how: str | list[int] | None = "best-median-worst"
    if args.no_qualitative:
        how = None
    elif args.episodes:
        try:
            how = [int(x) for x in args.episodes.split(",")]
        except ValueError:
            raise FssBenchError(
                f"--episodes {args.episodes!r}: expected comma-separated episode ids, e.g. 3,17"
            ) from None
    res = build_report(
        args.experiment,
        Path(args.out) if args.out else None,
        tracking_uri=args.tracking_uri,
        reference=args.reference,
        qualitative=how,
        qualitative_variant=args.variant,
        log_to_mlflow=not args.no_log,
        **(
            {}
            if args.references is None
            else {"references": None if args.references == "none" else Path(args.references)}
        ),
    )
    for note in res.notes:
        print(f"note: {note}")
    print(f"{len(res.tables)} tables (Markdown, LaTeX, CSV) in {res.out / 'tables'}")
    print(f"{len(res.figures)} figure files (PNG, PDF) in {res.out / 'figures'}")
    print(f"HTML report: {res.html}")
    if res.run_id:
        print(f"logged to MLflow run {res.run_id} (artifacts under report/)")
    return 0


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (the error names the option, exit status 2, before any work)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    """The ``--tracking-uri`` option every command that reads or writes MLflow runs has."""
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )


class _Help(argparse.HelpFormatter):
    """Every option's help shows its default (options whose default is None or off say it in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fssbench",
        description="Few-shot segmentation benchmark suite for SAM 2 / FSSAM.",
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"fssam-bench {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(parent, name: str, help: str) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help, description=help, formatter_class=_Help)

    data = cmd(sub, "data", "generate, prepare and check datasets").add_subparsers(
        dest="data_cmd", required=True
    )
    s = cmd(data, "synth", "write a small synthetic dataset in the raw VOC/SBD or COCO format")
    s.add_argument("--dataset", choices=DATASETS, required=True, help="which dataset's raw format")
    s.add_argument("--out", required=True, help="output folder (created; must not exist or be empty)")
    s.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same files)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    s.set_defaults(fn=_cmd_synth)

    prep = cmd(data, "prepare", "build a data root (masks, lists, fold lists) from raw downloads")
    prep_sub = prep.add_subparsers(dest="dataset", required=True)
    pp = cmd(prep_sub, "pascal", "VOC2012 + SBD -> SegmentationClassAug and PASCAL-5i lists")
    pp.add_argument("--voc", required=True, help="VOC2012 folder (or VOCdevkit, or its parent)")
    pp.add_argument("--sbd", required=True, help="SBD 'dataset' folder (or benchmark_RELEASE)")
    pc = cmd(prep_sub, "coco", "COCO 2014 images + instances JSON -> semantic masks and COCO-20i lists")
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
        q.set_defaults(fn=_cmd_prepare)

    c = cmd(data, "check", "validate a prepared data root and list every problem")
    c.add_argument("root", help="prepared data root (the --out of `data prepare`)")
    c.set_defaults(fn=_cmd_check)

    e = cmd(sub, "episodes", "write a hashed episode manifest")
    e.add_argument("--dataset", choices=DATASETS, required=True, help="dataset of the data root")
    e.add_argument("--data-root", required=True, help="prepared data root")
    e.add_argument("--fold", type=int, required=True, choices=range(4), metavar="{0..3}", help="test fold")
    e.add_argument("--shot", type=positive_int, required=True, help="supports per episode (K)")
    e.add_argument(
        "--protocol",
        choices=("fssam", "hsnet", "fssam-exact"),
        default="fssam",
        help="episode protocol (fssam-exact: the FSSAM release's own test episodes, exactly)",
    )
    e.add_argument(
        "--loader-workers",
        type=int,
        default=32,
        help="fssam-exact: the DataLoader workers whose random streams the release draws with (theirs: 32)",
    )
    e.add_argument(
        "--lists",
        choices=("own", "authors"),
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
    e.set_defaults(fn=_cmd_episodes)

    r = cmd(sub, "run", "run a study: every variant x dataset x fold x shot x seed cell")
    r.add_argument("study", help="study file (YAML), e.g. ablations/component-ablation.yaml")
    r.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. episodes=50 model.random_init=true"
    )
    add_tracking_uri(r)
    r.add_argument(
        "--work-dir", default="fssbench-runs", help="manifests, episode journals, locks, feature cache"
    )
    r.add_argument(
        "--device",
        default=None,
        help="device of every variant: auto, cpu, cuda, cuda:1 (default: the study's)",
    )
    r.add_argument("--force", action="store_true", help="rerun cells that are already finished")
    r.add_argument("--no-cache", action="store_true", help="recompute frozen features for every episode")
    r.add_argument(
        "--cache-dir",
        default=None,
        help="feature cache folder (default: <work-dir>/feature-cache); on a shared file system it serves every Ray node",
    )
    r.add_argument(
        "--cache-max-gb",
        type=non_negative_float,
        default=None,
        help="bound the disk feature cache (least recently used files are evicted; default: unbounded)",
    )
    r.add_argument(
        "--shard",
        type=shard_spec,
        default="0/1",
        metavar="I/N",
        help="run only cells i, i+N, ... (I/N), to split a study over processes",
    )
    r.add_argument(
        "--fail-fast", action="store_true", help="stop at the first failing cell (else: record it, go on)"
    )
    add_engine_options(r)
    add_throughput_options(r)
    r.set_defaults(fn=_cmd_run)

    se = cmd(sub, "search", "an Optuna search over a variant's switches on validation manifests")
    se.add_argument("search", help="search file (YAML), e.g. ablations/searches/fssam-inference-pascal.yaml")
    se.add_argument(
        "overrides",
        nargs="*",
        help="key=value overrides of the search file, e.g. trials=6 study.episodes=20 study.model.random_init=true",
    )
    se.add_argument(
        "--trials",
        type=positive_int,
        default=None,
        help="finished trials wanted in total (default: the file's)",
    )
    se.add_argument(
        "--timeout", type=float, default=None, help="stop starting trials after this many seconds"
    )
    se.add_argument(
        "--storage",
        default=None,
        help="Optuna storage: sqlite:///PATH, postgresql://..., or journal:PATH "
        "(default: optuna.db beside the MLflow store)",
    )
    se.add_argument("--study-name", default=None, help="Optuna study name (default: the search's name)")
    add_tracking_uri(se)
    se.add_argument(
        "--work-dir",
        default="fssbench-runs",
        help="manifests, episode journals, locks, feature cache, outputs",
    )
    se.add_argument("--device", default=None, help="device: auto, cpu, cuda, cuda:1 (default: the variant's)")
    se.add_argument(
        "--allow-test-tuning",
        action="store_true",
        help="allow kind: test (tags the study, its trials and runs fss.tuned_on_test=true)",
    )
    se.add_argument(
        "--heartbeat",
        type=positive_int,
        default=60,
        help="seconds between trial heartbeats (RDB storages); a trial silent for twice that is retried",
    )
    se.add_argument("--no-cache", action="store_true", help="recompute frozen features for every episode")
    add_engine_options(se, search=True)
    se.set_defaults(fn=_cmd_search)

    t = cmd(sub, "train", "fine-tune FSSAM or naive SAM 2 episodically on a fold's base classes")
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
    t.add_argument(
        "--device",
        default=None,
        help="device: auto, cpu, cuda (default: auto; cuda:LOCAL_RANK under torchrun)",
    )
    t.set_defaults(fn=_cmd_train)

    x = cmd(sub, "export", "write a fine-tuned checkpoint with its base weights in the authors' layout")
    x.add_argument("train", help="the training file the checkpoint was trained with")
    x.add_argument("overrides", nargs="*", help="the same key=value overrides as for training")
    x.add_argument("--checkpoint", required=True, help="the fine-tuned checkpoint (best.pth or last.pth)")
    x.add_argument("--out", required=True, help="file to write (.pth)")
    x.set_defaults(fn=_cmd_export)

    ca = cmd(sub, "cache", "what the frozen-feature cache holds on disk; bound or clear it").add_subparsers(
        dest="cache_cmd", required=True
    )
    ci = cmd(ca, "info", "size and files per encoder identity")
    cp_ = cmd(ca, "prune", "remove least recently used files down to --max-gb")
    cp_.add_argument("--max-gb", type=non_negative_float, required=True, help="size to keep, in GiB")
    cc = cmd(ca, "clear", "remove the whole cache")
    cc.add_argument("--yes", action="store_true", help="confirm")
    for q in (ci, cp_, cc):
        q.add_argument(
            "--work-dir", default="fssbench-runs", help="the work folder whose feature-cache/ to use"
        )
        q.add_argument("--cache-dir", default=None, help="a cache folder (default: <work-dir>/feature-cache)")
        q.set_defaults(fn=_cmd_cache)

    f = cmd(
        sub, "fetch", "download the official weights and datasets, verified and resumable"
    ).add_subparsers(dest="fetch_cmd", required=True)
    fw = cmd(
        f, "weights", "SAM 2.0/2.1 and DINOv2 checkpoints from Meta's URLs, loaded strictly once fetched"
    )
    fw.add_argument("names", nargs="*", help="checkpoints, e.g. sam2-s dinov2-vitb14 (see --list)")
    fw.add_argument("--list", action="store_true", help="names, approximate sizes and what is on disk")
    fw.add_argument("--out", default="checkpoints", help="folder for the files and their lock file")
    fd = cmd(f, "data", "raw PASCAL (VOC2012 + SBD) or COCO 2014 archives, extracted for `data prepare`")
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
        q.set_defaults(fn=_cmd_fetch)
    fr = cmd(
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
    fr.set_defaults(fn=_cmd_fetch)

    pr = cmd(sub, "profile", "episodes/s and peak memory per variant, and the feature cache's speed-up")
    pr.add_argument("study", help="study file (YAML)")
    pr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. episodes=20")
    pr.add_argument(
        "--work-dir", default=None, help="where the temporary runs go (default: the system temp folder)"
    )
    pr.add_argument("--device", default=None, help="device of every variant (default: the study's)")
    pr.add_argument(
        "--dtype-episodes",
        type=int,
        default=8,
        help="episodes on which fp16/bf16 cached features are compared with fp32 (0: skip)",
    )
    pr.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: the cache profile; ray: cells/s per Ray worker count (--workers 1,2)",
    )
    pr.add_argument("--workers", default=None, help="--engine ray: worker counts to compare (default: 1,2)")
    pr.add_argument(
        "--ray-address", default=None, help="--engine ray: the cluster (default: one on this machine)"
    )
    pr.add_argument(
        "--cpus-per-cell", type=positive_float, default=None, help="--engine ray: CPUs per worker (default 1)"
    )
    add_throughput_options(pr)
    pr.set_defaults(fn=_cmd_profile)

    rp = cmd(sub, "report", "tables, figures and an HTML report from an experiment's tracked runs")
    rp.add_argument("--experiment", required=True, help="MLflow experiment (the study name)")
    rp.add_argument("--out", default=None, help="output folder (default: reports-out/<experiment>)")
    add_tracking_uri(rp)
    rp.add_argument(
        "--reference", default=None, help="variant the ablation differences are taken from (default: fssam)"
    )
    rp.add_argument(
        "--variant", default=None, help="variant of the qualitative figure (default: the reference)"
    )
    rp.add_argument(
        "--episodes",
        default=None,
        help="episode ids for the qualitative figure, e.g. 3,17 (default: best, median, worst)",
    )
    rp.add_argument(
        "--no-qualitative", action="store_true", help="skip the qualitative figure (no model re-run)"
    )
    rp.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    rp.add_argument(
        "--references",
        default=None,
        metavar="FILE",
        help="published numbers shown beside the main tables (default: reports/references.yaml; none: no rows)",
    )
    rp.set_defaults(fn=_cmd_report)

    cp = cmd(sub, "compare", "the same cells of several experiments side by side, with paired differences")
    cp.add_argument(
        "experiments", nargs="+", help="MLflow experiments; each after the first is compared with it"
    )
    add_tracking_uri(cp)
    cp.add_argument("--out", default=None, help="output folder (default: reports-out/compare-A-vs-B)")
    cp.set_defaults(fn=_cmd_compare)

    b = cmd(sub, "bench-model", "time one episode with and without precomputed features (random weights)")
    b.add_argument("--method", default="fssam", choices=("fssam", "naive_sam2"), help="method to time")
    b.add_argument("--sam2-size", default="s", choices=("t", "s", "b+", "l"), help="SAM 2 size")
    b.add_argument(
        "--dinov2", default="vitb14", choices=("vits14", "vitb14", "vitl14", "vitg14"), help="DINOv2"
    )
    b.add_argument("--image-size", type=positive_int, default=512, help="SAM 2 input size (a multiple of 64)")
    b.add_argument("--shots", type=positive_int, default=1, help="supports per episode (K)")
    b.add_argument("--repeats", type=positive_int, default=3, help="timed repeats after one warm-up (median)")
    b.add_argument("--device", default="cpu", help="torch device")
    b.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    b.add_argument(
        "--batch-size", type=positive_int, default=1, help="episodes per forward (time per episode)"
    )
    b.set_defaults(fn=_cmd_bench_model)

    d = cmd(sub, "demo", "the whole pipeline on generated data, end to end")
    d.add_argument("--out", default="fssbench-demo", help="working folder (reused if it exists)")
    d.add_argument("--episodes", type=positive_int, default=24, help="episodes per manifest")
    d.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db)"
    )
    d.set_defaults(fn=_cmd_demo)
    return p


def check_path_options(args: argparse.Namespace) -> None:
    """Before any work, nothing created: the tracking store given by ``--tracking-uri`` or
    ``MLFLOW_TRACKING_URI`` is one fssbench can use, and ``--work-dir``/``--cache-dir`` name folders
    (or nothing yet) with no file on their path."""
    from benchmark.tracking import check_tracking_uri

    uri = getattr(args, "tracking_uri", None)
    if uri:
        check_tracking_uri(uri, "--tracking-uri")
    elif hasattr(args, "tracking_uri") and os.environ.get("MLFLOW_TRACKING_URI"):
        check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI")
    for name in ("work_dir", "cache_dir"):
        value = getattr(args, name, None)
        if not value:
            continue
        option, path = "--" + name.replace("_", "-"), Path(value)
        for p in (path, *path.parents):
            if p.exists():
                if not p.is_dir():
                    what = "is a file" if p == path else f"has a file on its path ({p})"
                    raise FssBenchError(f"{option} {value} {what}; name a folder (it is created if missing)")
                break


NOTE_WARNINGS = ("ValPoolWarning",)
"""Warnings that are notes to the user (a validation class left out): one plain line each."""


def _notes_as_one_line() -> None:
    """Show the warnings of :data:`NOTE_WARNINGS` as ``fssbench: note: ...`` (one line, no file and
    source line), whichever command raises them; any other warning as Python shows it."""
    import warnings

    shown = warnings.showwarning
    if getattr(shown, "fssbench_notes", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if category.__name__ in NOTE_WARNINGS:
            print(f"fssbench: note: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    show.fssbench_notes = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _notes_as_one_line()
    try:
        check_path_options(args)
        return args.fn(args)
    except USER_ERRORS as e:
        print(f"fssbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fssbench: interrupted; nothing partial was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
