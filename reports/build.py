"""``fssbench report``: tables, figures and a self-contained HTML page from an experiment's runs.

Everything written under ``--out`` is also logged to MLflow, as the artifacts of a run tagged
``fss.kind = report`` in the same experiment.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.errors import FssBenchError
from benchmark.io_utils import write_text_atomic
from benchmark.records.tracking import Tracker, git_commit
from reports import figures as F
from reports.collect import ExperimentData, cells_csv_frame, collect_experiments
from reports.html import Section, write_html
from reports.per_class import per_class_spread_tables
from reports.protocol_effect import protocol_effect_tables
from reports.references import DEFAULT_REFERENCES, Reference, load_references
from reports.rescore import rescore_experiment
from reports.rescore_tables import rescore_notes_section, rescored_tables
from reports.search import TUNED_ON_TEST_WARNING, SearchData, collect_searches, trials_table
from reports.tables import (
    METRIC_LABELS,
    Table,
    ablation_frame,
    ablation_table,
    imr_curve_ci,
    main_table,
    per_class_table,
    reference_variant,
    seeds_table,
)

RANDOM_INIT_WARNING = (
    "RANDOM-INIT WEIGHTS: at least one run of this experiment used randomly initialised models. "
    "Its numbers check the pipeline; they are not results."
)


@dataclass
class ReportOutput:
    out: Path
    html: Path
    markdown: Path
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None


def _write_table(t: Table, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / f"{t.name}.md", t.to_markdown())
    write_text_atomic(folder / f"{t.name}.tex", t.to_latex())
    write_text_atomic(folder / f"{t.name}.csv", t.to_csv())


def build_report(
    experiment: str | list[str],
    out: Path | None = None,
    tracking_uri: str | None = None,
    reference: str | None = None,
    qualitative: str | list[int] | None = "best-median-worst",
    qualitative_variant: str | None = None,
    log_to_mlflow: bool = True,
    tracker: Tracker | None = None,
    extra_tables: list[Table] | None = None,
    references: Path | None = DEFAULT_REFERENCES,
) -> ReportOutput:
    """Build the report of ``experiment`` into ``out`` (default ``reports-out/<experiment>``).

    ``extra_tables`` (e.g. the demo's model-free reference predictors) are written, shown in the
    HTML and Markdown and logged like the paper tables, after them. ``references``: the published
    numbers shown beside the main tables (reports/references.yaml; None: none). Several experiments
    (e.g. one per protocol of the protocol study) are read as one, named ``a+b``; the report is logged
    to the first; their searches are not read."""
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    experiment = "+".join(names)
    tracker = tracker or Tracker(tracking_uri, create=False)
    out = Path(out or Path("reports-out") / experiment).absolute()
    tables_dir, fig_dir = out / "tables", out / "figures"
    exp = tracker.client.get_experiment_by_name(experiment) if len(names) == 1 else None
    searches = (
        [] if exp is None else collect_searches(tracker.client, exp.experiment_id, fig_dir / "searches")
    )
    if searches and not _has_cells(tracker, exp.experiment_id):
        return _search_only_report(tracker, experiment, out, searches, log_to_mlflow)
    published = load_references(references)  # read (and validated) before any work
    with tempfile.TemporaryDirectory(prefix="fssbench-report-") as tmp:
        data = collect_experiments(tracker, names, Path(tmp))
    ref = reference_variant(data, reference)
    result = ReportOutput(out, out / "report.html", out / "report.md")

    # ---- tables
    result.tables.extend(_main_and_seed_tables(data, published))
    result.tables.extend(protocol_effect_tables(data))  # none unless the cells have several scorings
    ablation = ablation_frame(data, ref)
    result.tables.extend(_ablation_and_class_tables(data, ablation))
    result.tables.extend(per_class_spread_tables(data))
    rescored = rescore_experiment(data, tracker, out / "rescored")  # cached there per run
    result.tables.extend(rescored_tables(data, rescored))
    result.notes.extend(rescored.notes)
    result.tables.extend(extra_tables or [])
    for t in result.tables:
        _write_table(t, tables_dir)
    write_text_atomic(out / "cells.csv", cells_csv_frame(data.cells).to_csv(index=False))

    # ---- figures
    fig_sections = _figure_sections(data, ablation, ref, fig_dir, result)
    if qualitative:
        variant = qualitative_variant or ref
        section = _qualitative_section(data, tracker, qualitative, variant, fig_dir, result)
        if section is not None:
            fig_sections.insert(0, section)

    # ---- searches held by the same experiment
    search_tables, search_sections = _search_parts(searches, tables_dir, result)
    tuned = any(s.tuned_on_test for s in searches)

    # ---- the Episodes view (every episode, each variant's IoU and stored prediction)
    episodes = _episodes_section(data, tracker, ref, result)

    # ---- HTML and Markdown
    sections = [Section(t.title, html=t.to_html()) for t in result.tables if t not in search_tables]
    sections += [s for s in [rescore_notes_section(rescored)] if s is not None]
    _write_pages(
        result,
        experiment,
        tracker,
        sections + fig_sections + [episodes] + search_sections,
        data.random_init,
        tuned,
    )

    if log_to_mlflow:
        result.run_id = _log_report(tracker, data.experiment_id, data.random_init, out, tuned)
    return result


def _episodes_section(data: ExperimentData, tracker: Tracker, ref: str, result: ReportOutput) -> Section:
    """The Episodes view's section (reports/explorer_page.py); its notes go to ``result.notes``."""
    from reports.explorer import explorer_data
    from reports.explorer_page import episodes_section

    payload = explorer_data(data, tracker, ref)
    result.notes.extend(payload["notes"])
    return episodes_section(payload)


def _main_and_seed_tables(data: ExperimentData, published: list[Reference]) -> list[Table]:
    """Per dataset (in order of appearance): the mIoU and FB-IoU main tables (with the matching
    ``published`` numbers) and, when there is one, the seeds table."""
    tables = []
    for ds in dict.fromkeys(data.cells["dataset"]):
        for metric in ("miou", "fb_iou"):
            tables.append(main_table(data, ds, metric, published))
        st = seeds_table(data, ds)
        if st is not None:
            tables.append(st)
    return tables


def _ablation_and_class_tables(data: ExperimentData, ablation: pd.DataFrame) -> list[Table]:
    """An ablation table per (dataset, shot) of ``ablation`` (:func:`ablation_frame`), then a
    per-class table per (dataset, shot, fold) of the cells, sorted."""
    tables = []
    for (ds, shot), _ in ablation.groupby(["dataset", "shot"], sort=False):
        tables.append(ablation_table(data, ablation, ds, int(shot)))
    for (ds, shot, fold), _ in data.cells.groupby(["dataset", "shot", "fold"], sort=True):
        tables.append(per_class_table(data, ds, int(shot), int(fold)))
    return tables


def _save(figure, fig_dir: Path, stem: str, result: ReportOutput) -> Path:
    """Write ``figure`` as ``fig_dir/<stem>.png`` and ``.pdf``, add both to ``result.figures``;
    gives the PNG's path."""
    paths = F.save_figure(figure, fig_dir / stem)
    result.figures.extend(paths)
    return next(p for p in paths if p.suffix == ".png")


def _figure_sections(
    data: ExperimentData, ablation: pd.DataFrame, ref: str, fig_dir: Path, result: ReportOutput
) -> list[Section]:
    """Write the quantitative figures under ``fig_dir`` (recorded in ``result.figures``) and give
    their sections: the ablation bars (CIs of the difference from variant ``ref``), the IMR
    iterations curve (when FSSAM ran more than one number of iterations), the folds x variants
    heatmaps and the per-class bars (one per dataset and shot)."""
    rnd = data.random_init
    abl_png = _save(F.ablation_bar_chart(ablation, rnd), fig_dir, "ablation-bars", result)
    sections = [
        Section(
            "Ablation",
            images=[abl_png],
            text=f"Mean mIoU per variant; error bars from the paired 95% CI of the difference from {ref}.",
        )
    ]
    fssam_cells = data.cells[(data.cells["method"] == "fssam") & data.cells["imr_iters"].notna()]
    if fssam_cells["imr_iters"].nunique() > 1:
        curve = F.imr_curve(data.cells, rnd, ci=imr_curve_ci(data))
        sections.append(Section("IMR iterations", images=[_save(curve, fig_dir, "imr-iterations", result)]))
    heat, bars = [], []
    for (ds, shot), _ in data.cells.groupby(["dataset", "shot"], sort=False):
        heatmap = F.fold_variant_heatmap(data.cells, ds, int(shot), "miou", rnd)
        heat.append(_save(heatmap, fig_dir, f"heatmap-{ds}-{shot}shot", result))
        per_class = F.per_class_bars(data.per_class, ds, int(shot), rnd)
        bars.append(_save(per_class, fig_dir, f"per-class-{ds}-{shot}shot", result))
    sections.append(Section("Folds x variants (mIoU)", images=heat))
    sections.append(Section("Per-class IoU", images=bars))
    return sections


def _qualitative_section(
    data: ExperimentData,
    tracker: Tracker,
    qualitative: str | list[int],
    variant: str,
    fig_dir: Path,
    result: ReportOutput,
) -> Section | None:
    """Write a qualitative grid of ``variant`` per dataset and shot (the episodes ``qualitative``
    picks, from the first run by fold and seed) and give their section (None: no grid). A grid
    that cannot be drawn is skipped with a note in ``result.notes``; an unknown ``variant`` raises
    :class:`FssBenchError`."""
    from reports.episodes import episode_panels

    images = []
    sel = data.cells[data.cells["variant"] == variant]
    if sel.empty:
        raise FssBenchError(f"--qualitative-variant {variant!r} is not a variant of this experiment")
    for (ds, shot), group in sel.groupby(["dataset", "shot"], sort=False):
        run_id = group.sort_values(["fold", "seed"]).iloc[0]["run_id"]
        try:
            panels = episode_panels(data, tracker, run_id, qualitative)
        except FssBenchError as e:
            result.notes.append(f"qualitative figure for {variant} {ds} {shot}-shot skipped: {e}")
            continue
        grid = F.qualitative_grid(panels, data.random_init)
        images.append(_save(grid, fig_dir, f"qualitative-{variant}-{ds}-{shot}shot", result))
    if not images:
        return None
    return Section(
        "Qualitative results",
        images=images,
        text="Support with mask, query, FG prior, Disc prior, Disc prior after each "
        "IMR iteration, prediction and ground truth; IoU in each row title.",
    )


def _write_pages(
    result: ReportOutput,
    experiment: str,
    tracker: Tracker,
    sections: list[Section],
    random_init: bool,
    tuned_on_test: bool,
) -> None:
    """Write ``result.html`` (``sections``) and ``result.markdown`` (every table and PNG figure of
    ``result``, then its notes), both headed by the warnings that apply and signed with the
    tracking URI and the code's git commit."""
    footer = f"fssam-bench report of MLflow experiment {experiment!r} ({tracker.uri}), code {git_commit()}."
    write_html(
        result.html,
        f"fssbench report: {experiment}",
        sections,
        warning=_warning(random_init, tuned_on_test),
        footer=footer,
    )
    md = [f"# fssbench report: {experiment}", ""]
    if random_init:
        md += [f"> **{RANDOM_INIT_WARNING}**", ""]
    if tuned_on_test:
        md += [f"> **{TUNED_ON_TEST_WARNING}**", ""]
    md += [t.to_markdown() for t in result.tables]
    md += [
        f"![{p.stem}]({p.relative_to(result.out).as_posix()})" for p in result.figures if p.suffix == ".png"
    ]
    md += ["", *[f"- {n}" for n in result.notes], "", footer]
    write_text_atomic(result.markdown, "\n".join(md) + "\n")


def _has_cells(tracker: Tracker, experiment_id: str) -> bool:
    runs = tracker.client.search_runs(
        [experiment_id],
        filter_string="tags.`fss.kind` = 'cell' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return bool(runs)


def _warning(random_init: bool, tuned_on_test: bool) -> str | None:
    parts = ([RANDOM_INIT_WARNING] if random_init else []) + (
        [TUNED_ON_TEST_WARNING] if tuned_on_test else []
    )
    return " ".join(parts) or None


def _search_parts(
    searches: list[SearchData], tables_dir: Path, result: ReportOutput
) -> tuple[list[Table], list[Section]]:
    """The trials table and Optuna's plots of every search, added to ``result``."""
    tables, sections = [], []
    for search in searches:
        t = trials_table(search)
        _write_table(t, tables_dir)
        result.tables.append(t)
        tables.append(t)
        result.figures.extend(search.plots)
        best = search.best
        text = (
            f"Optuna study {search.optuna_study!r}: {len(search.trials)} trials on {search.kind} manifests."
        )
        if best is not None:
            params = ", ".join(f"{k} = {v}" for k, v in sorted(best["params"].items())) or "none"
            label = METRIC_LABELS.get(search.metric, search.metric)
            text += f" Best: trial {best['number']}, {label} {100 * best['value']:.2f}% with {params}."
        if search.tuned_on_test:
            text = "TUNED ON TEST EPISODES. " + text
        sections.append(Section(f"Search {search.name}", html=t.to_html(), images=search.plots, text=text))
    return tables, sections


def _search_only_report(
    tracker: Tracker, experiment: str, out: Path, searches: list[SearchData], log_to_mlflow: bool
) -> ReportOutput:
    """The report of an experiment that holds searches and no study cells."""
    result = ReportOutput(out, out / "report.html", out / "report.md")
    tables, sections = _search_parts(searches, out / "tables", result)
    rnd = any(s.random_init for s in searches)
    tuned = any(s.tuned_on_test for s in searches)
    footer = f"fssam-bench report of MLflow experiment {experiment!r} ({tracker.uri}), code {git_commit()}."
    write_html(
        result.html, f"fssbench report: {experiment}", sections, warning=_warning(rnd, tuned), footer=footer
    )
    md = [f"# fssbench report: {experiment}", ""]
    md += [f"> **{w}**" for w, on in ((RANDOM_INIT_WARNING, rnd), (TUNED_ON_TEST_WARNING, tuned)) if on]
    md += ["", *[t.to_markdown() for t in tables]]
    md += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in result.figures]
    md += ["", footer]
    write_text_atomic(result.markdown, "\n".join(md) + "\n")
    if log_to_mlflow:
        exp = tracker.client.get_experiment_by_name(experiment)
        result.run_id = _log_report(tracker, exp.experiment_id, rnd, out, tuned)
    return result


def _log_report(
    tracker: Tracker, experiment_id: str, random_init: bool, out: Path, tuned_on_test: bool = False
) -> str:
    run = tracker.client.create_run(
        experiment_id,
        run_name=f"report {pd.Timestamp.now():%Y-%m-%d %H:%M:%S}",
        tags={
            "fss.kind": "report",
            "fss.random_init": str(random_init).lower(),
            "fss.tuned_on_test": str(tuned_on_test).lower(),
            "fss.git_commit": git_commit(),
        },
    )
    rid = run.info.run_id
    try:
        tracker.client.log_artifacts(rid, str(out), "report")
    except BaseException:
        tracker.end_run(rid, "FAILED")
        raise
    tracker.end_run(rid, "FINISHED")
    # one report run per experiment: the new one replaces the earlier ones (deleted only now, so an
    # interrupted report never leaves the experiment without one)
    earlier = tracker.client.search_runs([experiment_id], filter_string="tags.`fss.kind` = 'report'")
    for r in earlier:
        if r.info.run_id != rid:
            tracker.client.delete_run(r.info.run_id)
    return rid
