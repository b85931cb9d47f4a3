"""`fssbench report` on a small real study: numbers checked against the per-episode tables."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.data.classes import novel_classes
from benchmark.jobs.run import StudyRunner
from benchmark.specs.study import load_study
from tests.test_report_latex import compile_tex, require_pdflatex

MODEL = {
    "sam2_size": "t",
    "image_size": 256,
    "dinov2": "vits14",
    "dinov2_input_size": 224,
    "random_init": True,
}


def class_wise_miou(table: pd.DataFrame, classes: list[int]) -> float:
    """Independent recomputation: accumulate I and U per class, IoU per class, mean over classes."""
    ious = []
    for c in classes:
        sel = table[table["class"] == c]
        u = sel["U_fg"].sum()
        ious.append(sel["I_fg"].sum() / u if u else 0.0)
    return float(np.mean(ious))


@pytest.fixture(scope="module")
def report(pascal_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    study = {
        "name": "rep",
        "data": {"pascal": str(pascal_root)},
        "folds": [0, 1],
        "shots": [1],
        "seeds": [321, 7],
        "episodes": 3,
        "model": MODEL,
        "variants": {"fssam": {}, "no-imr": {"imr_iters": 0}},
    }
    (tmp / "s.yaml").write_text(yaml.safe_dump(study))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    StudyRunner(
        load_study(tmp / "s.yaml"), tracking_uri=uri, work_dir=tmp / "w", progress=False, qualitative=0
    ).run()
    code = main(["-q", "report", "--experiment", "rep", "--tracking-uri", uri, "--out", str(tmp / "out")])
    assert code == 0
    # the per-episode tables, read back from MLflow independently of the report code
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("rep")
    episodes = {}
    for r in client.search_runs([exp.experiment_id], filter_string="tags.`fss.kind` = 'cell'"):
        t = r.data.tags
        path = client.download_artifacts(r.info.run_id, "episodes.parquet", str(tmp / "dl" / r.info.run_id))
        episodes[(t["fss.variant"], int(t["fss.fold"]), int(t["fss.seed"]))] = pd.read_parquet(path)
    return tmp / "out", uri, episodes


def md_lines(path) -> list[str]:
    return path.read_text().splitlines()


def md_rows(path) -> dict[str, list[str]]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| method") and not line.startswith("| variant"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_main_table_matches_per_episode_tables(report):
    out, _, episodes = report
    rows = md_rows(out / "tables" / "main-pascal-miou.md")
    expected, per_seed = {}, {}
    for variant in ("fssam", "no-imr"):
        folds = []
        for fold in (0, 1):
            seeds = [
                class_wise_miou(episodes[(variant, fold, s)], novel_classes("pascal", fold)) for s in (321, 7)
            ]
            folds.append(100 * np.mean(seeds))
        expected[variant] = [*folds, np.mean(folds)]
        # each seed's mean over the folds, then mean +- std over the 2 seeds
        per_seed[variant] = [
            100
            * np.mean(
                [class_wise_miou(episodes[(variant, f, s)], novel_classes("pascal", f)) for f in (0, 1)]
            )
            for s in (321, 7)
        ]
        got = [float(c.strip("*")) for c in rows[variant][:2]]
        assert got == pytest.approx([round(x, 1) for x in expected[variant][:2]], abs=0.051)
        mean, sd = np.mean(per_seed[variant]), np.std(per_seed[variant], ddof=1)
        assert rows[variant][2].strip("*") == f"{mean:.1f} ± {sd:.1f}"
        low, high = (float(x) for x in re.findall(r"\d+\.\d", rows[variant][3]))
        assert low <= round(mean, 1) + 0.05 and high >= round(mean, 1) - 0.05
    # the best value of each fold column is bold
    for j in range(2):
        best = max(expected, key=lambda v: expected[v][j])
        assert rows[best][j].startswith("**")
    csv = pd.read_csv(out / "tables" / "main-pascal-miou.csv", index_col=0)
    assert csv.loc["fssam"].tolist()[:3] == pytest.approx(expected["fssam"], abs=1e-9)
    # the published number (a 4-fold mean) sits in a column of its own, not under our "mean (2 of 4
    # folds)", labelled, with its source; no difference on 2 of 4 folds
    header = next(
        line for line in md_lines(out / "tables" / "main-pascal-miou.md") if line.startswith("| method")
    )
    names = [c.strip() for c in header.strip("|").split("|")][1:]
    assert names[2].endswith("mean (2 of 4 folds)") and names[4].endswith("mean of 4 folds (published)")
    assert rows["FSSAM (published)"][4] == "81.0" and rows["FSSAM (published)"][2] == "–"
    assert rows["fssam − published"][4] == "–" and rows["fssam"][4] == "–"
    md = (out / "tables" / "main-pascal-miou.md").read_text()
    assert "Published (not measured here): FSSAM, PASCAL-5i 1-shot mean mIoU 81.0. Source: Unlocking" in md
    assert "fewer than 4 folds" in md and "95% CI: percentile bootstrap over seeds" in md


def test_ablation_table_difference_is_the_paired_mean(report):
    out, _, episodes = report
    rows = md_rows(out / "tables" / "ablation-pascal-1shot.md")
    diffs = [
        class_wise_miou(episodes[("no-imr", f, s)], novel_classes("pascal", f))
        - class_wise_miou(episodes[("fssam", f, s)], novel_classes("pascal", f))
        for f in (0, 1)
        for s in (321, 7)
    ]
    assert rows["fssam"][1] == "(reference)"
    assert float(rows["no-imr"][1].rstrip(" *")) == pytest.approx(100 * np.mean(diffs), abs=0.051)
    low, high = (float(x) for x in re.findall(r"[-+]?\d+\.\d+", rows["no-imr"][2]))
    assert (
        low <= float(rows["no-imr"][1].rstrip(" *")) + 0.05
        and high >= float(rows["no-imr"][1].rstrip(" *")) - 0.05
    )
    assert rows["no-imr"][3] == "4"  # 2 folds x 2 seeds paired on identical manifests


def test_per_class_table_is_mean_and_std_over_seeds(report):
    out, _, episodes = report
    rows = md_rows(out / "tables" / "per-class-pascal-fold1-1shot.md")
    c = 6  # bus, fold 1's first class
    vals = []
    for s in (321, 7):
        t = episodes[("fssam", 1, s)]
        sel = t[t["class"] == c]
        vals.append(100 * (sel["I_fg"].sum() / sel["U_fg"].sum() if sel["U_fg"].sum() else 0.0))
    mean, sd = np.mean(vals), np.std(vals, ddof=1)
    assert rows["fssam"][0].strip("*") == f"{mean:.1f} ± {sd:.1f}"


def test_latex_structure_and_provenance(report):
    out, _, _ = report
    tex = (out / "tables" / "main-pascal-miou.tex").read_text()
    assert tex.startswith("\\begin{table}") and tex.rstrip().endswith("\\end{table}")
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    assert tex.count("{") == tex.count("}") + tex.count("\\{") - tex.count("\\}")
    body = tex[tex.index("\\midrule") + 8 : tex.index("\\bottomrule")].strip().splitlines()
    assert len(body) == 4 and all(
        line.count("&") == 5 and line.endswith("\\\\") for line in body
    )  # 2 variants + the published row and its difference; fold0, fold1, mean +- std, 95% CI, published
    assert "FSSAM (published)" in tex
    assert "\\textbf{" in tex and "RANDOM-INIT" in tex and "Manifests (sha256)" in tex


def test_every_report_tex_compiles_with_pdflatex(report, tmp_path):
    """The ``.tex`` tables the report wrote (main, seeds, ablation, per-class) compile with booktabs."""
    out, _, _ = report
    pdflatex = require_pdflatex()
    texs = sorted((out / "tables").glob("*.tex"))
    assert "ablation-pascal-1shot.tex" in {p.name for p in texs} and len(texs) >= 5
    for tex in texs:
        assert tex.read_text(encoding="utf-8").isascii(), tex.name
        compile_tex(pdflatex, tex, tmp_path / tex.stem)
    md = (out / "tables" / "ablation-pascal-1shot.md").read_text()
    assert "Δ" in md and not re.search(r"(?<![\d.])[-+]0\.0(?!\d)", md)


def test_figures_html_and_mlflow_artifacts(report):
    out, uri, _ = report
    figs = {p.name for p in (out / "figures").iterdir()}
    for stem in (
        "ablation-bars",
        "heatmap-pascal-1shot",
        "per-class-pascal-1shot",
        "qualitative-fssam-pascal-1shot",
    ):
        assert f"{stem}.png" in figs and f"{stem}.pdf" in figs
    html = (out / "report.html").read_text()
    assert "RANDOM-INIT" in html and html.count("data:image/png;base64,") >= 4
    assert "Ablation on PASCAL-5i, 1-shot" in html and "<table" in html
    assert not re.search(r'(src|href)="https?://', html)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("rep")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`fss.kind` = 'report'")
    assert len(runs) == 1
    arts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/tables", "report/figures"} <= arts


def test_qualitative_rows_name_the_class_and_the_page_links_full_size_figures(report, tmp_path):
    from benchmark.data.classes import class_names
    from benchmark.records.tracking import Tracker
    from reports.collect import collect_experiment
    from reports.episodes import episode_panels

    out, uri, _ = report
    page = (out / "report.html").read_text()
    assert re.search(r'<a href="figures/qualitative-[^"]+\.png">full size</a>', page)
    tracker = Tracker(uri, create=False)
    data = collect_experiment(tracker, "rep", tmp_path)
    rid = data.cells["run_id"].iloc[0]
    first = int(data.episodes[rid]["episode"].iloc[0])
    (panel,) = episode_panels(data, tracker, rid, [first])
    cls = int(data.episodes[rid]["class"].iloc[0])
    assert f"class {cls} {class_names('pascal')[cls - 1]}, support 1 of 1 shown" in panel.title


def test_outline_marks_only_the_edge_of_the_mask():
    from benchmark.evaluation.qualitative import outline

    image = np.zeros((10, 10, 3), dtype=np.uint8)
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:8, 2:8] = True  # a 6 x 6 square
    out = outline(image, mask, (1.0, 0.0, 1.0), width=1)
    drawn = (out == [255, 0, 255]).all(axis=2)
    assert drawn.sum() == 6 * 6 - 4 * 4 and not drawn[3:7, 3:7].any() and (drawn <= mask).all()


def test_the_reports_cells_csv_has_the_runners_schema_in_percent(report):
    out, _, episodes = report
    cells = pd.read_csv(out / "cells.csv")
    runners = pd.read_csv(out.parent / "w" / "studies" / "rep" / "cells.csv")
    shared = ["variant", "method", "dataset", "fold", "shot", "seed", "miou_pct", "fb_iou_pct", "run_id"]
    assert set(shared) <= set(cells.columns) and set(shared) <= set(runners.columns)
    assert not {"miou", "fb_iou", "fg_iou"} & set(cells.columns)  # no unlabelled fractions
    both = cells.merge(runners, on="run_id", suffixes=("", "_runner"))
    assert len(both) == len(runners) == 2 * 2 * 2
    np.testing.assert_allclose(both["miou_pct"], both["miou_pct_runner"])
    for _, r in cells.iterrows():  # percent, computed from the per-episode table by hand
        want = class_wise_miou(
            episodes[(r["variant"], r["fold"], r["seed"])], novel_classes("pascal", r["fold"])
        )
        assert r["miou_pct"] == pytest.approx(100 * want, abs=1e-9)
    assert all(not w.startswith("(") and ";" in w or w.startswith("random-init") for w in cells["weights"])


def test_a_new_report_run_replaces_the_earlier_one(tmp_path):
    from benchmark.records.tracking import Tracker
    from reports.build import _log_report

    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    exp = tracker.experiment_id("e")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("first\n")
    first = _log_report(tracker, exp, random_init=True, out=tmp_path / "out")
    (tmp_path / "out" / "report.md").write_text("second\n")
    second = _log_report(tracker, exp, random_init=True, out=tmp_path / "out")
    runs = tracker.client.search_runs([exp], filter_string="tags.`fss.kind` = 'report'")
    assert [r.info.run_id for r in runs] == [second] and first != second
    md = tracker.client.download_artifacts(second, "report/report.md", str(tmp_path / "dl"))
    assert Path(md).read_text() == "second\n"
