"""The training loop, one named step at a time: an iteration (:meth:`TrainLoop.step`: poly learning
rate, forward, Dice loss, backward, AdamW), then what follows it (:meth:`TrainLoop.after_step`: the
curves, the validation cadence, patience, checkpoints and early stopping)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.jobs.train.distributed import Collectives
from benchmark.jobs.train.state import Progress, save_state
from benchmark.jobs.train.validation import Validator, validation_due
from benchmark.methods import TrainableMethod
from benchmark.records.training import TrainingRecords
from benchmark.specs.train import TrainSpec
from fssam.train import dice_loss, poly_lr


@dataclass(frozen=True)
class Schedule:
    """``per_epoch`` iterations per epoch, ``max_iter`` for the whole recipe (the poly learning
    rate's horizon) and ``stop_at``, the iteration this run stops at (``train.max_iters``)."""

    per_epoch: int
    max_iter: int
    stop_at: int


@dataclass
class LoopEnd:
    """How the loop ended: ``last``, the index of the last iteration run (the start if none), and
    whether patience ran out."""

    last: int
    stopped_early: bool


def grad_norm(optimizer: torch.optim.Optimizer) -> float:
    """The L2 norm of every trainable parameter's gradient together (0 without gradients)."""
    grads = [p.grad for grp in optimizer.param_groups for p in grp["params"] if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads])))


class TrainLoop:
    """Iterations ``progress.done`` to ``schedule.stop_at`` of ``spec``'s recipe on ``net`` (``model``,
    DDP-wrapped with several processes), validating with ``validator`` and saving the resumable state
    to ``state_path``; ``records`` is process 0's MLflow run (None on the others)."""

    def __init__(
        self,
        spec: TrainSpec,
        model: TrainableMethod,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        coll: Collectives,
        validator: Validator,
        records: TrainingRecords | None,
        state_path: Path,
        rank: int,
        log: Callable[[str], None],
    ):
        self.spec, self.model, self.net, self.optimizer, self.schedule = spec, model, net, optimizer, schedule
        self.coll, self.validator, self.records, self.state_path = coll, validator, records, state_path
        self.rank, self.log = rank, log
        self.every, self.patience = spec.val["every"], spec.val["patience"]
        self.by_epoch = self.every in (
            "authors",
            "epoch",
        )  # patience in epochs (the release's), else validations

    def step(self, i: int, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float, float]:
        """Iteration ``i`` (0-based) on ``batch``: (the loss averaged over the processes, the learning
        rate, the gradient norm)."""
        train = self.spec.train
        lr = poly_lr(train["lr"], i + 1, self.schedule.max_iter, train["power"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        logits = self.net(
            batch["query"], batch["supports"], batch["support_masks"], query_mask=batch["query_mask"]
        )
        loss = dice_loss(logits, batch["query_mask"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = grad_norm(self.optimizer)
        self.optimizer.step()
        return self.coll.mean(loss), lr, norm

    def after_step(self, progress: Progress) -> bool:
        """Validate, count patience and save the state as due after ``progress.done`` iterations;
        return whether patience ran out (early stop)."""
        done, per_epoch, stop_at = progress.done, self.schedule.per_epoch, self.schedule.stop_at
        validate = done == stop_at or validation_due(done, per_epoch, self.spec.train["epochs"], self.every)
        if validate:
            improved = self.validator.validate(self.model, progress, per_epoch, self.records)
            if not self.by_epoch:
                progress.bad = 0 if improved else progress.bad + 1
        if self.by_epoch and done % per_epoch == 0:  # an epoch ends: did it improve (mid or end)?
            assert progress.best is not None  # an epoch's end always validates
            progress.bad = 0 if progress.best["iteration"] > done - per_epoch else progress.bad + 1
        stopped_early = progress.bad >= self.patience and done < stop_at
        if validate or done % self.spec.train["checkpoint_every"] == 0 or done == stop_at:
            if self.records is not None:
                self.records.flush()
            save_state(self.state_path, self.spec, self.model, self.optimizer, progress, self.coll, self.rank)
        if stopped_early and self.rank == 0:
            unit = "epochs" if self.by_epoch else "validations"
            self.log(f"early stop at iteration {done}: {self.patience} {unit} without improvement")
        return stopped_early

    def run(self, batches: Iterable[dict[str, torch.Tensor]], progress: Progress, bar: Any) -> LoopEnd:
        """Train on ``batches`` (the CPU batches from iteration ``progress.done`` on), ticking the
        progress ``bar`` (tqdm)."""
        device, last, stopped_early = self.coll.device, progress.done, False
        for i, cpu_batch in enumerate(batches, progress.done):
            last = i
            batch = {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}
            mean_loss, lr, norm = self.step(i, batch)
            if self.records is not None:
                self.records.curves(i + 1, loss=float(mean_loss), lr=lr, grad_norm=norm)
            bar.update()
            bar.set_postfix_str(f"loss {float(mean_loss):.4f}")
            progress.done = i + 1
            stopped_early = self.after_step(progress)
            if stopped_early:
                break
        return LoopEnd(last, stopped_early)
