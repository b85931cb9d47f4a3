"""``fssbench train`` as a job: the :class:`Trainer` sets a training up (processes, train list,
schedule, model, optimizer, resume, MLflow run), runs the :class:`~benchmark.jobs.train.loop.TrainLoop`
and returns a :class:`TrainOutcome`; :func:`print_outcome` prints it."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.data.prepared import PreparedDataset
from benchmark.device import resolve_device
from benchmark.episodes.manifest import load_manifest
from benchmark.errors import USER_ERRORS, FssBenchError
from benchmark.evaluation.cell import code_hash
from benchmark.evaluation.loader import ImageStore
from benchmark.interrupts import sigterm_as_interrupt
from benchmark.io_utils import say
from benchmark.jobs.train.data import TrainBatches, TrainSet, loader_workers, train_loader, train_set
from benchmark.jobs.train.distributed import Collectives, dist_info, init_distributed, leave_distributed
from benchmark.jobs.train.export import base_weight_ids
from benchmark.jobs.train.loop import LoopEnd, Schedule, TrainLoop
from benchmark.jobs.train.state import Progress, load_state, restore_state
from benchmark.jobs.train.validation import Validator, validation_manifest
from benchmark.methods import TrainableMethod, build_method, get_trainable
from benchmark.records.training import TrainingFacts, TrainingRecords
from benchmark.specs.train import TrainSpec, check_select_on_test
from benchmark.workspace import Workspace


@dataclass
class TrainOutcome:
    out_dir: Path
    run_id: str | None
    iterations: int
    iterations_run: int
    epochs: float
    best_value: float | None
    best_iteration: int | None
    best_checkpoint: Path | None
    stopped_early: bool
    seconds: float
    trainable_params: int
    frozen_params: int
    world_size: int


def parameter_counts(model: TrainableMethod) -> tuple[int, int]:
    """(trainable, frozen) parameter counts, checking that exactly the trainable modules train."""
    trainable_ids = {id(p) for m in model.trainable_modules().values() for p in m.parameters()}
    trainable = frozen = 0
    for name, p in model.named_parameters():
        if id(p) in trainable_ids:
            if not p.requires_grad:
                raise FssBenchError(f"internal: trainable parameter {name} does not require grad")
            trainable += p.numel()
        else:
            if p.requires_grad:
                raise FssBenchError(f"internal: frozen parameter {name} requires grad")
            frozen += p.numel()
    return trainable, frozen


def optimizer_for(model: TrainableMethod, spec: TrainSpec) -> torch.optim.Optimizer:
    """AdamW over the trainable modules, one parameter group per module (named after it)."""
    groups = [{"params": list(m.parameters()), "name": n} for n, m in model.trainable_modules().items()]
    return torch.optim.AdamW(groups, lr=spec.train["lr"], weight_decay=spec.train["weight_decay"])


def distributed_net(model: TrainableMethod, device: torch.device, world: int) -> torch.nn.Module:
    """``model``, DDP-wrapped with several processes."""
    if world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,  # the decoder's IoU and extra mask heads get no Dice gradient
    )


class Trainer:
    """One training of ``spec`` into ``out_dir``, one process of ``torchrun``'s (or the only one)."""

    def __init__(
        self,
        spec: TrainSpec,
        out_dir: Path,
        tracking_uri: str | None = None,
        resume: bool = False,
        select_on_test: bool = False,
        device: str | None = None,
        progress: bool = True,
        log: Callable[[str], None] = say,
    ):
        check_select_on_test(spec, select_on_test)
        self.spec, self.out, self.tracking_uri = spec, Path(out_dir).absolute(), tracking_uri
        self.resume, self.progress, self.log = resume, progress, log
        self.rank, self.world, self.local_rank = dist_info()
        requested = device or "auto"
        if requested == "auto" and torch.cuda.is_available():
            requested = f"cuda:{self.local_rank}"
        self.device = resolve_device(requested)
        self.state_path = self.out / "train-state.pt"
        self.run_id: str | None = None
        if resume and not self.state_path.is_file():
            raise FssBenchError(f"--resume: {self.state_path} not found (nothing to resume in {self.out})")

    # ------------------------------------------------------------------------------------ set-up
    def val_manifest(self) -> Path:
        """The validation manifest's path (written by process 0)."""
        return validation_manifest(self.spec, self.out, write=self.rank == 0)

    def _schedule(self, ts: TrainSet) -> Schedule:
        spec, batch, world = self.spec, self.spec.train["batch_size"], self.world
        per_epoch = len(ts) // (batch * world)
        if per_epoch == 0:
            raise FssBenchError(
                f"{spec.source}: train.batch_size: the fold's train list has {len(ts)} images, fewer than a "
                f"global batch of {batch} x {world} processes"
            )
        max_iter = spec.train["epochs"] * per_epoch
        return Schedule(per_epoch, max_iter, min(max_iter, spec.train["max_iters"] or max_iter))

    def _build_model(self) -> TrainableMethod:
        """The method, seeded, its weights loaded strictly before anything is written: a checkpoint
        of another architecture or size is an error naming the field, and leaves no output folder."""
        spec = self.spec
        torch.manual_seed(spec.train["seed"])
        np.random.seed(spec.train["seed"])
        random.seed(spec.train["seed"])
        try:
            return build_method(spec.method, dict(spec.settings), self.device)
        except USER_ERRORS as e:
            raise FssBenchError(f"{spec.source}: model: {e}") from None

    def _announce(
        self, model: TrainableMethod, counts: tuple[int, int], images: int, schedule: Schedule
    ) -> int:
        """Log what trains on what (process 0); return the loader workers."""
        spec, (trainable, frozen) = self.spec, counts
        workers = loader_workers(spec.train["workers"])
        if self.rank == 0:
            self.log(
                f"{spec.method}: {trainable:,} trainable parameters ({', '.join(model.trainable_modules())}), "
                f"{frozen:,} frozen; {images} training images, {schedule.per_epoch} iterations per epoch "
                f"(batch {spec.train['batch_size']} x {self.world} process(es)), {schedule.stop_at} iterations "
                f"to run, {workers} loader worker(s)"
                + (
                    f" (train.workers {spec.train['workers']}, capped at the {workers} CPU(s) this process may use)"
                    if workers < spec.train["workers"]
                    else ""
                )
            )
        return workers

    def _open_records(
        self, counts: tuple[int, int], schedule: Schedule, val_path: Path, run_id: str | None
    ) -> TrainingRecords | None:
        """Process 0's MLflow run (the resumed one, or a new one); None on the other processes."""
        if self.rank != 0:
            return None
        spec = self.spec
        facts = TrainingFacts(
            world_size=self.world,
            device=str(self.device),
            val_manifest_sha256=load_manifest(val_path).sha256,
            code_sha256=code_hash(),
            base_weights=base_weight_ids(spec),
            trainable_params=counts[0],
            frozen_params=counts[1],
            iterations_per_epoch=schedule.per_epoch,
            iterations=schedule.stop_at,
        )
        return TrainingRecords.open(self.tracking_uri, spec, self.out, facts, run_id)

    # ---------------------------------------------------------------------------------------- run
    def run(self) -> TrainOutcome:
        with sigterm_as_interrupt():
            return self._run()

    def _run(self) -> TrainOutcome:
        spec, t0 = self.spec, time.perf_counter()
        if self.world > 1 and not torch.distributed.is_initialized():
            init_distributed(self.device, spec.train["dist_timeout_s"])
        ts = train_set(
            PreparedDataset(spec.data_root), spec.fold, spec.shot, spec.split, spec.val["holdout_fraction"]
        )
        schedule = self._schedule(ts)
        state = load_state(self.state_path, spec, self.world) if self.resume else None
        model = self._build_model()
        val_path = self.val_manifest()
        model.train_mode()
        counts = parameter_counts(model)
        workers = self._announce(model, counts, len(ts), schedule)
        optimizer = optimizer_for(model, spec)
        net = distributed_net(model, self.device, self.world)
        progress = Progress()
        if state is not None:
            progress = restore_state(state, model, optimizer, self.rank)
            if self.rank == 0:
                self.log(
                    f"resuming at iteration {progress.done} of {schedule.stop_at} from {self.state_path}"
                )
        records = self._open_records(counts, schedule, val_path, progress.run_id)
        if records is not None:
            progress.run_id = records.run_id
        self.run_id = progress.run_id
        coll = Collectives(self.device, self.world)
        workspace = Workspace(self.out)  # the validation's: <out>/feature-cache, <out>/locks
        validator = Validator(spec, self.out, self.device, val_path, workspace, coll, self.rank, self.log)
        loop = TrainLoop(
            spec,
            model,
            net,
            optimizer,
            schedule,
            coll,
            validator,
            records,
            self.state_path,
            self.rank,
            self.log,
        )
        start = progress.done
        end = self._train(loop, self._loader(ts, schedule, start, workers), progress, records, schedule)
        return self._outcome(end, start, progress, schedule, counts, time.perf_counter() - t0)

    def _loader(self, ts: TrainSet, schedule: Schedule, start: int, workers: int) -> Any:
        """This process's CPU batches from iteration ``start`` to ``schedule.stop_at``, built by
        ``workers`` loader processes."""
        spec = self.spec
        batches = TrainBatches(
            ImageStore(PreparedDataset(spec.data_root)),
            ts,
            spec.train["seed"],
            spec.shot,
            spec.augment,
            schedule.per_epoch,
            spec.train["batch_size"],
            self.world,
            self.rank,
        )
        return train_loader(batches, start, schedule.stop_at, workers, pin_memory=self.device.type == "cuda")

    def _train(
        self,
        loop: TrainLoop,
        loader: Any,
        progress: Progress,
        records: TrainingRecords | None,
        schedule: Schedule,
    ) -> LoopEnd:
        """Run ``loop`` under a progress bar; end the MLflow run (FINISHED with the best checkpoint,
        KILLED when interrupted, else FAILED) and leave the process group, whatever happens."""
        from tqdm import tqdm

        bar = tqdm(
            total=schedule.stop_at,
            initial=progress.done,
            desc=f"train {self.spec.name}",
            unit="it",
            disable=not self.progress or self.rank != 0,
        )
        status = "FAILED"
        try:
            end = loop.run(loader, progress, bar)
            status = "FINISHED"
            return end
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            bar.close()
            if records is not None:
                self._close_records(records, status)
            leave_distributed(self.world)

    def _close_records(self, records: TrainingRecords, status: str) -> None:
        records.flush()
        best = self.out / "best.pth"
        if status == "FINISHED" and best.is_file():
            records.checkpoint(best, get_trainable(self.spec.method).read_meta(best))
        records.end(status)

    def _outcome(
        self,
        end: LoopEnd,
        start: int,
        progress: Progress,
        schedule: Schedule,
        counts: tuple[int, int],
        seconds: float,
    ) -> TrainOutcome:
        best, best_path = progress.best, self.out / "best.pth"
        return TrainOutcome(
            out_dir=self.out,
            run_id=self.run_id,
            iterations=schedule.stop_at,
            iterations_run=max(0, (end.last + 1 if schedule.stop_at > start else start) - start),
            epochs=(end.last + 1) / schedule.per_epoch,
            best_value=None if best is None else best["value"],
            best_iteration=None if best is None else best["iteration"],
            best_checkpoint=best_path if best_path.is_file() else None,
            stopped_early=end.stopped_early,
            seconds=seconds,
            trainable_params=counts[0],
            frozen_params=counts[1],
            world_size=self.world,
        )


def print_outcome(outcome: TrainOutcome, spec: TrainSpec, out: Any = sys.stdout) -> None:
    """The outcome in a few lines: iterations and time, the best validation and checkpoint, warnings."""
    per_step = outcome.seconds / max(outcome.iterations_run, 1)
    print(
        f"{outcome.iterations_run} iteration(s) in {outcome.seconds:.1f} s ({per_step:.2f} s/iteration incl. "
        f"validation, {outcome.world_size} process(es)); {outcome.epochs:.2f} epochs",
        file=out,
    )
    if outcome.best_value is not None:
        print(
            f"best validation mIoU {100 * outcome.best_value:.2f} at iteration {outcome.best_iteration} "
            f"({spec.val['kind']} manifest)",
            file=out,
        )
    if outcome.best_checkpoint is not None:
        print(
            f"fine-tuned checkpoint: {outcome.best_checkpoint} (score it with `fssbench run STUDY.yaml "
            f"model.finetuned_checkpoint={outcome.best_checkpoint}`)",
            file=out,
        )
    if outcome.stopped_early:
        print("stopped early (patience)", file=out)
    if outcome.run_id:
        print(f"MLflow run {outcome.run_id} (experiment {spec.name!r})", file=out)
    if spec.random_init:
        print("WARNING: RANDOM-INIT base weights: the numbers check the pipeline only", file=out)
    if spec.selects_on_test:
        print("WARNING: SELECTED ON TEST EPISODES (fss.tuned_on_test=true)", file=out)
