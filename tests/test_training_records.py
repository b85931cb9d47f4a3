"""The training's MLflow run, written by :class:`benchmark.records.training.TrainingRecords` alone:
its name, tags and params, buffered curves logged once per step across a resume, the checkpoint
record and the run's status."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from benchmark.records.training import TrainingFacts, TrainingRecords
from benchmark.specs.train import parse_train
from tests.helpers import TINY_128


def facts(**changes) -> TrainingFacts:
    base = dict(
        world_size=2,
        device="cpu",
        val_manifest_sha256="ab" * 32,
        code_sha256="cd" * 32,
        base_weights={"sam2": "random-init:seed0"},
        trainable_params=10,
        frozen_params=20,
        iterations_per_epoch=41,
        iterations=4,
    )
    return TrainingFacts(**(base | changes))


@pytest.fixture
def spec(pascal_root):
    raw = {
        "name": "records-train",
        "method": "fssam",
        "data": {"pascal": str(pascal_root)},
        "fold": 0,
        "shot": 1,
        "model": dict(TINY_128),
        "train": {"batch_size": 2, "max_iters": 4},
        "val": {"episodes": 4, "every": 2},
    }
    return parse_train(raw, "records.yaml")


def test_a_new_training_run_has_its_name_tags_params_and_config(spec, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    records = TrainingRecords.open(uri, spec, tmp_path, facts(), None)
    run = MlflowClient(uri).get_run(records.run_id)
    assert run.info.run_name == "train fssam pascal fold0 1shot" and run.info.status == "RUNNING"
    tags, params = run.data.tags, run.data.params
    assert tags["fss.kind"] == "train" and tags["fss.world_size"] == "2" and tags["fss.device"] == "cpu"
    assert tags["fss.weights.sam2"] == "random-init:seed0" and tags["fss.train_sha256"] == spec.sha256
    assert tags["fss.val_manifest_sha256"] == "ab" * 32 and tags["mlflow.source.name"] == "records.yaml"
    assert params["iterations_per_epoch"] == "41" and params["trainable_params"] == "10"
    assert params["train.batch_size"] == "2" and "seed" not in params and params["init_seed"] == "0"
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
        json.dumps(spec.identity(), sort_keys=True, default=str)
    )
    assert [a.path for a in MlflowClient(uri).list_artifacts(records.run_id)] == ["config.json"]


def test_curves_are_logged_in_batches_and_never_twice_across_a_resume(spec, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    records = TrainingRecords.open(uri, spec, tmp_path, facts(), None)
    for step in range(1, 1001):  # 3000 metrics: more than one batch
        records.curves(step, loss=1.0 / step, lr=0.1, grad_norm=2.0)
    client = MlflowClient(uri)
    assert client.get_metric_history(records.run_id, "loss") == []  # buffered until flushed
    records.flush()
    records.end("KILLED")
    assert client.get_run(records.run_id).info.status == "KILLED"
    resumed = TrainingRecords.open(uri, spec, tmp_path, facts(), records.run_id)
    assert resumed.run_id == records.run_id and resumed.logged_until == 1000
    assert client.get_run(records.run_id).info.status == "RUNNING"
    for step in (999, 1000, 1001):
        resumed.curves(step, loss=5.0, lr=0.1, grad_norm=2.0)
    resumed.validation(0.25, 1001)
    resumed.end("FINISHED")
    loss = sorted((m.step, m.value) for m in client.get_metric_history(records.run_id, "loss"))
    assert len(loss) == 1001 and loss[998] == (999, pytest.approx(1 / 999)) and loss[-1] == (1001, 5.0)
    assert [(m.step, m.value) for m in client.get_metric_history(records.run_id, "val_miou")] == [
        (1001, 0.25)
    ]
    assert client.get_run(records.run_id).info.status == "FINISHED"


def test_the_checkpoint_record_names_its_hash_run_and_store(spec, tmp_path):
    from fssam.hashing import file_sha256

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    records = TrainingRecords.open(uri, spec, tmp_path, facts(), None)
    best = tmp_path / "best.pth"
    torch.save({"w": torch.ones(2)}, best)
    records.checkpoint(best, {"iteration": 4, "val_miou": 0.5})
    record = json.loads((tmp_path / "best.pth.json").read_text())
    assert record == {
        "sha256": file_sha256(best),
        "mlflow_run_id": records.run_id,
        "tracking_uri": uri,
        "iteration": 4,
        "val_miou": 0.5,
    }
    client = MlflowClient(uri)
    assert client.get_run(records.run_id).data.tags["fss.checkpoint_sha256"] == record["sha256"]
    assert {a.path for a in client.list_artifacts(records.run_id, "checkpoint")} == {
        "checkpoint/best.pth",
        "checkpoint/best.pth.json",
    }
