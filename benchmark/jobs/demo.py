"""``fssbench demo``: the suite's main job on embedded defaults, with no arguments and no downloads.

1. generate a synthetic dataset in the raw VOC2012 + SBD format and prepare it with the real code;
2. check it;
3. run the demo study (FSSAM, naive SAM 2, no IMR, no SCMA, FG prior, oracle prior; fold 0; 1 and 5
   shots; 24 episodes per manifest) with tiny RANDOM-INIT models at 256 px, logged to a SQLite MLflow
   store;
4. score the model-free reference predictors on the same manifests;
5. run a short Optuna search over FSSAM's inference switches on the demo's validation manifests
   (base classes; ``ablations/searches/demo.yaml``), logged into the same experiment;
6. print the summary, write a Markdown summary and build the full report (tables, figures, the
   search, HTML).

A rerun reuses the generated data and skips finished cells.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm import tqdm

from benchmark.data.check import check_prepared
from benchmark.data.prepare_pascal import prepare_pascal
from benchmark.data.synth import synth_dataset, synth_raw_roots
from benchmark.episodes.manifest import load_manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.cell import CellSpec, evaluate_cell
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.io_utils import write_text_atomic

REFERENCE_PREDICTORS = {"mean-colour": "mean_colour", "all-foreground": "all_foreground"}
DEMO_VARIANTS = {
    "fssam": {},
    "naive-sam2": {"method": "naive_sam2"},
    "no-imr": {"imr_iters": 0},
    "no-scma": {"scma": False},
    "fg-prior": {"prior": "fg"},
    "oracle-prior": {"prior": "oracle"},
}


def demo_study(data_root: Path, episodes: int) -> dict:
    """The embedded demo study (also written next to the results as demo-study.yaml)."""
    return {
        "name": "fssbench-demo",
        "description": "FSSAM, naive SAM 2 and ablations on synthetic data with tiny RANDOM-INIT models",
        "data": {"pascal": str(data_root)},
        "protocol": "fssam",
        "folds": [0],
        "shots": [1, 5],
        "seeds": [321],
        "episodes": episodes,
        "model": {
            "sam2_version": "2.0",
            "sam2_size": "t",
            "image_size": 256,
            "dinov2": "vits14",
            "dinov2_input_size": 224,
            "random_init": True,
            "device": "auto",
        },
        "variants": DEMO_VARIANTS,
    }


def demo_search(raw_study: dict, episodes: int) -> dict:
    """The embedded demo search (``ablations/searches/demo.yaml`` with the study inline)."""
    return {
        "name": "fssbench-demo-search",
        "experiment": raw_study["name"],
        "description": "a short search on the demo data (tiny RANDOM-INIT models)",
        "study": raw_study,
        "variant": "fssam",
        "kind": "val",
        "episodes": max(2, episodes // 2),
        "space": {
            "imr_iters": {"type": "int", "low": 0, "high": 4},
            "scma_scale": {"type": "float", "low": 1.0, "high": 30.0, "log": True},
            "threshold": {"type": "float", "low": 0.2, "high": 0.8},
        },
        "objective": {"metric": "miou", "direction": "maximize", "folds": [0], "shots": [1]},
        "sampler": {"type": "tpe", "seed": 0, "startup_trials": 2},
        "pruner": {"type": "median", "startup_trials": 2, "warmup_steps": 0},
        "report_every": max(1, episodes // 6),
        "trials": 5,
    }


def _step(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _search_line(found, search, states: dict) -> str:
    text = f"{len(found.trials)} trials ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))})"
    if found.best is not None:
        params = ", ".join(f"{k}={v:.3g}" for k, v in sorted(found.best["params"].items()))
        text += f"; best trial {found.best['number']}: mIoU {100 * found.best['value']:.1f} with {params}"
    if "best_study" in found.outputs:
        text += f"; best parameters as a study file for the test manifests: `{found.outputs['best_study']}`"
    return text


def prepare_demo_data(out: Path, progress: bool) -> Path:
    raw, root = out / "raw" / "pascal", out / "data" / "pascal"
    if not (raw / "VOCdevkit").is_dir():
        _step(f"generating a synthetic PASCAL dataset in the raw VOC2012 + SBD format -> {raw}")
        synth_dataset("pascal", raw, seed=0, overwrite=True, progress=progress)
    else:
        _step(f"reusing generated raw data in {raw}")
    if not (root / "dataset.json").is_file():
        roots = synth_raw_roots("pascal", raw)
        _step(f"preparing it (SegmentationClassAug, lists, PASCAL-5i fold lists) -> {root}")
        prepare_pascal(roots["voc"], roots["sbd"], root, overwrite=True, progress=progress)
    else:
        _step(f"reusing prepared data in {root}")
    report = check_prepared(root, progress=progress)
    if not report.ok:
        raise FssBenchError(
            f"{root}: data check found {len(report.problems)} problem(s), first: {report.problems[0]}"
        )
    _step(f"data check OK ({report.checked_images} image/mask pairs)")
    return root


def score_reference_predictors(root: Path, manifests: list[Path], size: int, progress: bool) -> pd.DataFrame:
    """The model-free predictors on the study's manifests (a floor the models should beat), scored
    by the same cell function as the study, without tracking."""
    rows = []
    cache = FeatureCache(None, enabled=False)
    jobs = [(path, label, method) for path in manifests for label, method in REFERENCE_PREDICTORS.items()]
    for path, label, method in tqdm(jobs, desc="reference predictors", disable=not progress, leave=False):
        spec = CellSpec(method, {"image_size": size}, path, root, "cpu", f"{label}/{path.stem}")
        r = evaluate_cell(spec, cache)
        low, high = r.summary["miou_ci"]
        rows.append(
            {
                "predictor": label,
                "shot": r.manifest.shot,
                "mIoU (%)": 100 * r.summary["miou"],
                "mIoU 95% CI (%)": f"[{100 * low:.1f}, {100 * high:.1f}]",
                "FB-IoU (%)": 100 * r.summary["fb_iou"],
                "episodes": r.summary["n_episodes"],
            }
        )
    return pd.DataFrame(rows)


def reference_table(reference: pd.DataFrame):
    """The reference predictors as a report table (the report's HTML and Markdown show it too)."""
    from reports.tables import Table

    cols = ["mIoU (%)", "mIoU 95% CI (%)", "FB-IoU (%)", "episodes"]
    return Table(
        title="Model-free reference predictors on the same manifests (a floor the models should beat)",
        name="reference-predictors",
        columns=[("", c) for c in ["shot", *cols]],
        row_header="predictor",
        rows=list(reference["predictor"]),
        cells=[
            [
                str(r["shot"]),
                f"{r['mIoU (%)']:.1f}",
                r["mIoU 95% CI (%)"],
                f"{r['FB-IoU (%)']:.1f}",
                str(r["episodes"]),
            ]
            for _, r in reference.iterrows()
        ],
        values=[[r["shot"], *[r[c] for c in cols]] for _, r in reference.iterrows()],
        footer=["No model and no weights: nearest support colour prototype, and every pixel foreground."],
    )


def report_inputs(tracker: Any, experiment: str, reference_csv: str) -> str:
    """SHA-256 of everything the demo's report is built from: the experiment's runs other than
    report runs (id and status: a new or rerun cell or trial is a new run), the reference predictors' scores and the code that draws
    the report (its commit and the report and demo sources)."""
    from benchmark.records.tracking import git_commit

    exp = tracker.client.get_experiment_by_name(experiment)
    runs, token = [], None
    while exp is not None:
        page = tracker.client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        # id and status, not end time: a rerun joins the finished search and ends its run again
        runs += [(r.info.run_id, r.info.status) for r in page if r.data.tags.get("fss.kind") != "report"]
        token = page.token
        if not token:
            break
    h = hashlib.sha256()
    h.update(json.dumps(sorted(runs, key=str)).encode())
    h.update(reference_csv.encode())
    h.update(git_commit().encode())
    for path in report_sources():
        h.update(path.read_bytes())
    return h.hexdigest()


def report_sources() -> list[Path]:
    """The code that draws the demo's report: this module and the ``reports`` package's modules,
    with the Episodes view's script and style."""
    here = Path(__file__).resolve()
    reports = here.parents[2] / "reports"
    return sorted([here, *reports.glob("*.py"), *reports.glob("*.js"), *reports.glob("*.css")])


@dataclass
class DemoRuns:
    """What the demo ran: the study (its runner and summary table), the search (its runner and
    result) and the reference predictors' scores on the study's test manifests."""

    study: Any
    runner: Any
    summary: pd.DataFrame
    manifests: list[Path]
    reference: pd.DataFrame
    search: Any
    searcher: Any
    found: Any

    def search_line(self) -> str:
        states = pd.Series([t["state"] for t in self.found.trials]).value_counts().to_dict()
        return _search_line(self.found, self.search, states)


def run_demo(out: Path, episodes: int = 24, tracking_uri: str | None = None, progress: bool = True) -> Path:
    """Run the demo in ``out`` and return the path of the report it wrote."""
    import os

    t_start = time.perf_counter()
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    root = prepare_demo_data(out, progress)
    raw_study = demo_study(root, episodes)
    write_text_atomic(out / "demo-study.yaml", yaml.safe_dump(raw_study, sort_keys=False))
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{out / 'mlflow.db'}"
    runs = _run_study_and_search(out, root, raw_study, episodes, uri, progress)
    built, html, md = _build_report(runs, out / "report")
    elapsed = time.perf_counter() - t_start  # one figure, in the console and in the report
    report = _write_summary(runs, out / "report" / "demo-report.md", uri, html, md, elapsed)
    _print_summary(runs)
    _step(f"summary written to {report}")
    _step(built)
    _step(f"done in {elapsed:.0f} s")
    _print_next_steps(uri)
    return report


def _run_study_and_search(
    out: Path, root: Path, raw_study: dict, episodes: int, uri: str, progress: bool
) -> DemoRuns:
    """The demo study, the reference predictors on its test manifests, then the demo search."""
    from benchmark.jobs.run import StudyRunner, summary_table
    from benchmark.jobs.search import SearchRunner
    from benchmark.plan import study_manifests
    from benchmark.specs.search import parse_search
    from benchmark.specs.study import parse_study

    study = parse_study(raw_study, source=str(out / "demo-study.yaml"))
    _step(
        f"running the demo study: {len(study.variants)} variants x 2 shots, {episodes} episodes each, "
        f"tiny RANDOM-INIT models at 256 px; tracking: {uri}"
    )
    runner = StudyRunner(study, tracking_uri=uri, work_dir=out / "runs", progress=progress)
    cells = runner.run()
    if runner.failures:
        raise FssBenchError(
            f"{len(runner.failures)} demo cell(s) failed, first: {runner.failures[0].cell}: {runner.failures[0].error}"
        )
    summary = summary_table(cells)
    manifests = sorted(set(study_manifests(study, out / "runs").values()))  # the test manifests only
    _step("scoring the model-free reference predictors on the same manifests")
    reference = score_reference_predictors(root, manifests, 256, progress)

    search = parse_search(
        demo_search(raw_study, episodes), source="demo search (ablations/searches/demo.yaml)"
    )
    _step(
        f"searching FSSAM's inference switches: {search.trials} Optuna trials (TPE, median pruning) on the "
        f"validation manifests (base classes, {search.study.episodes} episodes), tracked in the same experiment"
    )
    searcher = SearchRunner(search, tracking_uri=uri, work_dir=out / "runs", progress=progress, log=_step)
    found = searcher.run()
    return DemoRuns(study, runner, summary, manifests, reference, search, searcher, found)


def _build_report(runs: DemoRuns, report_dir: Path) -> tuple[str, Path, Path]:
    """The full report from the tracked runs, kept when its inputs are unchanged; (the line saying
    what was built, the HTML report, the Markdown report)."""
    from reports.build import build_report

    assert runs.runner.tracker is not None
    inputs = report_inputs(runs.runner.tracker, runs.study.name, runs.reference.to_csv(index=False))
    stamp = report_dir / ".inputs.sha256"
    html, md = report_dir / "report.html", report_dir / "report.md"
    if stamp.is_file() and stamp.read_text().strip() == inputs and html.is_file() and md.is_file():
        _step("the report's inputs (tracked runs, reference scores, code) are unchanged: report kept")
        return f"report: {html} (kept)", html, md
    _step("building the report (tables, figures, HTML) from the tracked runs")
    stamp.unlink(missing_ok=True)
    full = build_report(
        runs.study.name,
        report_dir,
        tracker=runs.runner.tracker,
        extra_tables=[reference_table(runs.reference)],
    )
    write_text_atomic(stamp, inputs + "\n")
    built = (
        f"report: {full.html} ({len(full.tables)} tables and {len(full.figures)} figure files in {full.out})"
    )
    return built, html, md


def _write_summary(runs: DemoRuns, report: Path, uri: str, html: Path, md: Path, elapsed: float) -> Path:
    """The demo's Markdown summary (``demo-report.md``) beside the full report."""
    manifest_lines = "\n".join(f"- `{p.name}`: sha256 `{load_manifest(p).sha256}`" for p in runs.manifests)
    md_models = runs.summary.to_markdown(index=False, floatfmt=".1f")
    md_ref = runs.reference.to_markdown(index=False, floatfmt=".1f")
    write_text_atomic(
        report,
        "# fssbench demo report\n\n"
        "> **RANDOM-INIT WEIGHTS.** The SAM 2 and DINOv2 models of this demo are randomly initialised tiny "
        "models (SAM 2.0-T at 256 px, DINOv2-S at 224 px): their numbers check the pipeline and are not "
        "results. Point the study at real checkpoints for real numbers.\n\n"
        "Synthetic PASCAL-format data, fold 0, protocol fssam, seed 321, metrics at the original label "
        "resolution (class-wise mIoU, FB-IoU, percent).\n\n"
        f"## Models (fold 0 only, 1 of the 4 folds; one seed)\n\n{md_models}\n\n"
        f"## Model-free reference predictors (same manifests)\n\n{md_ref}\n\n"
        f"## Search (validation manifests, base classes)\n\n{runs.search_line()}\n\n"
        f"## Provenance\n\n{manifest_lines}\n\nTracking store: `{uri}`, experiment `{runs.study.name}`. "
        f"Full report: `{html.name}` and `{md.name}` beside this file. "
        f"Run time: {elapsed:.0f} s.\n",
    )
    return report


def _print_summary(runs: DemoRuns) -> None:
    print()
    print("RANDOM-INIT tiny models (numbers check the pipeline, they are not results):")
    print(runs.summary.to_markdown(index=False, floatfmt=".1f"))
    print()
    print("model-free reference predictors:")
    print(runs.reference.to_markdown(index=False, floatfmt=".1f"))
    print()
    print(f"search: {runs.search_line()}")
    print(
        runs.runner.cache.stats.summary() + " (study); " + runs.searcher.cache.stats.summary() + " (search)"
    )


def _print_next_steps(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        _step(f"browse the runs: mlflow ui --backend-store-uri {uri}   (then open http://127.0.0.1:5000)")
    _step(
        "real data and weights: fssbench fetch weights sam2-s dinov2-vitb14; "
        "fssbench fetch data pascal --prepare data/pascal; the authors' FSSAM checkpoints: "
        "fssbench fetch register FILE --as fssam/pascal/split0/1shot (README: Real data and weights)"
    )
    _step(
        "  then: fssbench run ablations/component-ablation.yaml data.pascal=data/pascal "
        "model.fssam_checkpoint='exp/{dataset}/{arch}/split{fold}/small/snapshot/best_{shot}shot.pth'"
    )
    _step(
        "  or with pretrained weights only: ... model.fssam_checkpoint=null "
        "model.sam2_checkpoint=checkpoints/sam2_hiera_small.pt "
        "model.dinov2_checkpoint=checkpoints/dinov2_vitb14_pretrain.pth "
        "(README: Studies)"
    )
