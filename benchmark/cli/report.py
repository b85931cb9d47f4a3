"""``fssbench report``: tables, figures and an HTML report from an experiment's tracked runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.cli.common import add_command, add_tracking_uri
from benchmark.errors import FssBenchError


def run(args: argparse.Namespace) -> int:
    """``report``: build the report of --experiment; print where its tables, figures and HTML are."""
    from reports.build import build_report

    if args.episodes_only:
        return _episodes_only(args)
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
        args.experiment[0] if len(args.experiment) == 1 else args.experiment,
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


def _episodes_only(args: argparse.Namespace) -> int:
    """``report --episodes-only``: only the Episodes page, for large studies."""
    from reports.episodes_only import build_episodes_page

    path, notes = build_episodes_page(
        args.experiment[0] if len(args.experiment) == 1 else args.experiment,
        Path(args.out) if args.out else None,
        tracking_uri=args.tracking_uri,
        reference=args.reference,
    )
    for note in notes:
        print(f"note: {note}")
    print(f"Episodes page: {path}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``report`` and its options."""
    rp = add_command(
        subparsers, "report", "tables, figures and an HTML report from an experiment's tracked runs"
    )
    rp.add_argument(
        "--experiment",
        required=True,
        nargs="+",
        help="MLflow experiment (the study name); several are read as one (e.g. one per protocol)",
    )
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
        "--episodes-only",
        action="store_true",
        help="write only the Episodes page (episodes.html; no tables, no figures, not logged), for large studies",
    )
    rp.add_argument(
        "--references",
        default=None,
        metavar="FILE",
        help="published numbers shown beside the main tables (default: reports/references.yaml; none: no rows)",
    )
    rp.set_defaults(fn=run)
