"""The study runner: MLflow contents, shared manifests, cache correctness, skip, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from benchmark.jobs.run import StudyRunner
from benchmark.specs.study import load_study
from tests.helpers import run_command, wait_for_journal

MODEL = {
    "sam2_size": "t",
    "image_size": 256,
    "dinov2": "vits14",
    "dinov2_input_size": 224,
    "random_init": True,
}


def write_study(tmp_path: Path, root: Path, episodes: int = 4, **variants) -> Path:
    d = {
        "name": "unit",
        "data": {"pascal": str(root)},
        "folds": [0],
        "shots": [1],
        "episodes": episodes,
        "model": MODEL,
        "variants": variants or {"fssam": {}, "naive": {"method": "naive_sam2"}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def runs_of(uri: str, name: str) -> pd.DataFrame:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    rows = []
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        rows.append(
            {
                "run_id": r.info.run_id,
                "status": r.info.status,
                **{f"tags.{k}": v for k, v in r.data.tags.items()},
                **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
                **{f"params.{k}": v for k, v in r.data.params.items()},
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def small_run(pascal_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    runner = StudyRunner(
        load_study(write_study(tmp, pascal_root)), tracking_uri=uri, work_dir=tmp / "work", progress=False
    )
    cells = runner.run()
    return tmp, uri, runner, cells


def test_mlflow_contents(small_run):
    tmp, uri, runner, cells = small_run
    runs = runs_of(uri, "unit")
    parent = runs[runs["tags.fss.kind"] == "study"]
    children = runs[runs["tags.fss.kind"] == "cell"]
    assert len(parent) == 1 and len(children) == 2
    assert set(children["tags.mlflow.parentRunId"]) == set(parent["run_id"])
    for _, r in children.iterrows():
        assert r["status"] == "FINISHED"
        for tag in (
            "variant",
            "dataset",
            "fold",
            "shot",
            "seed",
            "manifest_sha256",
            "weights.sam2",
            "random_init",
            "git_commit",
            "versions",
            "device",
            "cell_key",
        ):
            assert isinstance(r[f"tags.fss.{tag}"], str) and r[f"tags.fss.{tag}"], tag
        assert r["tags.fss.random_init"] == "true"
        assert json.loads(r["tags.fss.versions"])["torch"]
        for m in ("miou", "fb_iou", "fg_iou", "episodes_per_s", "peak_mem_mb", "iou_class_1", "iou_class_5"):
            assert r[f"metrics.{m}"] >= 0, m
        assert r["params.image_size"] == "256" and r["params.fold"] == "0" and r["params.sam2_size"] == "t"
        assert r["params.method"] in ("fssam", "naive_sam2")
        assert r["params.seed"] == "321" and r["params.init_seed"] == "0"  # episodes' seed, weights' seed
        assert r["params.precision"] == "auto" and r["params.precision_effective"] == "fp32"
        assert r["params.round_memory_to_bf16"] == "True"  # defaults are logged too
    fssam = children[children["params.method"] == "fssam"].iloc[0]
    assert (fssam["params.imr_iters"], fssam["params.scma"], fssam["params.prior"]) == ("3", "True", "disc")
    naive = children[children["params.method"] == "naive_sam2"].iloc[0]
    assert pd.isna(naive.get("params.imr_iters"))  # not a setting of the baseline
    # artifacts: the per-episode table recomputes the logged mIoU exactly
    client = MlflowClient(uri)
    rid = children[children["tags.fss.variant"] == "fssam"]["run_id"].iloc[0]
    names = {a.path for a in client.list_artifacts(rid)} | {
        a.path for a in client.list_artifacts(rid, "qualitative")
    }
    assert {"episodes.parquet", "per_class.csv", "config.json", "manifest.json"} <= names
    manifest = json.loads(Path(client.download_artifacts(rid, "manifest.json", str(tmp / "m"))).read_text())
    assert (
        manifest["sha256"] == children.set_index("tags.fss.variant").loc["fssam", "tags.fss.manifest_sha256"]
    )
    # config.json names the weights exactly as the run's tags (and the cell key) do
    config = json.loads(Path(client.download_artifacts(rid, "config.json", str(tmp / "c"))).read_text())
    fssam_tags = children.set_index("tags.fss.variant").loc["fssam"]
    assert config["weights"] == {role: fssam_tags[f"tags.fss.weights.{role}"] for role in ("sam2", "dinov2")}
    assert (
        config["weights"]["sam2"] == "random-init:seed0"
        and config["cell_key"] == fssam_tags["tags.fss.cell_key"]
    )
    per_class = pd.read_csv(client.download_artifacts(rid, "per_class.csv", str(tmp / "pc")))
    assert list(per_class["class_name"]) == ["aeroplane", "bicycle", "bird", "boat", "bottle"]  # fold 0
    assert set(children["tags.fss.metric_units"]) == {"fraction"}
    assert sum(n.startswith("qualitative/") and n.endswith(".png") for n in names) == 3
    local = client.download_artifacts(rid, "episodes.parquet", str(tmp))
    assert len(pd.read_parquet(local)) == 4


def test_the_study_run_records_the_file_the_overrides_and_the_resolved_study(pascal_root, tmp_path):
    import getpass
    import subprocess

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write_study(tmp_path, pascal_root, episodes=2, mean={"method": "mean_colour"})
    overrides = ["episodes=3", "variants.mean.threshold=0.4"]
    StudyRunner(load_study(path, overrides), tracking_uri=uri, work_dir=tmp_path / "w", progress=False).run()
    runs = runs_of(uri, "unit")
    client = MlflowClient(uri)
    (parent,) = runs[runs["tags.fss.kind"] == "study"]["run_id"]
    got = {a.path for a in client.list_artifacts(parent, "study")}
    assert got == {"study/study-file.yaml", "study/overrides.txt", "study/resolved.yaml"}
    local = Path(client.download_artifacts(parent, "study", str(tmp_path / "dl")))
    assert (local / "study-file.yaml").read_text() == path.read_text()  # as written, byte for byte
    assert (local / "overrides.txt").read_text() == "episodes=3\nvariants.mean.threshold=0.4\n"
    resolved = yaml.safe_load((local / "resolved.yaml").read_text())
    assert resolved["episodes"] == 3 and resolved["variants"]["mean"]["method"] == "mean_colour"
    assert resolved["variants"]["mean"]["threshold"] == 0.4
    # MLflow's own columns, on the study run and on its cells; the versions name more than torch
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    for _, r in runs.iterrows():
        assert r["tags.mlflow.user"] == getpass.getuser()
        assert r["tags.mlflow.source.name"] == str(path)
        if sha.returncode == 0:
            assert r["tags.mlflow.source.git.commit"] == sha.stdout.strip()
    versions = json.loads(runs["tags.fss.versions"].iloc[0])
    assert {"pillow", "torchvision", "optuna", "host", "cuda", "cudnn"} <= set(versions)
    assert versions["host"] == __import__("platform").node()


def test_cells_csv_keeps_the_rows_another_process_wrote():
    from benchmark.records.table import merge_cells_tables

    a_ran = pd.DataFrame(
        [
            {"cell": "x", "status": "run", "run_id": "r1", "seconds": 5.0},
            {"cell": "y", "status": "skipped (done)", "run_id": "r2", "seconds": None},
        ]
    )
    b_ran = pd.DataFrame(
        [
            {"cell": "x", "status": "skipped (done)", "run_id": "r1", "seconds": None},
            {"cell": "y", "status": "run", "run_id": "r2", "seconds": 7.0},
        ]
    )
    # whoever writes last, both cells keep the row of the process that ran them, with its timing
    for old, new in ((a_ran, b_ran), (b_ran, a_ran)):
        merged = merge_cells_tables(old, new).set_index("cell")
        assert list(merged["status"]) == ["run", "run"] and list(merged["seconds"]) == [5.0, 7.0]
    # a rerun of a cell (a new run id) replaces the old row; cells only the file has are kept
    rerun = pd.DataFrame([{"cell": "x", "status": "run", "run_id": "r9", "seconds": 1.0}])
    merged = merge_cells_tables(a_ran, rerun)
    assert list(merged["cell"]) == ["x", "y"] and list(merged["run_id"]) == ["r9", "r2"]
    assert merge_cells_tables(None, rerun).equals(rerun)


def test_the_logged_scores_are_the_class_iou_of_the_label_files(pascal_root, tmp_path):
    """A model-free method whose output is known (every pixel foreground) on the same episodes, its
    logged scores computed here from the query label files at their original size, 255 excluded:
    I_fg = #(label == class), U_fg = #(label != 255), and the background IoU is 0."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = write_study(tmp_path, pascal_root, af={"method": "all_foreground", "image_size": 256})
    StudyRunner(load_study(study), tracking_uri=uri, work_dir=tmp_path / "work", progress=False).run()
    (run,) = [r for _, r in runs_of(uri, "unit").iterrows() if r["tags.fss.kind"] == "cell"]
    client = MlflowClient(uri)
    manifest = json.loads(
        Path(client.download_artifacts(run["run_id"], "manifest.json", str(tmp_path))).read_text()
    )
    inter, union = {c: 0 for c in range(1, 6)}, {c: 0 for c in range(1, 6)}  # fold 0: classes 1..5
    for e in manifest["episodes"]:
        label = np.array(Image.open(pascal_root / manifest["images"][e["query"]][1]))
        inter[e["class"]] += int((label == e["class"]).sum())
        union[e["class"]] += int((label != 255).sum())
    assert len(manifest["episodes"]) == 4 and 0 < sum(inter.values()) < sum(union.values())
    class_iou = [inter[c] / union[c] if union[c] else 0.0 for c in range(1, 6)]
    fg_iou = sum(inter.values()) / sum(union.values())
    assert run["metrics.miou"] == pytest.approx(sum(class_iou) / 5, abs=1e-9)
    assert run["metrics.fg_iou"] == pytest.approx(fg_iou, abs=1e-9)
    assert run["metrics.fb_iou"] == pytest.approx(fg_iou / 2, abs=1e-9)  # (0 + fg) / 2
    for c in (1, 5):
        assert run[f"metrics.iou_class_{c}"] == pytest.approx(class_iou[c - 1], abs=1e-9)


def test_every_variant_sees_the_same_manifest(small_run):
    _, uri, _, _ = small_run
    children = runs_of(uri, "unit").query("`tags.fss.kind` == 'cell'")
    assert children["tags.fss.manifest_sha256"].nunique() == 1
    assert children["tags.fss.cell_key"].nunique() == 2


def test_rerun_skips_finished_cells(small_run, pascal_root):
    tmp, uri, _, cells = small_run
    again = StudyRunner(
        load_study(write_study(tmp, pascal_root)), tracking_uri=uri, work_dir=tmp / "work", progress=False
    )
    cells2 = again.run()
    assert list(cells2["status"]) == ["skipped (done)"] * 2
    assert list(cells2["miou_pct"]) == pytest.approx(list(cells["miou_pct"]))
    assert 0 < cells["miou_pct"].max() <= 100  # percent, as the column says
    assert again.cache.stats.misses == 0  # nothing was recomputed
    runs = runs_of(uri, "unit")
    assert (runs["tags.fss.kind"] == "cell").sum() == 2  # no duplicate child runs


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_cached_and_uncached_predictions_are_identical(small_run, pascal_root):
    tmp, _, runner, _ = small_run
    assert runner.cache.stats.hits > 0  # the second variant reused the first one's features
    other = tmp / "nocache"
    other.mkdir()
    plain = StudyRunner(
        load_study(write_study(other, pascal_root)),
        tracking_uri=f"sqlite:///{other / 'm.db'}",
        work_dir=other / "work",
        use_cache=False,
        progress=False,
    )
    plain.run()
    assert plain.cache.stats.hits == 0
    for key in runner.results[0]["cell_key"], runner.results[1]["cell_key"]:
        a = pd.read_parquet(tmp / "work" / "cells" / key[:20] / "artifacts" / "episodes.parquet")
        b = pd.read_parquet(other / "work" / "cells" / key[:20] / "artifacts" / "episodes.parquet")
        pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(pascal_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FSSBENCH_JOURNAL_FLUSH_ROWS", "1")  # rows visible one by one: the test kills mid-cell
    study = write_study(tmp_path, pascal_root, episodes=12, fssam={})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = run_command(study, tmp_path / "work", f"sqlite:///{tmp_path / 'killed.db'}")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = wait_for_journal(tmp_path / "work", episodes=3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(journal.read_text().splitlines()) - 1  # line 1 is the journal's header
    assert 3 <= done_before < 12
    subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    lines = journal.read_text().splitlines()
    assert "journal" in json.loads(lines[0])
    ids = [json.loads(x)["episode"] for x in lines[1:]]
    assert sorted(ids) == list(range(12))  # no lost and no duplicated episodes
    # an uninterrupted run of the same study elsewhere
    clean = tmp_path / "clean"
    clean.mkdir()
    subprocess.run(
        [*cmd[:-4], "--work-dir", str(clean / "work"), "--tracking-uri", f"sqlite:///{clean / 'c.db'}"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    killed = runs_of(f"sqlite:///{tmp_path / 'killed.db'}", "unit").query("`tags.fss.kind` == 'cell'")
    uninterrupted = runs_of(f"sqlite:///{clean / 'c.db'}", "unit").query("`tags.fss.kind` == 'cell'")
    assert len(killed) == 1 and killed["status"].iloc[0] == "FINISHED"  # no duplicate child runs
    for m in ("metrics.miou", "metrics.fb_iou", "metrics.fg_iou"):
        assert killed[m].iloc[0] == uninterrupted[m].iloc[0]
    assert killed["tags.fss.cell_key"].iloc[0] == uninterrupted["tags.fss.cell_key"].iloc[0]


def test_a_message_in_a_redirected_log_starts_its_own_line(tmp_path):
    """stdout and stderr into one file (2>&1): a bar that is not on a terminal leaves its line open,
    and the runner's messages (benchmark.io_utils.say) must not be glued onto it."""
    import subprocess
    import sys

    code = (
        "from tqdm import tqdm\nfrom benchmark.io_utils import say\n"
        "bar = tqdm(total=3, desc='study x', mininterval=0)\nbar.update(1)\n"
        "say('resuming cell-a at episode 2 of 4')\nbar.update(1)\nbar.close()\nsay('done')\n"
    )
    with open(tmp_path / "log", "w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, check=True)
    lines = (tmp_path / "log").read_text().split("\n")
    assert "resuming cell-a at episode 2 of 4" in lines and "done" in lines  # whole lines
    assert any("study x" in line and "1/3" in line for line in lines)


def test_a_cell_finished_under_another_experiment_is_reused_not_recomputed(
    pascal_root, tmp_path, monkeypatch
):
    from benchmark.records.tracking import Tracker

    listed = []  # the store's experiments are listed once per invocation, not once per cell
    experiments = Tracker._experiments
    monkeypatch.setattr(Tracker, "_experiments", lambda self: listed.append(1) or experiments(self))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mean = {"method": "mean_colour"}
    (tmp_path / "a").mkdir()
    first = write_study(tmp_path / "a", pascal_root, episodes=3, mean=mean)
    StudyRunner(load_study(first), tracking_uri=uri, work_dir=tmp_path / "w", progress=False).run()
    # an overlapping study under another name: its "mean" cell is the same cell (same key)
    second = write_study(tmp_path, pascal_root, episodes=3, mean=mean, fg={"method": "all_foreground"})
    cells = StudyRunner(
        load_study(second, ["name=overlap"]), tracking_uri=uri, work_dir=tmp_path / "w", progress=False
    ).run()
    status = dict(zip(cells["variant"], cells["status"], strict=True))
    assert status == {"mean": "reused", "fg": "run"}
    assert len(listed) == 2  # the first study's invocation and this one's, each with its cells at once
    a, b = runs_of(uri, "unit"), runs_of(uri, "overlap")
    src = a[a["tags.fss.kind"] == "cell"].iloc[0]
    copy = b[(b["tags.fss.kind"] == "cell") & (b["tags.fss.variant"] == "mean")].iloc[0]
    assert copy["tags.fss.reused_from"] == f"unit/{src['run_id']}" and copy["status"] == "FINISHED"
    assert copy["tags.fss.cell_key"] == src["tags.fss.cell_key"] and copy["tags.fss.study"] == "overlap"
    assert copy["metrics.miou"] == src["metrics.miou"] and copy["params.method"] == "mean_colour"
    client = MlflowClient(uri)
    got = pd.read_parquet(client.download_artifacts(copy["run_id"], "episodes.parquet", str(tmp_path / "c")))
    want = pd.read_parquet(client.download_artifacts(src["run_id"], "episodes.parquet", str(tmp_path / "s")))
    assert got.equals(want)
    # nothing ran twice: one journal per distinct cell; a rerun of the second study skips both
    assert len(list((tmp_path / "w" / "cells").iterdir())) == 2
    again = StudyRunner(
        load_study(second, ["name=overlap"]), tracking_uri=uri, work_dir=tmp_path / "w", progress=False
    ).run()
    assert set(again["status"]) == {"skipped (done)"}
    assert len(runs_of(uri, "overlap").query("`tags.fss.kind` == 'cell'")) == 2
