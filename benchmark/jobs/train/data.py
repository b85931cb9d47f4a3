"""Training episodes: the fold's base-class train list, drawn and augmented as pure functions of
(seed, epoch, position), so any iteration of any epoch can be rebuilt exactly (resume, DDP ranks).

* The list: the train split's images whose labelled classes are all base classes of the fold and
  that have at least one base class of >= 2*32*32 px (PFENet's ``filter_intersection``), less the
  held-out slice (:func:`benchmark.data.lists.heldout_images`) when validation draws from it
  (``val.source: train-holdout``).
* An epoch visits every image of the list once as the query, in the order of a permutation drawn
  from ``(seed, epoch)`` (the authors reseed with ``321 + epoch`` every epoch).
* Episode ``i`` of an epoch: one base class counted in the query is drawn uniformly, then ``shot``
  distinct supports (each != query) from that class's list; every image is augmented with
  :func:`fssam.augment.augment` using a generator seeded with ``(seed, epoch, i)``.
* Global batch ``g`` holds positions ``[g*B*W, (g+1)*B*W)`` (``B`` per process, ``W`` processes);
  rank ``r`` takes ``B`` consecutive ones, so the ranks together see exactly what one process with
  a batch of ``B*W`` would.
* :func:`train_loader` decodes and augments the batches in background worker processes (a
  ``torch.utils.data.DataLoader``); since every sample is a pure function of its position, the
  batches are the same with any number of workers.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.data import classes as C
from benchmark.data.lists import FoldPool, ImageRecord, fold_pool, heldout_images
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes.manifest import Episode
from benchmark.errors import FssBenchError
from benchmark.evaluation.loader import ImageStore, episode_target
from fssam.augment import AugmentConfig, augment


@dataclass(frozen=True)
class TrainSet:
    """The train list of one fold, with the episode class choices of every image."""

    dataset: str
    fold: int
    classes: list[int]
    pool: FoldPool

    def __len__(self) -> int:
        return len(self.pool.images)

    @functools.cached_property
    def by_id(self) -> dict[str, ImageRecord]:
        """Every image of the list by id (built once, not per sample)."""
        return {r.id: r for r in self.pool.images}


def train_set(
    root: PreparedDataset,
    fold: int,
    shot: int,
    coco_split: str = "interleaved",
    holdout_fraction: float | None = None,
) -> TrainSet:
    """The fold's base-class training list; a fold with no usable image (or a class with fewer
    than ``shot + 1`` images) is an error naming the list. ``holdout_fraction``: skip the train
    split's held-out slice of that fraction (validation draws from it: ``val.source: train-holdout``)."""
    classes = C.base_classes(root.dataset, fold, coco_split)
    try:
        records = root.records("train")
    except (OSError, ValueError, KeyError) as e:
        raise FssBenchError(
            f"{root.root}: no train list ({e}); prepare the data root with `fssbench data prepare`"
        ) from None
    where = f"{root.records_path('train')} (base classes of fold {fold})"
    if holdout_fraction is not None:
        held = heldout_images(records, holdout_fraction)
        records = [r for r in records if r.id not in held]
        where = (
            f"{root.records_path('train')} (base classes of fold {fold}, held-out {holdout_fraction} skipped)"
        )
    pool = fold_pool(records, classes, filter_intersection=True)
    if not pool.images:
        raise FssBenchError(f"{where}: no training image holds only base classes; the fold cannot be trained")
    for c in classes:
        if pool.per_class[c] and len(pool.per_class[c]) < shot + 1:
            raise FssBenchError(
                f"{where}: class {c} has {len(pool.per_class[c])} training image(s); a {shot}-shot episode "
                f"needs {shot + 1}; train with fewer shots or more data"
            )
    return TrainSet(root.dataset, fold, classes, pool)


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The query order of an epoch: a permutation of ``range(n)`` from ``(seed, epoch)``, drawn once
    per epoch (every sample of the epoch indexes it). Read-only."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, position, 1])


def draw_episode(ts: TrainSet, seed: int, epoch: int, position: int, shot: int) -> Episode:
    """Episode ``position`` of ``epoch`` (a pure function of its arguments)."""
    order = epoch_order(len(ts), seed, epoch)
    query = ts.pool.images[int(order[position % len(ts)])]
    rng = sample_rng(seed, epoch, position)
    classes = [c for c in query.counted(ts.classes) if len(ts.pool.per_class[c]) > shot]
    if not classes:
        raise FssBenchError(f"training image {query.id}: no base class with {shot + 1} images")
    cls = classes[int(rng.integers(len(classes)))]
    pool = ts.pool.per_class[cls]
    chosen: list[int] = []
    while len(chosen) < shot:
        idx = int(rng.integers(len(pool)))
        if pool[idx].id != query.id and idx not in chosen:
            chosen.append(idx)
    return Episode(id=position, query=query.id, cls=cls, supports=tuple(pool[i].id for i in chosen))


def load_train_episode(
    store: ImageStore, ts: TrainSet, ep: Episode, seed: int, epoch: int, aug: AugmentConfig
) -> dict[str, torch.Tensor]:
    """One augmented training episode: ``query`` (3,S,S), ``supports`` (K,3,S,S) float RGB 0..255,
    ``query_mask`` (S,S) and ``support_masks`` (K,S,S) uint8 in {0, 1, 255}."""
    rng = sample_rng(seed, epoch, ep.id)
    rng = np.random.default_rng(rng.integers(2**63))  # past the episode draw: the augmentation stream

    def one(image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        rec = ts.by_id[image_id]
        img = torch.from_numpy(np.array(store.image(rec.image), dtype=np.uint8)).permute(2, 0, 1).float()
        lab = torch.from_numpy(np.array(store.label(rec.label), dtype=np.uint8))
        img, lab = augment(img, lab, ep.cls, aug, rng)
        return img, episode_target(lab, ep.cls)

    q_img, q_mask = one(ep.query)
    shots = [one(s) for s in ep.supports]
    return {
        "query": q_img,
        "query_mask": q_mask,
        "supports": torch.stack([s[0] for s in shots]),
        "support_masks": torch.stack([s[1] for s in shots]),
    }


def batch_positions(global_batch: int, batch: int, world: int, rank: int) -> list[int]:
    """Epoch positions of ``rank``'s share of global batch ``global_batch``."""
    start = global_batch * batch * world + rank * batch
    return list(range(start, start + batch))


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


class TrainBatches(torch.utils.data.Dataset):
    """Item ``i``: this rank's collated batch of global iteration ``i`` (0-based, over all epochs).

    ``query`` (B,3,S,S) and ``supports`` (B,K,3,S,S) float RGB 0..255, ``query_mask`` (B,S,S) and
    ``support_masks`` (B,K,S,S) uint8 in {0, 1, 255}; ``B`` is the per-process batch.
    """

    def __init__(
        self,
        store: ImageStore,
        ts: TrainSet,
        seed: int,
        shot: int,
        aug: AugmentConfig,
        per_epoch: int,
        batch: int,
        world: int = 1,
        rank: int = 0,
    ):
        self.store, self.ts, self.seed, self.shot, self.aug = store, ts, seed, shot, aug
        self.per_epoch, self.batch, self.world, self.rank = per_epoch, batch, world, rank

    def __getitem__(self, iteration: int) -> dict[str, torch.Tensor]:
        epoch, g = divmod(int(iteration), self.per_epoch)
        # one torch thread, as in a DataLoader worker: a multi-threaded reduction (the mean colour
        # of the padding) sums in another order, so the samples would depend on the thread count
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return collate(
                [
                    load_train_episode(
                        self.store,
                        self.ts,
                        draw_episode(self.ts, self.seed, epoch, p, self.shot),
                        self.seed,
                        epoch,
                        self.aug,
                    )
                    for p in batch_positions(g, self.batch, self.world, self.rank)
                ]
            )
        finally:
            torch.set_num_threads(threads)


def train_loader(
    batches: TrainBatches, start: int, stop: int, workers: int, pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    """The batches of iterations ``start .. stop-1`` in order, built by ``workers`` background
    processes (0: in this process). The loader draws its worker seed from a private generator, so
    the process's global torch RNG (dropout, the resumable state) is the same for any ``workers``."""
    if not isinstance(workers, int) or workers < 0:
        raise FssBenchError(f"train.workers: expected an integer >= 0, got {workers!r}")
    return torch.utils.data.DataLoader(
        batches,
        batch_size=None,  # an item is already a batch
        sampler=range(start, stop),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
        generator=torch.Generator().manual_seed(batches.seed),
    )


def loader_workers(requested: int) -> int:
    """``train.workers`` capped at the CPUs this process may use: more loader processes than CPUs
    only contend (torch warns about it), and the batches are the same for any number of workers."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(requested, cpus)
