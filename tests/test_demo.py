"""The demo runs end to end: data, study with MLflow, reference predictors, report."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from benchmark.jobs.demo import prepare_demo_data, run_demo


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out, episodes=2, progress=False)
    text = report.read_text()
    assert "RANDOM-INIT WEIGHTS" in text
    for variant in ("fssam", "naive-sam2", "no-imr", "no-scma", "fg-prior", "oracle-prior"):
        assert f"| {variant}" in text
    assert "mean-colour" in text and "sha256" in text
    printed = capsys.readouterr().out
    assert "summary written to" in printed and "mlflow ui --backend-store-uri" in printed
    # one run time, in the console and in the report
    seconds = re.search(r"done in (\d+) s", printed).group(1)
    assert f"Run time: {seconds} s." in text
    # one report, one set of sections: the full report shows the reference predictors too
    for page in (out / "report" / "report.md", out / "report" / "report.html"):
        assert "Model-free reference predictors" in page.read_text() and "mean-colour" in page.read_text()
    # the Episodes view: every episode of the demo's 2 manifests, its 6 variants
    page = (out / "report" / "report.html").read_text()
    assert ">Episodes</a></li>" in page and 'id="ep-data"' in page
    data = json.loads(re.search(r'id="ep-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["episodes"]) == 2 * 2 and len(data["variants"]) == 6
    # the per-class view and the re-scored table, for each shot of the demo
    tables = out / "report" / "tables"
    for shot in (1, 5):
        for name in (f"per-class-spread-pascal-{shot}shot", f"rescored-pascal-{shot}shot"):
            assert (tables / f"{name}.csv").is_file(), name
    assert "per-class" in page.lower() and "boundary" in page.lower()
    assert (
        f"report: {out / 'report' / 'report.html'}" in printed and (out / "report" / "report.html").is_file()
    )
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fssbench-demo")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`fss.kind` = 'cell'")
    assert len(runs) == 12 and all(r.data.tags["fss.random_init"] == "true" for r in runs)
    cells = pd.read_csv(out / "runs" / "studies" / "fssbench-demo" / "cells.csv")
    assert set(cells["shot"]) == {1, 5} and (cells["status"] == "run").all()
    # the demo ends with a search on validation manifests, logged into the same experiment and reported
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`fss.kind` = 'trial'")
    assert len(trials) == 5 and all(r.data.tags["fss.random_init"] == "true" for r in trials)
    assert "## Search (validation manifests, base classes)" in text and "best-study.yaml" in text
    assert "Search fssbench-demo-search: trials" in (out / "report" / "report.md").read_text()
    assert (out / "runs" / "searches" / "fssbench-demo-search" / "best-study.yaml").is_file()
    assert list((out / "runs" / "manifests").glob("*-val.json"))
    # a second run reuses the generated data (cell skipping is covered by tests/test_runner.py)
    assert prepare_demo_data(out, progress=False) == out / "data" / "pascal"
    assert "reusing prepared data" in capsys.readouterr().out
    # a rerun with nothing new keeps the report (same runs, same reference scores, same code)
    html = out / "report" / "report.html"
    before = (html.stat().st_mtime_ns, html.read_bytes())
    run_demo(out, episodes=2, progress=False)
    assert "unchanged: report kept" in capsys.readouterr().out
    assert (html.stat().st_mtime_ns, html.read_bytes()) == before
    reports = client.search_runs([exp.experiment_id], filter_string="tags.`fss.kind` = 'report'")
    assert len(reports) == 1
    # a report missing its inputs' stamp (or any new run) is built again
    (out / "report" / ".inputs.sha256").unlink()
    run_demo(out, episodes=2, progress=False)
    assert "building the report" in capsys.readouterr().out and html.stat().st_mtime_ns > before[0]


def test_the_demo_report_is_rebuilt_when_the_code_that_draws_it_changes():
    """The report's input hash covers this module and every module of the ``reports`` package."""
    import benchmark.jobs.demo as demo
    from tests.helpers import ROOT

    sources = demo.report_sources()
    assert ROOT / "benchmark" / "jobs" / "demo.py" in sources
    assert {ROOT / "reports" / "build.py", ROOT / "reports" / "tables.py"} <= set(sources)
    assert {ROOT / "reports" / "explorer.js", ROOT / "reports" / "explorer.css"} <= set(sources)
