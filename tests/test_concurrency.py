"""Real processes: two runs of one study together, and SIGTERM in the middle of a cell (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tests.helpers import ROOT, TINY, run_command, wait_for_journal


def study_file(folder: Path, root: Path, **d) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({"data": {"pascal": str(root)}, "folds": [0], **d}))
    return path


def cell_runs(uri: str, name: str, view: ViewType = ViewType.ACTIVE_ONLY) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    return list(client.search_runs([exp.experiment_id], run_view_type=view, max_results=1000))


@pytest.mark.slow
def test_two_processes_on_one_study_record_every_cell_exactly_once(pascal_root, tmp_path):
    variants = {
        f"ref{i}": {"method": "mean_colour" if i % 2 else "all_foreground", "image_size": 64 + 64 * i}
        for i in range(4)
    }
    study = study_file(
        tmp_path, pascal_root, name="two", shots=[1, 5], episodes=16, model={}, variants=variants
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # not created yet: both processes race to create it
    cmd = run_command(study, tmp_path / "work", uri)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = cell_runs(uri, "two", ViewType.ALL)  # deleted runs too: no duplicate was made and removed
    cells = [r for r in runs if r.data.tags.get("fss.kind") == "cell"]
    assert len(cells) == 8 and {r.info.status for r in cells} == {"FINISHED"}
    assert len({r.data.tags["fss.cell_key"] for r in cells}) == 8  # every cell exactly once
    assert len({(r.data.tags["fss.variant"], r.data.tags["fss.shot"]) for r in cells}) == 8
    parents = [r for r in runs if r.data.tags.get("fss.kind") == "study"]
    assert 1 <= len(parents) <= 2 and {r.info.status for r in parents} == {"FINISHED"}
    for r in cells:  # nobody deleted anybody's artifacts
        assert {a.path for a in MlflowClient(uri).list_artifacts(r.info.run_id)} >= {
            "episodes.parquet",
            "config.json",
        }
    journals = list((tmp_path / "work" / "cells").glob("*/episodes.jsonl"))
    assert len(journals) == 8 and all(len(j.read_text().splitlines()) == 17 for j in journals)


@pytest.mark.slow
def test_sigterm_marks_the_runs_killed_and_a_rerun_resumes(pascal_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FSSBENCH_JOURNAL_FLUSH_ROWS", "1")  # rows visible one by one: the test kills mid-cell
    study = study_file(
        tmp_path, pascal_root, name="term", shots=[1], episodes=12, model=TINY, variants={"fssam": {}}
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = run_command(study, tmp_path / "work", uri)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    journal = wait_for_journal(tmp_path / "work", episodes=3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    runs = cell_runs(uri, "term")
    status = {r.data.tags.get("fss.kind"): r.info.status for r in runs}
    assert status == {"study": "KILLED", "cell": "KILLED"}
    lines = journal.read_text().splitlines()
    rows = [json.loads(x) for x in lines[1:]]  # every line whole and valid
    assert 3 <= len(rows) < 12 and [r["episode"] for r in rows] == sorted({r["episode"] for r in rows})
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming fssam/pascal/fold0/1shot/seed321 at episode {len(rows)} of 12" in done.stdout
    cells = [r for r in cell_runs(uri, "term") if r.data.tags.get("fss.kind") == "cell"]
    assert [r.info.status for r in cells] == ["FINISHED"]  # the killed run was replaced, not duplicated
    assert cells[0].data.metrics["episodes"] == 12
    assert sorted(json.loads(x)["episode"] for x in journal.read_text().splitlines()[1:]) == list(range(12))
