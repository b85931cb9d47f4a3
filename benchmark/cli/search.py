"""``fssbench search``: an Optuna search over a variant's switches on validation manifests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.cli.common import add_command, add_device, add_tracking_uri, add_work_dir, positive_int
from benchmark.cli.study_options import add_engine_options, refuse_ray_options


def run(args: argparse.Namespace) -> int:
    """``search``: the Optuna search, here or on Ray; 1 if trials failed in a row, 130 if interrupted."""
    from benchmark.specs.search import load_search

    spec = load_search(Path(args.search), args.overrides)  # validated before torch or MLflow load
    if args.device is not None:
        from benchmark.device import check_device

        check_device(args.device, "--device")
    from benchmark.jobs.search import SearchRunner, check_test_tuning, print_outcome

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
            from benchmark.jobs.search.ray import run_search_on_ray
            from benchmark.records.tracking import Tracker

            outcome = run_search_on_ray(
                spec,
                workers=args.workers or 2,
                ray_address=args.ray_address,
                gpus_per_worker=args.gpus_per_cell,
                cpus_per_worker=args.cpus_per_cell or 1.0,
                progress=not args.quiet,
                **common,
            )
            tracking_uri = Tracker(args.tracking_uri).uri
        else:
            outcome = runner.run()
            assert runner.tracker is not None
            tracking_uri = runner.tracker.uri
    except KeyboardInterrupt:
        print(
            "fssbench: interrupted; finished trials and scored episodes are kept: rerun the same "
            "command to resume the study (the interrupted trial is retried)",
            file=sys.stderr,
        )
        return 130
    print()
    print_outcome(outcome, spec, tracking_uri)
    if outcome.failures:
        print(
            f"fssbench: {outcome.failures} trial(s) failed in a row (see fss.error in MLflow)",
            file=sys.stderr,
        )
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``search`` and its options."""
    se = add_command(
        subparsers, "search", "an Optuna search over a variant's switches on validation manifests"
    )
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
    add_work_dir(se, "manifests, episode journals, locks, feature cache, outputs")
    add_device(se, "device: auto, cpu, cuda, cuda:1 (default: the variant's)")
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
    se.set_defaults(fn=run)
