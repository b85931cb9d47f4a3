"""The engine seam: a job's payload round trip, the local engine and a Ray worker giving the same
numbers, and the run job recording whatever answer an engine yields (no Ray started here)."""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmark.engines.base import CellDone, CellHooks, CellJob, spec_from_dict, spec_to_dict
from benchmark.engines.local import LocalEngine
from benchmark.engines.worker import CellWorker
from benchmark.jobs.run import RunJob
from benchmark.specs.study import load_study

TIMING = ("episodes_per_s", "peak_mem_mb", "seconds")


def write_study(tmp: Path, root: Path) -> Path:
    study = {
        "name": "engines",
        "data": {"pascal": str(root)},
        "folds": [0],
        "shots": [1],
        "episodes": 3,
        "model": {},
        "variants": {
            "mc": {"method": "mean_colour", "image_size": 64},
            "twin": {"method": "mean_colour", "image_size": 64},
            "af": {"method": "all_foreground", "image_size": 64},
        },
    }
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def scores(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.endswith("_s") and k not in TIMING}


def first_job(runner: RunJob, variant: str = "mc", **kw) -> tuple[CellJob, dict]:
    cells = runner.cells(runner.build_manifests())
    cell = next(c for c in cells if c.variant == variant)
    key, weights = runner.keys([cell])[cell.name]
    job = CellJob(cell.name, key, cell.spec, weights, qualitative=0, **kw)
    return job, runner.manifest(cell.spec.manifest_path)


def test_a_job_survives_its_payload_and_both_engines_give_the_same_numbers(pascal_root, tmp_path):
    runner = RunJob(load_study(write_study(tmp_path, pascal_root)), work_dir=tmp_path / "w", progress=False)
    job, manifest = first_job(runner)
    assert spec_from_dict(spec_to_dict(job.spec)) == job.spec
    payload = job.to_payload(manifest)
    assert (
        payload["spec"]["settings"] == dict(job.spec.settings) and payload["manifest"] == manifest.to_dict()
    )
    copy = tmp_path / "elsewhere.json"
    again = CellJob.from_payload(payload, copy)
    assert again == dataclasses.replace(job, spec=dataclasses.replace(job.spec, manifest_path=copy))

    private = dataclasses.replace(job, journal=False)  # a training validation's job
    assert CellJob.from_payload(private.to_payload(manifest), copy).journal is False

    (local,) = LocalEngine(progress=False).run([job], runner.workspace, CellHooks())
    assert local.ok and local.job is job and local.stats["episodes_run"] == 3
    worker = CellWorker(str(tmp_path / "node"), None, threads=1)
    remote = worker.run(payload)  # another work folder: computed again, not resumed
    assert remote["ok"] and remote["stats"]["episodes_run"] == 3
    assert scores(remote["metrics"]) == scores(local.metrics) and scores(local.metrics)
    assert remote["summary"] == {"miou": local.summary["miou"], "fb_iou": local.summary["fb_iou"]}


def test_the_local_engine_asks_the_hooks_and_turns_a_cells_error_into_a_failed_answer(pascal_root, tmp_path):
    runner = RunJob(load_study(write_study(tmp_path, pascal_root)), work_dir=tmp_path / "w", progress=False)
    job, _ = first_job(runner)
    broken = dataclasses.replace(job, spec=dataclasses.replace(job.spec, data_root=tmp_path / "nowhere"))

    class Hooks(CellHooks):
        def __init__(self) -> None:
            self.heard: list[str] = []

        def claim(self, job: CellJob) -> bool:
            self.heard.append(f"claim {job.key[:4]}")
            return job is not job_skipped

        def begin(self, job: CellJob) -> None:
            self.heard.append(f"begin {job.key[:4]}")

    job_skipped = dataclasses.replace(job, key="f" * 64)
    hooks = Hooks()
    answers = list(LocalEngine(progress=False).run([broken, job_skipped], runner.workspace, hooks))
    assert [a.job for a in answers] == [broken] and not answers[0].ok
    assert "nowhere" in answers[0].error + answers[0].traceback
    assert hooks.heard == [f"claim {job.key[:4]}", f"begin {job.key[:4]}", "claim ffff"]


def test_the_local_engine_scores_a_prebuilt_method_and_a_job_without_a_journal_keeps_none(
    pascal_root, tmp_path
):
    from benchmark.device import resolve_device
    from benchmark.methods import build_method
    from benchmark.workspace import Workspace

    runner = RunJob(load_study(write_study(tmp_path, pascal_root)), work_dir=tmp_path / "w", progress=False)
    job, _ = first_job(runner)
    (built,) = LocalEngine(progress=False).run([job], runner.workspace, CellHooks())
    model = build_method(job.spec.method, dict(job.spec.settings), resolve_device(job.spec.device))
    private = dataclasses.replace(job, journal=False, artifacts=False)
    elsewhere = Workspace(tmp_path / "v")
    for _ in range(2):  # the second time too: nothing to resume from
        (given,) = LocalEngine(progress=False, method=model).run([private], elsewhere, CellHooks())
        assert given.ok and given.stats["episodes_run"] == 3 and given.summary == built.summary
    assert runner.workspace.journal_path(job.key).is_file() and not elsewhere.cell_dir(job.key).exists()


class FakeRemoteEngine:
    """An engine that runs nothing: every job it is given is answered failed."""

    name = "fake"
    in_process = False

    def __init__(self) -> None:
        self.jobs: list[CellJob] = []

    def session(self, tracking_uri: str):
        return nullcontext()

    def run(self, jobs, workspace, hooks, desc="cells"):
        for job in jobs:
            if hooks.claim(job):
                self.jobs.append(job)
                yield CellDone.failed(job, "the fake engine lost it", "Traceback: nowhere", "fake:1")


def test_the_run_job_records_a_failed_answer_of_any_engine_as_a_failed_run(pascal_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    engine = FakeRemoteEngine()
    study = load_study(write_study(tmp_path, pascal_root))
    runner = RunJob(study, tracking_uri=uri, work_dir=tmp_path / "w", progress=False, engine=engine)
    table = runner.run().set_index("variant")
    assert len(engine.jobs) == 2  # mc and its twin share a cell key: one job
    assert set(table["status"]) == {"failed"} and (table["error"] == "the fake engine lost it").all()
    assert sorted(f.cell.split("/")[0] for f in runner.failures) == ["af", "mc"]  # the twin is no failure
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("engines")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    cells = [r for r in runs if r.data.tags.get("fss.kind") == "cell"]
    assert len(cells) == 2 and {r.info.status for r in cells} == {"FAILED"}
    for r in cells:
        assert r.data.tags["fss.error"] == "the fake engine lost it\nTraceback: nowhere"
        assert r.data.tags["fss.engine"] == "fake" and "fss.worker" not in r.data.tags
    (parent,) = [r for r in runs if r.data.tags.get("fss.kind") == "study"]
    assert parent.info.status == "FAILED"
    assert (runner.cells_csv).is_file()

    # the local engine then runs the same cells: the failed runs are replaced, one run per cell
    again = RunJob(study, tracking_uri=uri, work_dir=tmp_path / "w", progress=False).run()
    assert again.set_index("variant")["status"].to_dict() == {
        "af": "run",
        "mc": "run",
        "twin": "skipped (done)",
    }
    runs = client.search_runs([exp.experiment_id], max_results=100)
    cells = [r for r in runs if r.data.tags.get("fss.kind") == "cell"]
    assert sorted(r.info.status for r in cells) == ["FINISHED", "FINISHED"]
    assert all("fss.engine" not in r.data.tags for r in cells)


class InterruptedEngine:
    """An in-process engine whose first cell is interrupted (Ctrl-C) once it began."""

    name = "local"
    in_process = True

    def session(self, tracking_uri: str):
        return nullcontext()

    def run(self, jobs, workspace, hooks, desc="cells"):
        for job in jobs:
            if hooks.claim(job):
                hooks.begin(job)
                raise KeyboardInterrupt
        yield from ()


def test_an_interrupted_cell_and_its_parent_are_marked_killed(pascal_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = load_study(write_study(tmp_path, pascal_root))
    runner = RunJob(
        study, tracking_uri=uri, work_dir=tmp_path / "w", progress=False, engine=InterruptedEngine()
    )
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("engines").experiment_id], max_results=100)
    status = {r.data.tags.get("fss.kind"): r.info.status for r in runs}
    assert status == {"study": "KILLED", "cell": "KILLED"}
    (cell,) = [r for r in runs if r.data.tags.get("fss.kind") == "cell"]
    assert cell.data.tags["fss.error"] == "interrupted (SIGINT/SIGTERM); rerun to resume"
