"""``fssbench train``: episodic fine-tuning of FSSAM or naive SAM 2 on a fold's base classes, one CPU
to many GPUs (``torchrun``), resumable bit for bit, tracked in MLflow.

One iteration: the global batch ``g`` of the epoch (see :mod:`benchmark.train_data`), split over
the processes and built by ``train.workers`` background processes; forward through the
(DistributedDataParallel-wrapped) model, Dice loss, backward (DDP all-reduces and averages the
gradients), poly learning rate (the authors' ``current_iter = i + 1``), AdamW step. Only the method's
trainable modules train (for FSSAM and naive SAM 2: SAM 2's mask decoder, memory encoder and memory
attention); everything else is frozen (checked at start).

Process 0 validates (the cell function on a validation manifest: the fold's base classes on the
val split) at the cadence of ``val.every`` (:func:`validation_due`; by default the authors': every
epoch's end, plus mid-epoch), keeps the best weights (``best.pth``, a fine-tuned checkpoint that
``fssbench run`` takes as ``finetuned_checkpoint``), writes the resumable state (``train-state.pt``:
trainable weights, optimizer, iteration, best value, every process's RNG states) atomically every
``checkpoint_every`` iterations, and logs to MLflow. The other processes wait for the validation
in a collective, up to ``train.dist_timeout_s``.

Every tensor of a collective lives on the model's device (:class:`Collectives`): under ``torchrun``
on GPUs the process group is NCCL, which serves CUDA tensors only.

The trainer names no method: what trains, how the weights are saved and exported comes from the
method's :class:`~benchmark.methods.registry.Trainable` capability (``MethodEntry.trainable``).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.data.prepared import PreparedDataset
from benchmark.device import resolve_device
from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import load_manifest, save_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.errors import USER_ERRORS, FssBenchError
from benchmark.evaluation.cell import CellSpec, CheckpointHashes, code_hash, evaluate_cell
from benchmark.evaluation.loader import ImageStore
from benchmark.interrupts import sigterm_as_interrupt
from benchmark.io_utils import say, write_text_atomic
from benchmark.methods import TrainableMethod, build_method, get_method, get_trainable
from benchmark.records.tracking import Tracker, flat_params, git_commit, package_versions, standard_tags
from benchmark.specs.train import TrainSpec, check_select_on_test
from benchmark.train_data import TrainBatches, train_loader, train_set
from benchmark.workspace import Workspace
from fssam.finetune import module_states, save_atomic
from fssam.train import dice_loss, poly_lr

STATE_FORMAT = "fssbench-train-state/2"  # /1: poly LR from current_iter = i, patience in validations


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


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (1 process without it)."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: torch.device, timeout_s: float) -> None:
    """Join torchrun's process group: NCCL for CUDA tensors on a GPU (``cuda:nccl``), gloo for CPU
    tensors on CPUs (``cpu:gloo``); either serves only its device type. ``timeout_s`` bounds every
    wait, including the other processes' wait for process 0's validation."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # all_gather_object's tensors go to the current CUDA device
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(
        backend=f"{device.type}:{backend}", timeout=timedelta(seconds=timeout_s)
    )


class Collectives:
    """The trainer's collectives over ``world`` processes, every tensor placed on ``device`` (the
    model's) first: NCCL serves CUDA tensors only, so a CPU tensor would fail there. With one
    process nothing is communicated."""

    def __init__(self, device: torch.device | str, world: int):
        self.device, self.world = torch.device(device), world

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Process ``src``'s ``tensor`` on every process (a copy on ``device``)."""
        out = tensor.detach().to(self.device, copy=True)
        if self.world > 1:
            torch.distributed.broadcast(out, src)
        return out

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``tensor`` over the processes (a copy on ``device``)."""
        out = tensor.detach().to(self.device, copy=True)
        if self.world > 1:
            torch.distributed.all_reduce(out)
            out = out / self.world
        return out

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in rank order. torch places the pickled bytes on the
        current CUDA device under NCCL (set by :func:`init_distributed`), on the CPU under gloo."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out


def validation_due(done: int, per_epoch: int, epochs: int, every: str | int) -> bool:
    """Whether to validate after ``done`` iterations (counted from 1).

    * ``every="authors"``, the cadence of the authors' ``train.py``: at the end of every epoch, and
      within epoch ``e`` (0-based) after its step of index ``round(per_epoch / 2)`` (Python's
      rounding, half to even; the release's ``SubEpoch_val``) when ``epochs <= 100`` or ``e > 100``.
      A mid-epoch point that falls on the epoch's last step validates once.
    * ``every="epoch"``: at the end of every epoch only.
    * ``every=N``: every ``N`` iterations.
    """
    if every not in ("authors", "epoch"):
        return done % int(every) == 0
    epoch, step = divmod(done - 1, per_epoch)  # step: the 0-based index of the step in its epoch
    if step == per_epoch - 1:
        return True
    return every == "authors" and (epochs <= 100 or epoch > 100) and step == round(per_epoch / 2)


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


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def loader_workers(requested: int) -> int:
    """``train.workers`` capped at the CPUs this process may use: more loader processes than CPUs
    only contend (torch warns about it), and the batches are the same for any number of workers."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(requested, cpus)


class Trainer:
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
        if resume and not self.state_path.is_file():
            raise FssBenchError(f"--resume: {self.state_path} not found (nothing to resume in {self.out})")

    # ------------------------------------------------------------------------------------ set-up
    def _init_distributed(self) -> None:
        if self.world > 1 and not torch.distributed.is_initialized():
            init_distributed(self.device, self.spec.train["dist_timeout_s"])

    def _val_manifest(self) -> Path:
        spec = self.spec
        m = build_manifest(
            get_protocol("fssam"),
            ManifestRequest(
                spec.data_root,
                spec.fold,
                spec.shot,
                seed=spec.val["seed"],
                episodes=spec.val["episodes"],
                kind=spec.val["kind"],
                coco_split=spec.split,
                dataset=spec.dataset,
                **(
                    {"val_source": spec.val["source"], "holdout_fraction": spec.val["holdout_fraction"]}
                    if spec.val["kind"] == "val"
                    else {}
                ),
            ),
        )
        path = (
            self.out
            / "manifests"
            / f"{spec.val['kind']}-fold{spec.fold}-{spec.shot}shot-n{m.num_episodes}.json"
        )
        if self.rank == 0:
            save_manifest(m, path)
        return path

    def _load_state(self) -> dict[str, Any]:
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=False)
        except Exception as e:  # truncated or not a torch file
            raise FssBenchError(
                f"{self.state_path}: unreadable training state ({type(e).__name__}); restart without --resume "
                "or restore the file"
            ) from None
        if isinstance(state, dict) and str(state.get("format", "")).startswith("fssbench-train-state/"):
            if state["format"] != STATE_FORMAT:
                raise FssBenchError(
                    f"{self.state_path}: written by an older `fssbench train` ({state['format']}: another "
                    "learning-rate schedule and patience count); restart without --resume"
                )
        else:
            raise FssBenchError(f"{self.state_path}: not a training state written by `fssbench train`")
        if state["spec_sha256"] != self.spec.sha256:
            raise FssBenchError(
                f"{self.state_path}: written by a different training config (method, data, fold, shot, "
                "settings or recipe differ); resume with the file it was started with, or use another --out"
            )
        if state["world_size"] != self.world:
            raise FssBenchError(
                f"{self.state_path}: written by {state['world_size']} process(es); resume with the same number"
            )
        return state

    # ---------------------------------------------------------------------------------------- run
    def run(self) -> TrainOutcome:
        with sigterm_as_interrupt():
            return self._run()

    def _run(self) -> TrainOutcome:
        spec, t0 = self.spec, time.perf_counter()
        self._init_distributed()
        ts = train_set(
            PreparedDataset(spec.data_root), spec.fold, spec.shot, spec.split, spec.val["holdout_fraction"]
        )
        batch, world = spec.train["batch_size"], self.world
        per_epoch = len(ts) // (batch * world)
        if per_epoch == 0:
            raise FssBenchError(
                f"{spec.source}: train.batch_size: the fold's train list has {len(ts)} images, fewer than a "
                f"global batch of {batch} x {world} processes"
            )
        self._per_epoch = per_epoch
        max_iter = spec.train["epochs"] * per_epoch
        stop_at = min(max_iter, spec.train["max_iters"] or max_iter)
        state = self._load_state() if self.resume else None
        torch.manual_seed(spec.train["seed"])
        np.random.seed(spec.train["seed"])
        random.seed(spec.train["seed"])
        # the weights load strictly before anything is written: a checkpoint of another architecture
        # or size is an error naming the field, and leaves no output folder behind
        try:
            model: TrainableMethod = build_method(spec.method, dict(spec.settings), self.device)
        except USER_ERRORS as e:
            raise FssBenchError(f"{spec.source}: model: {e}") from None
        val_path = self._val_manifest()
        model.train_mode()
        trainable, frozen = parameter_counts(model)
        workers = loader_workers(spec.train["workers"])
        if self.rank == 0:
            self.log(
                f"{spec.method}: {trainable:,} trainable parameters ({', '.join(model.trainable_modules())}), "
                f"{frozen:,} frozen; {len(ts)} training images, {per_epoch} iterations per epoch "
                f"(batch {batch} x {world} process(es)), {stop_at} iterations to run, "
                f"{workers} loader worker(s)"
                + (
                    f" (train.workers {spec.train['workers']}, capped at the {workers} CPU(s) this process may use)"
                    if workers < spec.train["workers"]
                    else ""
                )
            )
        groups = [{"params": list(m.parameters()), "name": n} for n, m in model.trainable_modules().items()]
        optimizer = torch.optim.AdamW(groups, lr=spec.train["lr"], weight_decay=spec.train["weight_decay"])
        net: torch.nn.Module = model
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # the decoder's IoU and extra mask heads get no Dice gradient
            )
        start, best, bad, history, run_id = 0, None, 0, [], None
        coll = Collectives(self.device, world)
        if state is not None:
            for name, module in model.trainable_modules().items():
                module.load_state_dict(state["modules"][name])
            optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"][self.rank])
            start, best, bad, history, run_id = (
                state["global_iter"],
                state["best"],
                state["bad"],
                state["history"],
                state["mlflow_run_id"],
            )
            if self.rank == 0:
                self.log(f"resuming at iteration {start} of {stop_at} from {self.state_path}")

        self.run_id = run_id  # the resumed run, or None until process 0 creates it
        tracker = self._tracker(trainable, frozen, per_epoch, stop_at, val_path) if self.rank == 0 else None
        run_id = self.run_id
        logged_until = self._logged_until(tracker, run_id)
        store = ImageStore(PreparedDataset(spec.data_root))
        cache = Workspace(self.out).cache  # the validation's feature cache: <out>/feature-cache
        buffer: list[tuple[str, float, int]] = []
        status, stopped_early, i = "FAILED", False, start
        from tqdm import tqdm

        bar = tqdm(
            total=stop_at,
            initial=start,
            desc=f"train {spec.name}",
            unit="it",
            disable=not self.progress or self.rank != 0,
        )
        batches = TrainBatches(
            store, ts, spec.train["seed"], spec.shot, spec.augment, per_epoch, batch, world, self.rank
        )
        loader = train_loader(batches, start, stop_at, workers, pin_memory=self.device.type == "cuda")
        every, patience = spec.val["every"], spec.val["patience"]
        by_epoch = every in ("authors", "epoch")  # patience in epochs (the release's), else validations
        try:
            for i, cpu_batch in enumerate(loader, start):
                b = {k: v.to(self.device, non_blocking=True) for k, v in cpu_batch.items()}
                lr = poly_lr(spec.train["lr"], i + 1, max_iter, spec.train["power"])
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits = net(b["query"], b["supports"], b["support_masks"], query_mask=b["query_mask"])
                loss = dice_loss(logits, b["query_mask"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grads = [
                    p.grad for grp in optimizer.param_groups for p in grp["params"] if p.grad is not None
                ]
                grad_norm = (
                    float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads])))
                    if grads
                    else 0.0
                )
                optimizer.step()
                mean_loss = coll.mean(loss)
                if self.rank == 0 and i + 1 > logged_until:
                    buffer += [
                        ("loss", float(mean_loss), i + 1),
                        ("lr", lr, i + 1),
                        ("grad_norm", grad_norm, i + 1),
                    ]
                bar.update()
                bar.set_postfix_str(f"loss {float(mean_loss):.4f}")
                done = i + 1
                validate = done == stop_at or validation_due(done, per_epoch, spec.train["epochs"], every)
                if validate:
                    best, improved = self._validate(
                        model, val_path, cache, done, best, history, tracker, coll
                    )
                    if not by_epoch:
                        bad = 0 if improved else bad + 1
                if by_epoch and done % per_epoch == 0:  # an epoch ends: did it improve (mid or end)?
                    bad = 0 if best["iteration"] > done - per_epoch else bad + 1
                stopped_early = bad >= patience and done < stop_at
                if validate or done % spec.train["checkpoint_every"] == 0 or done == stop_at:
                    self._flush(tracker, buffer)
                    self._save_state(model, optimizer, done, best, bad, history, coll)
                if stopped_early:
                    if self.rank == 0:
                        unit = "epochs" if by_epoch else "validations"
                        self.log(f"early stop at iteration {done}: {patience} {unit} without improvement")
                    break
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            bar.close()
            if tracker is not None and run_id is not None:
                self._flush(tracker, buffer)
                if status == "FINISHED":
                    self._finish_run(tracker)
                tracker.end_run(run_id, status)
            if world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        best_path = self.out / "best.pth"
        return TrainOutcome(
            out_dir=self.out,
            run_id=run_id,
            iterations=stop_at,
            iterations_run=max(0, (i + 1 if stop_at > start else start) - start),
            epochs=(i + 1) / per_epoch,
            best_value=None if best is None else best["value"],
            best_iteration=None if best is None else best["iteration"],
            best_checkpoint=best_path if best_path.is_file() else None,
            stopped_early=stopped_early,
            seconds=time.perf_counter() - t0,
            trainable_params=trainable,
            frozen_params=frozen,
            world_size=world,
        )

    # ------------------------------------------------------------------------------- validation
    def _validate(self, model, val_path, cache, done, best, history, tracker, coll):
        """Process 0 scores the validation manifest and shares the value; returns (best, improved)."""
        spec = self.spec
        value = torch.zeros(1, dtype=torch.float64)
        if self.rank == 0:
            model.eval()
            try:
                result = evaluate_cell(
                    CellSpec(
                        spec.method, dict(spec.settings), val_path, spec.data_root, str(self.device), "val"
                    ),
                    cache,
                    key=f"train-validation-{spec.sha256}",
                    method=model,
                )
            finally:
                for module in model.trainable_modules().values():
                    module.train()
            value[0] = result.summary["miou"]
        miou = float(coll.broadcast(value, 0)[0])
        epochs = done / self._per_epoch
        history.append({"iteration": done, "epoch": epochs, "val_miou": miou})
        improved = best is None or miou > best["value"]
        if improved:
            best = {"value": miou, "iteration": done}
            if self.rank == 0:
                get_trainable(spec.method).save(
                    model,
                    self.out / "best.pth",
                    spec.method,
                    dict(spec.settings),
                    {
                        "iteration": done,
                        "val_miou": miou,
                        "train_sha256": spec.sha256,
                        "mlflow_run_id": self.run_id,
                        **self._trained_path(),
                    },
                )
        if tracker is not None:
            tracker.client.log_metric(self.run_id, "val_miou", miou, step=done)
        if self.rank == 0:
            self.log(
                f"iteration {done} (epoch {epochs:.2f}): validation mIoU {100 * miou:.2f}"
                + (" (best)" if improved else "")
            )
        return best, improved

    def _trained_path(self) -> dict[str, Any]:
        """The K-shot path the weights were trained (and validated) with, for the checkpoint's record."""
        mode = self.spec.settings.get("kshot_mode")
        return {"kshot_mode": mode} if mode is not None and self.spec.shot > 1 else {}

    # ------------------------------------------------------------------------------- checkpoints
    def _save_state(self, model, optimizer, done, best, bad, history, coll) -> None:
        states = coll.gather_objects(rng_state())
        if self.rank != 0:
            return
        save_atomic(
            {
                "format": STATE_FORMAT,
                "spec_sha256": self.spec.sha256,
                "world_size": self.world,
                "global_iter": done,
                "modules": module_states(model.trainable_modules()),
                "optimizer": optimizer.state_dict(),
                "rng": states,
                "best": best,
                "bad": bad,  # epochs (val.every: authors|epoch) or validations without improvement
                "history": history,
                "mlflow_run_id": self.run_id,
            },
            self.state_path,
        )
        get_trainable(self.spec.method).save(
            model, self.out / "last.pth", self.spec.method, dict(self.spec.settings), {"iteration": done}
        )

    # ------------------------------------------------------------------------------------ MLflow
    def _tracker(self, trainable, frozen, per_epoch, stop_at, val_path: Path) -> Tracker:
        """The MLflow store, with ``self.run_id`` set RUNNING again (resume) or created. The run
        records the base weights (``fss.weights.<role>``: file hashes or random-init ids), the data
        root and the validation manifest's hash besides the settings."""
        spec = self.spec
        tracker = Tracker(self.tracking_uri)
        exp = tracker.experiment_id(spec.name)
        if self.run_id is not None:
            tracker.client.update_run(self.run_id, status="RUNNING")
            return tracker
        tags = {
            "fss.kind": "train",
            "fss.method": spec.method,
            "fss.dataset": spec.dataset,
            "fss.fold": str(spec.fold),
            "fss.shot": str(spec.shot),
            "fss.random_init": str(spec.random_init).lower(),
            "fss.tuned_on_test": str(spec.selects_on_test).lower(),
            "fss.selected_on": spec.val["kind"],
            "fss.world_size": str(self.world),
            "fss.train_sha256": spec.sha256,
            "fss.git_commit": git_commit(),
            "fss.versions": json.dumps(package_versions()),
            "fss.device": str(self.device),
            "fss.data_root": str(spec.data_root),
            "fss.val_manifest_sha256": load_manifest(val_path).sha256,
            "fss.code_sha256": code_hash(),
            **{f"fss.weights.{role}": v for role, v in base_weight_ids(spec).items()},
            **standard_tags(spec.source),
        }
        run = tracker.client.create_run(
            exp, run_name=f"train {spec.method} {spec.dataset} fold{spec.fold} {spec.shot}shot", tags=tags
        )
        self.run_id = run.info.run_id
        params = flat_params("", {k: v for k, v in spec.settings.items() if k != "seed"}) | flat_params(
            "train.", {k: v for k, v in spec.train.items()}
        )
        params |= flat_params("val.", spec.val) | {
            "method": spec.method,
            "dataset": spec.dataset,
            "data_root": str(spec.data_root),
            "fold": spec.fold,
            "shot": spec.shot,
            "init_seed": spec.settings.get("seed"),
            "trainable_params": trainable,
            "frozen_params": frozen,
            "iterations_per_epoch": per_epoch,
            "iterations": stop_at,
        }
        tracker.log_params(self.run_id, params)
        write_text_atomic(
            self.out / "config.json", json.dumps(spec.identity(), indent=2, sort_keys=True, default=str)
        )
        tracker.client.log_artifact(self.run_id, str(self.out / "config.json"))
        return tracker

    def _logged_until(self, tracker, run_id) -> int:
        """The last step whose loss is already in MLflow (a resumed run never logs a step twice)."""
        if tracker is None or run_id is None:
            return 0
        history = tracker.client.get_metric_history(run_id, "loss")
        return max((m.step for m in history), default=0)

    def _flush(self, tracker, buffer: list[tuple[str, float, int]]) -> None:
        if tracker is None or not buffer:
            buffer.clear()
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, s) for k, v, s in buffer]
        for j in range(0, len(metrics), 900):
            tracker.client.log_batch(self.run_id, metrics=metrics[j : j + 900], synchronous=True)
        buffer.clear()

    def _finish_run(self, tracker) -> None:
        best = self.out / "best.pth"
        if best.is_file():
            from fssam.hashing import file_sha256

            sha = file_sha256(best)
            meta = get_trainable(self.spec.method).read_meta(best)
            write_text_atomic(
                self.out / "best.pth.json",
                json.dumps(
                    {"sha256": sha, "mlflow_run_id": self.run_id, "tracking_uri": tracker.uri, **meta},
                    indent=2,
                    default=str,
                ),
            )
            tracker.client.set_tag(self.run_id, "fss.checkpoint_sha256", sha)
            tracker.client.log_artifact(self.run_id, str(best), "checkpoint")
            tracker.client.log_artifact(self.run_id, str(self.out / "best.pth.json"), "checkpoint")


def print_outcome(outcome: TrainOutcome, spec: TrainSpec, out: Any = sys.stdout) -> None:
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


def export_checkpoint(spec: TrainSpec, finetuned: Path, out: Path) -> Path:
    """A fine-tuned checkpoint with its base weights, in the layout of the method's
    :class:`~benchmark.methods.registry.Trainable` capability (``.layout`` names it: the authors'
    ``{'epoch', 'state_dict'}`` for FSSAM, Meta's SAM 2 layout for naive SAM 2)."""
    trainable = get_trainable(spec.method)
    model = build_method(spec.method, dict(spec.settings), torch.device("cpu"))
    try:
        trainable.export(model, Path(finetuned), Path(out), dict(spec.settings))
    except FssBenchError as e:  # "model.<setting>: ...": name the file too
        raise FssBenchError(f"{spec.source}: {e}") from None
    return out


def base_weight_ids(spec: TrainSpec) -> dict[str, str]:
    """Role -> SHA-256 of each base weight file training starts from, or its random-init id."""
    hashes = CheckpointHashes()
    sources = get_method(spec.method).weight_sources(dict(spec.settings))
    return {r: src if src.startswith("random-init:") else hashes.sha256(src) for r, src in sources.items()}
