"""Training in real processes: DDP with the gloo backend (gradients equal the single-process
gradient of the combined batch), ``torchrun`` end to end, and SIGKILL followed by an exact resume."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from mlflow.tracking import MlflowClient

from benchmark.data.prepared import PreparedDataset
from benchmark.evaluation.loader import ImageStore
from benchmark.jobs.train.data import collate, draw_episode, load_train_episode, train_set
from benchmark.methods import build_method, get_method
from fssam.augment import AugmentConfig
from fssam.finetune import read_finetuned
from fssam.train import dice_loss
from tests.helpers import ROOT, TINY_128

pytestmark = pytest.mark.slow


def _model_and_batch(root: str):
    settings = get_method("fssam").resolve(dict(TINY_128))
    model = build_method("fssam", settings, torch.device("cpu"))
    model.train_mode()
    for m in model.trainable_modules().values():
        m.eval()  # no dropout: the comparison is about the gradient arithmetic
    ts = train_set(PreparedDataset(Path(root)), 0, 1)
    store = ImageStore(PreparedDataset(Path(root)))
    aug = AugmentConfig(crop=128)
    samples = [load_train_episode(store, ts, draw_episode(ts, 321, 0, p, 1), 321, 0, aug) for p in (0, 1)]
    return model, collate(samples)


def _grads(model) -> dict[str, torch.Tensor]:
    return {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def _ddp_worker(rank: int, root: str, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    model, batch = _model_and_batch(root)
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    mine = {k: v[rank : rank + 1] for k, v in batch.items()}
    logits = net(mine["query"], mine["supports"], mine["support_masks"], query_mask=mine["query_mask"])
    dice_loss(logits, mine["query_mask"]).backward()
    torch.save(_grads(model), f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_gradients_equal_the_single_process_gradient_of_the_combined_batch(pascal_root, tmp_path):
    mp.spawn(
        _ddp_worker,
        args=(str(pascal_root), f"file://{tmp_path / 'init'}", str(tmp_path)),
        nprocs=2,
        join=True,
    )
    model, batch = _model_and_batch(str(pascal_root))
    logits = model(batch["query"], batch["supports"], batch["support_masks"], query_mask=batch["query_mask"])
    dice_loss(logits, batch["query_mask"]).backward()
    combined = _grads(model)
    per_sample = []
    for i in (0, 1):  # the same batch one sample at a time, in this process
        model.zero_grad(set_to_none=True)
        b = {k: v[i : i + 1] for k, v in batch.items()}
        dice_loss(
            model(b["query"], b["supports"], b["support_masks"], query_mask=b["query_mask"]), b["query_mask"]
        ).backward()
        per_sample.append(_grads(model))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert sum(float(g.abs().sum()) for g in combined.values()) > 0
    for name in combined:
        mean = (per_sample[0][name] + per_sample[1][name]) / 2
        for r in ranks:  # every rank holds the all-reduced mean after backward: exactly
            assert torch.equal(r[name], mean), name
    # and that mean is the combined batch's gradient up to float32 rounding of the batched forward
    diff = sum(float((ranks[0][n] - g).pow(2).sum()) for n, g in combined.items()) ** 0.5
    norm = sum(float(g.pow(2).sum()) for g in combined.values()) ** 0.5
    assert diff / norm < 1e-4


def write_train(tmp: Path, root: Path, **train) -> Path:
    raw = {
        "name": "proc-train",
        "data": {"pascal": str(root)},
        "fold": 0,
        "shot": 1,
        "model": TINY_128,
        "train": {"batch_size": 2, "max_iters": 6, "checkpoint_every": 2, "workers": 2, **train},
        "val": {"episodes": 3, "every": 3, "patience": 5},
    }
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train_command(path: Path, out: Path, uri: str, *extra: str, torchrun: int = 0) -> list[str]:
    head = (
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}"]
        if torchrun
        else [sys.executable]
    )
    return [
        *head,
        "-m",
        "benchmark.cli",
        "-q",
        "train",
        str(path),
        "--out",
        str(out),
        "--tracking-uri",
        uri,
        *extra,
    ]


def test_torchrun_two_processes_train_end_to_end(pascal_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for workers in (2, 0):  # loader workers in each process, or none
        (tmp_path / f"w{workers}").mkdir()
        path = write_train(tmp_path / f"w{workers}", pascal_root, batch_size=1, max_iters=2, workers=workers)
        runs[workers] = subprocess.run(
            train_command(path, tmp_path / f"out{workers}", uri, torchrun=2),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
        assert runs[workers].returncode == 0, runs[workers].stderr[-3000:]
    # the same batches, the same collectives: bitwise the same weights
    a = read_finetuned(tmp_path / "out2" / "last.pth")["modules"]
    b = read_finetuned(tmp_path / "out0" / "last.pth")["modules"]
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
    proc = runs[2]
    state = torch.load(tmp_path / "out2" / "train-state.pt", weights_only=False)
    assert state["world_size"] == 2 and state["global_iter"] == 2 and len(state["rng"]) == 2
    client = MlflowClient(uri)
    run = client.get_run(state["mlflow_run_id"])
    assert run.data.tags["fss.world_size"] == "2" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert "2 iteration(s)" in proc.stdout  # printed once, by process 0


def test_sigkill_mid_training_then_resume_is_bitwise_equal_to_an_uninterrupted_run(pascal_root, tmp_path):
    path = write_train(tmp_path, pascal_root)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    full = subprocess.run(
        train_command(path, tmp_path / "full", uri), cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert full.returncode == 0, full.stderr[-3000:]
    proc = subprocess.Popen(
        train_command(path, tmp_path / "cut", uri), cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    state = tmp_path / "cut" / "train-state.pt"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            if state.is_file() and torch.load(state, weights_only=False)["global_iter"] >= 2:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    cut_at = torch.load(state, weights_only=False)["global_iter"]
    assert 2 <= cut_at < 6  # killed mid-run (mid-epoch: an epoch here is 41 iterations)
    again = subprocess.run(
        train_command(path, tmp_path / "cut", uri, "--resume"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    a = read_finetuned(tmp_path / "full" / "last.pth")["modules"]
    b = read_finetuned(tmp_path / "cut" / "last.pth")["modules"]
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)


def test_a_few_dozen_steps_bring_the_training_loss_down(pascal_root, tmp_path):
    from benchmark.jobs.train.job import Trainer
    from benchmark.specs.train import parse_train

    raw = yaml.safe_load(write_train(tmp_path, pascal_root, max_iters=36, checkpoint_every=36).read_text())
    raw["val"] = {"episodes": 3, "every": 36, "patience": 5}
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    outcome = Trainer(parse_train(raw, "t.yaml"), tmp_path / "out", tracking_uri=uri, progress=False).run()
    losses = [
        m.value
        for m in sorted(MlflowClient(uri).get_metric_history(outcome.run_id, "loss"), key=lambda m: m.step)
    ]
    assert len(losses) == 36
    first, last = sum(losses[:12]) / 12, sum(losses[-12:]) / 12
    assert last < first - 0.02, (first, last)
