"""Real ``fssbench search`` processes: two workers sharing one study, a worker killed mid-trial
(heartbeats fail and retry its trial), and Ctrl-C followed by a resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import TrialState

from tests.helpers import ROOT, TINY, wait_for_journal

pytestmark = pytest.mark.slow


def write_search(tmp: Path, root: Path, episodes: int = 6, trials: int = 6) -> Path:
    raw = {
        "name": "workers",
        "study": {
            "name": "workers-study",
            "data": {"pascal": str(root)},
            "folds": [0],
            "shots": [1],
            "model": dict(TINY),
            "variants": {"fssam": {}},
        },
        "episodes": episodes,
        "space": {
            "imr_iters": {"type": "int", "low": 0, "high": 3},
            "threshold": {"type": "float", "low": 0.1, "high": 0.9},
        },
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "report_every": 1,
        "trials": trials,
    }
    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def command(path: Path, tmp: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmark.cli",
        "-q",
        "search",
        str(path),
        "--work-dir",
        str(tmp / "work"),
        "--tracking-uri",
        f"sqlite:///{tmp / 'mlflow.db'}",
        *extra,
    ]


def records(tmp: Path):
    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{tmp / 'optuna.db'}")
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("workers")
    runs = client.search_runs([exp.experiment_id], "tags.`fss.kind` = 'trial'", max_results=1000)
    parents = client.search_runs([exp.experiment_id], "tags.`fss.kind` = 'search'")
    return study, runs, parents


def check_one_run_per_trial(study, runs, parents) -> dict[int, object]:
    numbers = [int(r.data.tags["fss.trial_number"]) for r in runs]
    assert sorted(numbers) == [t.number for t in study.trials] == list(range(len(study.trials)))
    assert len(parents) == 1
    by_number = {int(r.data.tags["fss.trial_number"]): r for r in runs}
    for t in study.trials:
        run = by_number[t.number]
        assert run.data.tags["fss.trial_state"] == t.state.name
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status != "RUNNING" and t.state != TrialState.RUNNING
    return by_number


def test_two_concurrent_workers_share_one_study(pascal_root, tmp_path):
    path = write_search(tmp_path, pascal_root, trials=6)
    procs = [
        subprocess.Popen(
            command(path, tmp_path), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    study, runs, parents = records(tmp_path)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # each worker stops once 6 are finished; both may be inside a trial then (at most one extra each)
    assert 6 <= len(done) == len(study.trials) <= 7
    check_one_run_per_trial(study, runs, parents)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both workers ran trials


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_killed_worker_s_trial_is_failed_by_heartbeat_and_retried(pascal_root, tmp_path):
    path = write_search(tmp_path, pascal_root, episodes=30, trials=2)
    proc = subprocess.Popen(
        command(path, tmp_path, "--heartbeat", "1"), cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_journal(tmp_path / "work", 2)
    finally:
        proc.kill()  # SIGKILL: no clean-up at all
        proc.wait(timeout=60)
    study, runs, _ = records(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    time.sleep(4)  # past the grace period (2 heartbeats)
    rerun = subprocess.run(
        command(path, tmp_path, "--heartbeat", "1"), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study, runs, parents = records(tmp_path)
    first = study.trials[0]
    assert first.state == TrialState.FAIL
    retries = [t for t in study.trials if RetryFailedTrialCallback.retried_trial_number(t) == 0]
    assert len(retries) == 1 and retries[0].params == first.params and retries[0].state == TrialState.COMPLETE
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 2
    by_number = check_one_run_per_trial(study, runs, parents)
    assert by_number[0].info.status == "FAILED"
    assert "stopped sending heartbeats" in by_number[0].data.tags["fss.error"]


def test_ctrl_c_fails_the_trial_and_a_rerun_retries_it_resuming_its_episodes(pascal_root, tmp_path):
    path = write_search(tmp_path, pascal_root, episodes=30, trials=2)
    proc = subprocess.Popen(command(path, tmp_path), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        journal = wait_for_journal(tmp_path / "work", 3)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    scored = len(journal.read_text().splitlines()) - 1
    study, runs, _ = records(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert study.trials[0].user_attrs["interrupted"] is True
    assert runs[0].info.status == "KILLED"
    rerun = subprocess.run(command(path, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study, runs, parents = records(tmp_path)
    retry = study.trials[1]
    assert retry.user_attrs["retry_of"] == 0 and retry.params == study.trials[0].params
    assert retry.state == TrialState.COMPLETE
    # the retry resumed the interrupted cell's journal: its first episodes were not run again
    assert f"trial 1: resuming fssam/pascal/fold0/1shot/seed321 at episode {scored} of 30" in rerun.stdout
    assert scored >= 3 and len(journal.read_text().splitlines()) - 1 == 30
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 2
    check_one_run_per_trial(study, runs, parents)
