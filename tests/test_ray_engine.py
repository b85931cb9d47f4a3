"""``--engine ray`` on a real two-node Ray cluster (loopback): same numbers as ``--engine local``,
every cell logged exactly once, through a lost node, a failing cell and a restarted driver."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmark.engines.base import CellJob
from benchmark.engines.ray import RayEngine, check_tracking_for_cluster
from benchmark.engines.worker import CellWorker
from benchmark.episodes.manifest import load_manifest
from benchmark.errors import FssBenchError
from benchmark.jobs.run import RunJob, StudyRunner
from benchmark.specs.study import load_study
from tests.helpers import TINY_128

TIMING = ("episodes_per_s", "peak_mem_mb", "seconds")


def write_study(tmp: Path, root: Path, episodes: int = 3) -> Path:
    study = {
        "name": "ray-engine",
        "data": {"pascal": str(root)},
        "folds": [0, 1],
        "shots": [1],
        "episodes": episodes,
        "model": TINY_128,
        "variants": {
            "fssam": {},
            "mc": {"method": "mean_colour", "image_size": 64},
            "af": {"method": "all_foreground", "image_size": 64},
        },
    }
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def cell_runs(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ray-engine")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("fss.kind") == "cell"]


def scores(run) -> dict[str, float]:
    """The metrics that are results (not timings or memory)."""
    return {k: v for k, v in run.data.metrics.items() if not k.endswith("_s") and k not in TIMING}


@pytest.fixture(scope="module")
def local(pascal_root, tmp_path_factory):
    """The study run by the local engine: cell key -> scores."""
    tmp = tmp_path_factory.mktemp("local")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    StudyRunner(
        load_study(write_study(tmp, pascal_root)), tracking_uri=uri, work_dir=tmp / "w", progress=False
    ).run()
    runs = cell_runs(uri)
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    return {r.data.tags["fss.cell_key"]: scores(r) for r in runs}


def ray_runner(study: Path, tmp: Path, force: bool = False, **kw) -> RunJob:
    """The run job on the Ray engine (``kw``: the engine's options)."""
    s = load_study(study)
    return RunJob(
        s,
        tracking_uri=kw.pop("uri", f"sqlite:///{tmp / 'mlflow.db'}"),
        work_dir=tmp / "w",
        progress=False,
        log=lambda msg: None,
        force=force,
        engine=RayEngine.for_study(s.resources, progress=False, **kw),
    )


def break_payloads(monkeypatch, tmp: Path, prefix: str) -> None:
    """The payloads of the cells named ``prefix...`` point at a data root the workers lack."""
    real = RayEngine.payload

    def broken(self, job, manifest):
        payload = real(self, job, manifest)
        if job.name.startswith(prefix):
            payload["spec"]["data_root"] = str(tmp / "nowhere")
        return payload

    monkeypatch.setattr(RayEngine, "payload", broken)


def assert_once_and_equal(uri: str, local: dict) -> None:
    runs = cell_runs(uri)
    keys = [r.data.tags["fss.cell_key"] for r in runs]
    assert sorted(keys) == sorted(local), "every cell exactly once, no other child run"
    assert all(r.info.status == "FINISHED" and r.data.tags["fss.engine"] == "ray" for r in runs)
    for r in runs:
        assert scores(r) == local[r.data.tags["fss.cell_key"]], r.info.run_name


def test_ray_gives_the_local_engines_numbers_on_two_nodes_with_affinity(
    ray_cluster, local, pascal_root, tmp_path
):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    listening = ray_cluster.listening_addresses()
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening  # loopback only
    # Ray's address file is in the cluster's own folder (a fresh machine has no /tmp/ray to write to)
    with open(os.path.join(ray_cluster.temp_dir, "ray", "ray_current_cluster")) as f:
        assert f.read() == ray_cluster.cluster.address
    runner = ray_runner(write_study(tmp_path, pascal_root), tmp_path)
    table = runner.run()
    assert list(table["status"]) == ["run"] * 6 and set(table["attempts"]) == {1}
    assert_once_and_equal(f"sqlite:///{tmp_path / 'mlflow.db'}", local)
    # two workers, one per node
    by_fold = table.groupby("fold")["run_id"].apply(list)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # each manifest (fold) was dealt to one worker's queue, and a worker took a cell of another
    # manifest only once its own queue was empty (an idle worker takes from the longest other queue):
    # per worker, in start order, its own fold's cells come first; the two folds start on two workers
    ran = sorted(
        (client.get_run(r).info.start_time, client.get_run(r).data.tags["fss.worker"], f)
        for f, rids in by_fold.items()
        for r in rids
    )
    per_worker: dict[str, list[int]] = {}
    for _, worker, fold in ran:
        per_worker.setdefault(worker, []).append(fold)
    assert len(per_worker) == 2, per_worker
    for folds in per_worker.values():
        own = folds[0]
        assert folds == sorted(folds, key=lambda f: f != own), per_worker  # own fold, then stolen cells
    assert {folds[0] for folds in per_worker.values()} == {0, 1}, per_worker


@pytest.mark.slow
def test_a_node_lost_mid_study_still_ends_with_every_cell_once(ray_cluster, local, pascal_root, tmp_path):
    extra = ray_cluster.add()  # a third node, taken away while its worker holds a cell
    events: list[tuple[str, str]] = []

    def on_event(what: str, detail: str) -> None:
        events.append((what, detail))
        if what == "answered" and sum(e[0] == "answered" for e in events) == 1:
            ray_cluster.remove(extra)

    runner = ray_runner(write_study(tmp_path, pascal_root, episodes=6), tmp_path, on_event=on_event)
    runner.run()
    assert [e for e in events if e[0] == "lost"], events  # a cell was lost with its node ...
    assert max(runner.engine.attempts.values()) == 2  # ... and run again elsewhere, once
    local6 = _local_scores(pascal_root, tmp_path / "local6", episodes=6)
    assert_once_and_equal(f"sqlite:///{tmp_path / 'mlflow.db'}", local6)


def _local_scores(root: Path, tmp: Path, episodes: int) -> dict:
    tmp.mkdir()
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    study = load_study(write_study(tmp, root, episodes))
    StudyRunner(study, tracking_uri=uri, work_dir=tmp / "w", progress=False).run()
    return {r.data.tags["fss.cell_key"]: scores(r) for r in cell_runs(uri)}


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_a_failing_cell_is_failed_once_and_a_restarted_driver_runs_only_the_rest(
    ray_cluster, local, pascal_root, tmp_path, monkeypatch
):
    break_payloads(monkeypatch, tmp_path, "mc/pascal/fold1")  # one cell's data root missing on the workers
    study = write_study(tmp_path, pascal_root)
    runner = ray_runner(study, tmp_path)
    table = runner.run().set_index("cell")
    assert table.loc["mc/pascal/fold1/1shot/seed321", "status"] == "failed"
    assert "is not on worker" in table.loc["mc/pascal/fold1/1shot/seed321", "error"]
    assert runner.engine.attempts[table.loc["mc/pascal/fold1/1shot/seed321", "cell_key"]] == 1  # not retried
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sorted(r.info.status for r in cell_runs(uri)) == ["FAILED"] + ["FINISHED"] * 5
    monkeypatch.undo()
    again = ray_runner(study, tmp_path).run().set_index("cell")
    assert again.loc["mc/pascal/fold1/1shot/seed321", "status"] == "run"
    assert (again.drop(index="mc/pascal/fold1/1shot/seed321")["status"] == "skipped (done)").all()
    assert_once_and_equal(uri, local)


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_a_study_logs_through_an_mlflow_server_on_postgresql(
    ray_cluster, mlflow_server, pascal_root, tmp_path
):
    study = write_study(tmp_path, pascal_root)
    runner = ray_runner(study, tmp_path, uri=mlflow_server.uri)
    runner.run()
    runs = cell_runs(mlflow_server.uri)
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    arts = {a.path for a in MlflowClient(mlflow_server.uri).list_artifacts(runs[0].info.run_id)}
    assert {"episodes.parquet", "per_class.csv", "config.json", "manifest.json"} <= arts


def test_a_cluster_on_several_hosts_refuses_a_local_store():
    with pytest.raises(
        FssBenchError, match="spans 2 hosts .* local store .* `mlflow server --backend-store-uri"
    ):
        check_tracking_for_cluster("sqlite:////tmp/m.db", {"10.0.0.1", "10.0.0.2"})
    with pytest.raises(FssBenchError, match="spans 2 hosts"):
        check_tracking_for_cluster("file:///tmp/mlruns", {"a", "b"})
    check_tracking_for_cluster("http://10.0.0.1:5000", {"10.0.0.1", "10.0.0.2"})
    check_tracking_for_cluster("sqlite:////tmp/m.db", {"127.0.0.1"})  # one host: its own file is shared


def test_the_worker_reports_a_cells_failure_instead_of_raising(pascal_root, tmp_path):
    study = load_study(write_study(tmp_path, pascal_root))
    runner = StudyRunner(study, work_dir=tmp_path / "w", progress=False)
    cells = runner.cells(runner.build_manifests())
    cell = next(c for c in cells if c.variant == "mc")
    manifest = load_manifest(cell.spec.manifest_path)
    worker = CellWorker(str(tmp_path / "node"), None, threads=1)
    ok = worker.run(CellJob(cell.name, "k" * 64, cell.spec, qualitative=0).to_payload(manifest))
    assert ok["ok"] and 0 < ok["summary"]["miou"] < 1
    assert {name for name, _, _ in ok["artifacts"]} >= {"episodes.parquet", "manifest.json"}
    bad = CellJob(cell.name, "j" * 64, cell.spec, qualitative=0).to_payload(manifest)
    bad["spec"]["data_root"] = str(tmp_path / "nowhere")
    answer = worker.run(bad)
    assert not answer["ok"] and "nowhere is not on worker" in answer["error"]


@pytest.mark.slow
def test_two_optuna_workers_on_ray_share_one_postgresql_study(
    ray_cluster, postgres_server, pascal_root, tmp_path
):
    import optuna
    from optuna.trial import TrialState

    from benchmark.jobs.search.ray import run_search_on_ray
    from benchmark.specs.search import load_search
    from tests.test_search_workers import check_one_run_per_trial, write_search

    storage = postgres_server.create_database("ray_search")
    spec = load_search(
        write_search(tmp_path, pascal_root, episodes=4, trials=6), ["study.model.image_size=128"]
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_search_on_ray(
        spec, workers=2, tracking_uri=uri, work_dir=tmp_path / "w", storage=storage, progress=False, log=print
    )
    study = optuna.load_study(study_name="workers", storage=storage)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # each worker stops once 6 are finished; both may be inside a trial then (at most one extra each)
    assert 6 <= len(done) == len(study.trials) <= 7 and outcome.ran_here == len(study.trials)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("workers")
    runs = client.search_runs([exp.experiment_id], "tags.`fss.kind` = 'trial'", max_results=1000)
    parents = client.search_runs([exp.experiment_id], "tags.`fss.kind` = 'search'")
    check_one_run_per_trial(study, runs, parents)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both Ray workers ran trials
    assert outcome.best is not None and outcome.best["number"] in {t.number for t in done}


@pytest.mark.slow
def test_the_engine_profile_measures_each_worker_count_with_the_same_numbers(
    ray_cluster, pascal_root, tmp_path
):
    from benchmark.jobs.profile.engine import parse_worker_counts, profile_engine

    assert parse_worker_counts("1, 2") == [1, 2]
    for bad in ("0,1", "1,1", "two"):
        with pytest.raises(FssBenchError, match="--workers"):
            parse_worker_counts(bad)
    study = load_study(write_study(tmp_path, pascal_root), ["variants.fssam.method=mean_colour"])
    table = profile_engine(study, [1, 2], tmp_path)
    assert list(table["workers"]) == [1, 2] and list(table["cells"]) == [6, 6]
    assert table["speedup"].iloc[0] == 1.0
    assert table["speedup"].iloc[1] == pytest.approx(
        table["cells_per_s"].iloc[1] / table["cells_per_s"].iloc[0]
    )


def test_ray_options_with_the_local_engine_are_refused(pascal_root, tmp_path, capsys):
    from benchmark.cli import main

    study = write_study(tmp_path, pascal_root)
    assert main(["run", str(study), "--workers", "2", "--work-dir", str(tmp_path / "w")]) == 2
    assert "--workers applies to --engine ray only" in capsys.readouterr().err


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_force_then_a_failure_leaves_only_the_failed_run(
    ray_cluster, local, pascal_root, tmp_path, monkeypatch
):
    study = write_study(tmp_path, pascal_root)
    ray_runner(study, tmp_path).run()

    break_payloads(monkeypatch, tmp_path, "af/pascal/fold0")
    ray_runner(study, tmp_path, force=True).run()
    runs = cell_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 6  # one run per cell: the old FINISHED one of the failed cell is gone
    by_status = sorted(r.info.status for r in runs)
    assert by_status == ["FAILED"] + ["FINISHED"] * 5


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_a_logging_error_marks_the_run_failed_and_the_study_goes_on(
    ray_cluster, local, pascal_root, tmp_path, monkeypatch
):
    from benchmark.records.tracking import Tracker

    real = Tracker.finish_cell

    def flaky(self, rid, metrics, artifacts, tags=None):
        if self.client.get_run(rid).info.run_name.startswith("mc/pascal/fold0"):
            raise ConnectionError("tracking server went away")
        return real(self, rid, metrics, artifacts, tags)

    monkeypatch.setattr(Tracker, "finish_cell", flaky)
    study = write_study(tmp_path, pascal_root)
    table = ray_runner(study, tmp_path).run().set_index("cell")
    assert table.loc["mc/pascal/fold0/1shot/seed321", "status"] == "failed"
    assert "logging the result failed (ConnectionError" in table.loc["mc/pascal/fold0/1shot/seed321", "error"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sorted(r.info.status for r in cell_runs(uri)) == ["FAILED"] + ["FINISHED"] * 5  # none RUNNING
    monkeypatch.undo()
    ray_runner(study, tmp_path).run()
    assert_once_and_equal(uri, local)


def test_workers_that_fit_no_node_are_refused_before_any_work(ray_cluster, pascal_root, tmp_path):
    from benchmark.engines.ray import actor_resources

    opts, fit = actor_resources(None, 1.0)
    assert (
        fit == 2 and opts["num_gpus"] == 0 and opts["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"] == ""
    )
    with pytest.raises(FssBenchError, match="no node of the cluster holds a worker of 2 CPU"):
        actor_resources(None, 2.0)  # two 1-CPU nodes hold 2 CPUs, but no worker of 2
    with pytest.raises(FssBenchError, match="no node of the cluster holds a worker of 1 CPU and 1 GPU"):
        ray_runner(write_study(tmp_path, pascal_root), tmp_path, gpus_per_cell=1).run()
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store existed


def test_a_worker_with_another_cell_key_refuses_the_cell(pascal_root, tmp_path):
    study = load_study(write_study(tmp_path, pascal_root))
    runner = StudyRunner(study, work_dir=tmp_path / "w", progress=False)
    cells = runner.cells(runner.build_manifests())
    cell = next(c for c in cells if c.variant == "mc")
    key, weights = runner.keys([cell])[cell.name]
    manifest = load_manifest(cell.spec.manifest_path)
    worker = CellWorker(str(tmp_path / "node"), None, threads=1)
    assert worker.run(CellJob(cell.name, key, cell.spec, weights, qualitative=0).to_payload(manifest))["ok"]
    answer = worker.run(CellJob(cell.name, "0" * 64, cell.spec, weights, qualitative=0).to_payload(manifest))
    assert not answer["ok"] and "computes another cell key than the driver" in answer["error"]


def test_the_studys_resources_block_is_validated_and_the_command_line_wins(pascal_root, tmp_path):
    from benchmark.specs.study import Resources

    study = write_study(tmp_path, pascal_root)
    assert load_study(study).resources == Resources(None, 1.0)
    s = load_study(study, ["resources.gpus_per_cell=0", "resources.cpus_per_cell=2"])
    assert s.resources == Resources(0.0, 2.0)
    engine = RayEngine.for_study(s.resources)
    assert (engine.gpus_per_cell, engine.cpus_per_cell) == (0.0, 2.0)
    assert RayEngine.for_study(s.resources, cpus_per_cell=1.0).cpus_per_cell == 1.0
    for override, message in (
        ("resources.cpus_per_cell=0", r"resources\.cpus_per_cell: expected a number > 0, got 0"),
        ("resources.gpus_per_cell=-1", r"resources\.gpus_per_cell: expected a number >= 0 or null, got -1"),
        ("resources.gpu=1", r"resources\.gpu: unknown field"),
    ):
        with pytest.raises(FssBenchError, match=message):
            load_study(study, [override])


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_a_ray_address_with_no_cluster_is_a_one_line_error_at_once(pascal_root, tmp_path):
    import socket
    import subprocess
    import sys

    from tests.helpers import ROOT

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    study = write_study(tmp_path, pascal_root)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for address, message in (
        ("nonsense", "expected auto or HOST:PORT"),
        (dead, f"--ray-address {dead}: nothing answers there"),
    ):
        cmd = [sys.executable, "-m", "benchmark.cli", "-q", "run", str(study), "--engine", "ray"]
        proc = subprocess.run(
            [*cmd, "--ray-address", address, "--tracking-uri", uri],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_silences_rays_token_notice(tmp_path, quiet):
    """-q: Ray's token-authentication notice (printed when a local cluster starts without a token)
    is not shown; without -q it is."""
    import subprocess
    import sys
    import tempfile

    from tests.ray_cluster import require_ray

    require_ray()
    short = tempfile.mkdtemp(prefix="fssq")  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env |= {"HOME": str(tmp_path), "RAY_TMPDIR": short, "RAY_USAGE_STATS_ENABLED": "0"}
    code = (
        "import ray\nfrom benchmark.engines.ray import connect\n"
        f"connect(None, num_cpus=1, quiet={quiet})\nray.shutdown()\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
    finally:
        import shutil

        shutil.rmtree(short, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert ("Token authentication is" in out.stderr) is not quiet, out.stderr[-2000:]
