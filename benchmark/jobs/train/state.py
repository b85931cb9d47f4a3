"""The resumable state of a training (``train-state.pt``): where it stands (:class:`Progress`), the
trainable weights, the optimizer and every process's RNG states, written atomically by process 0
and checked on ``--resume`` against the training file and the number of processes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.errors import FssBenchError
from benchmark.jobs.train.distributed import Collectives
from benchmark.methods import TrainableMethod, get_trainable
from benchmark.specs.train import TrainSpec
from fssam.finetune import module_states, save_atomic

STATE_FORMAT = "fssbench-train-state/2"  # /1: poly LR from current_iter = i, patience in validations


@dataclass
class Progress:
    """Where a training stands after ``done`` iterations: the best validation so far
    (``{"value", "iteration"}`` or None), ``bad`` (epochs with ``val.every: authors|epoch``, else
    validations, without improvement), every validation (``history``) and its MLflow run."""

    done: int = 0
    best: dict[str, Any] | None = None
    bad: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None


def rng_state() -> dict[str, Any]:
    """This process's torch, NumPy, Python (and CUDA) random states."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state(path: Path, spec: TrainSpec, world: int) -> dict[str, Any]:
    """The state at ``path``, refused (one line) if unreadable, of another format, written by another
    training file or by another number of processes."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or not a torch file
        raise FssBenchError(
            f"{path}: unreadable training state ({type(e).__name__}); restart without --resume "
            "or restore the file"
        ) from None
    if isinstance(state, dict) and str(state.get("format", "")).startswith("fssbench-train-state/"):
        if state["format"] != STATE_FORMAT:
            raise FssBenchError(
                f"{path}: written by an older `fssbench train` ({state['format']}: another "
                "learning-rate schedule and patience count); restart without --resume"
            )
    else:
        raise FssBenchError(f"{path}: not a training state written by `fssbench train`")
    if state["spec_sha256"] != spec.sha256:
        raise FssBenchError(
            f"{path}: written by a different training config (method, data, fold, shot, "
            "settings or recipe differ); resume with the file it was started with, or use another --out"
        )
    if state["world_size"] != world:
        raise FssBenchError(
            f"{path}: written by {state['world_size']} process(es); resume with the same number"
        )
    return state


def restore_state(
    state: dict[str, Any], model: TrainableMethod, optimizer: torch.optim.Optimizer, rank: int
) -> Progress:
    """Load a :func:`load_state` state into ``model``'s trainable modules, ``optimizer`` and this
    process's RNGs; return where the training stood."""
    for name, module in model.trainable_modules().items():
        module.load_state_dict(state["modules"][name])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"][rank])
    return Progress(
        done=state["global_iter"],
        best=state["best"],
        bad=state["bad"],
        history=state["history"],
        run_id=state["mlflow_run_id"],
    )


def save_state(
    path: Path,
    spec: TrainSpec,
    model: TrainableMethod,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    coll: Collectives,
    rank: int,
) -> None:
    """Every process's RNG states gathered; process 0 writes the state to ``path`` and the trainable
    weights to ``last.pth`` beside it."""
    states = coll.gather_objects(rng_state())
    if rank != 0:
        return
    save_atomic(
        {
            "format": STATE_FORMAT,
            "spec_sha256": spec.sha256,
            "world_size": coll.world,
            "global_iter": progress.done,
            "modules": module_states(model.trainable_modules()),
            "optimizer": optimizer.state_dict(),
            "rng": states,
            "best": progress.best,
            "bad": progress.bad,  # epochs (val.every: authors|epoch) or validations without improvement
            "history": progress.history,
            "mlflow_run_id": progress.run_id,
        },
        path,
    )
    get_trainable(spec.method).save(
        model, path.parent / "last.pth", spec.method, dict(spec.settings), {"iteration": progress.done}
    )
