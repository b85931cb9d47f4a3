"""Building episode manifests: the exact, hashed list of episodes every method of a study is scored on.

An episode is (query image, target class, K support images of that class, each different from the
query). :func:`build_manifest` draws the :class:`~benchmark.episodes.manifest.Manifest` of a
:class:`ManifestRequest` (prepared root, fold, shot, seed, count, kind, COCO class split, where
episodes are scored) with a registered protocol (:mod:`benchmark.episodes.registry`; the built-in
ones, ``fssam``, ``fssam-exact`` and ``hsnet``, are in :mod:`benchmark.episodes.protocols`: see the
README and ../shared/docs/protocols-and-tools.md section 1); :func:`manifest_file_name` names it in
a study's work folder. Same inputs give a byte-identical file on any machine.

Kinds: ``test`` episodes use the fold's novel classes on the val split (what papers report);
``val`` episodes (model selection) use the fold's base classes on images that hold no pixel of any
novel class of the fold (``val_rule: no-novel-pixels``, PFENet's training-list rule), so no val
query or support is ever a test query or support. They come from the val split (``val_source: val``)
or from a held-out slice of the train split (``train-holdout``, :func:`heldout_images`, which
training then skips). A base class with fewer than K+1 such images is left out of the manifest
(recorded in ``left_out``, with a one-line :class:`ValPoolWarning`); none left is an error.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

from benchmark.data import classes as C
from benchmark.data.lists import (
    HOLDOUT_SALT,
    ImageRecord,
    fold_pool,
    heldout_images,
    list_line,
    without_classes,
)
from benchmark.data.prepared import PreparedDataset, fold_list_dir
from benchmark.episodes.manifest import Evaluation, Holdout, Manifest, Source
from benchmark.episodes.registry import KINDS, DrawInput, Protocol
from benchmark.errors import FssBenchError
from benchmark.io_utils import canonical_json

VAL_RULE = "no-novel-pixels"
"""The rule a ``kind: val`` manifest's images obey, recorded in it as ``val_rule`` (manifests drawn
before the rule have no such field): no pixel of any novel class of the fold."""
VAL_SOURCES = ("val", "train-holdout")
"""Where ``kind: val`` episodes come from: the val split, or the held-out slice of the train split."""
HOLDOUT_FRACTION = 0.1
"""The default share of the train split held out for ``val_source: train-holdout``."""


class ValPoolWarning(UserWarning):
    """A base class had too few images without a novel-class pixel and is left out of a val manifest."""


def validation_records(
    ds: PreparedDataset, novel: list[int], val_source: str = "val", holdout_fraction: float | None = None
) -> tuple[str, list[ImageRecord], list[ImageRecord]]:
    """The images ``kind: val`` episodes of a fold may use: (split, the split's records, the usable ones).

    Usable: no pixel of any class of ``novel`` (:func:`without_classes`) and, for ``train-holdout``,
    in the held-out slice of the train split (:func:`heldout_images` with ``holdout_fraction``,
    default :data:`HOLDOUT_FRACTION`).
    """
    if val_source not in VAL_SOURCES:
        raise FssBenchError(f"--val-source must be one of {VAL_SOURCES}, got {val_source!r}")
    if val_source == "val":
        if holdout_fraction is not None:
            raise FssBenchError("--holdout-fraction applies to --val-source train-holdout only")
        records = ds.records("val")
        return "val", records, without_classes(records, novel)
    fraction = HOLDOUT_FRACTION if holdout_fraction is None else holdout_fraction
    records = ds.records("train")
    held = heldout_images(records, fraction)
    return "train", records, [r for r in without_classes(records, novel) if r.id in held]


def usable_classes(
    records: list[ImageRecord], classes: list[int], shot: int
) -> tuple[list[int], dict[int, int]]:
    """Split ``classes`` into those with at least ``shot + 1`` images of ``records`` where the class
    counts (>= MIN_CLASS_PIXELS px; a query and ``shot`` distinct supports) and the rest, with their
    image counts: (kept classes ascending, {left-out class: count})."""
    pool = fold_pool(records, classes, filter_intersection=False)
    kept = [c for c in pool.per_class if len(pool.per_class[c]) >= shot + 1]
    left_out = {c: len(v) for c, v in pool.per_class.items() if len(v) < shot + 1}
    return kept, left_out


def holdout_remedy(split: str, holdout_fraction: float | None) -> str:
    """What to do when a val pool is too small: use the train split's held-out slice, or a larger one."""
    if split == "val":
        return (
            "draw val episodes from a held-out slice of the train split instead (--val-source train-holdout)"
        )
    fraction = HOLDOUT_FRACTION if holdout_fraction is None else holdout_fraction
    return f"hold out more of the train split (--holdout-fraction, now {fraction})"


def left_out_note(
    dataset: str, fold: int, shot: int, left_out: dict[int, int], split: str, holdout_fraction: float | None
) -> str:
    """One line naming the base classes a val manifest leaves out, their image counts and the remedy."""
    names = C.class_names(dataset)
    listed = ", ".join(f"{c} ({names[c - 1]}) {n} image(s)" for c, n in sorted(left_out.items()))
    return (
        f"{dataset} fold {fold} val episodes: base classes left out, with fewer {split}-split images "
        f"without a novel-class pixel than the {shot + 1} a {shot}-shot episode needs: {listed}; "
        f"{holdout_remedy(split, holdout_fraction)}"
    )


SEED_MAX = 2**32 - 1  # numpy's legacy generator (HSNet, BAM's seeds) takes 0..2**32 - 1


def check_seed(seed: int, where: str) -> None:
    """Every protocol's generator takes a seed in 0..``SEED_MAX``: a clear error otherwise."""
    if not 0 <= seed <= SEED_MAX:
        raise FssBenchError(f"{where}: seed {seed} is out of range; seeds are integers in 0..{SEED_MAX}")


@dataclass(frozen=True)
class ManifestRequest:
    """Which episodes to draw: from the prepared root ``data_root`` (``dataset``, when given, must be
    its dataset), the cell group (``fold``, ``shot``), ``seed``/``episodes`` (None: the protocol's
    defaults), the ``kind`` (test | val) and COCO class split; ``resolution``/``eval_size``: where
    episodes are scored (None: the protocol's way), recorded in the manifest (so in the cell key);
    ``val_source``/``holdout_fraction``: where ``kind val`` episodes come from
    (:func:`validation_records`)."""

    data_root: Path
    fold: int
    shot: int
    seed: int | None = None
    episodes: int | None = None
    kind: str = "test"
    coco_split: str = "interleaved"
    dataset: str | None = None
    resolution: str | None = None
    eval_size: int | None = None
    val_source: str = "val"
    holdout_fraction: float | None = None


def build_manifest(protocol: Protocol, request: ManifestRequest) -> Manifest:
    """Draw the manifest of ``request`` with ``protocol`` (its options included), hash included.

    Base classes of a ``kind val`` request with too few usable images are left out with a
    :class:`ValPoolWarning`."""
    r = request
    ds = PreparedDataset(r.data_root)
    seed = protocol.default_seed if r.seed is None else int(r.seed)
    n = protocol.default_episodes if r.episodes is None else int(r.episodes)
    _check_request(r, ds, seed, n)
    protocol.check_request(r.kind, ds.dataset)
    novel = C.novel_classes(ds.dataset, r.fold, r.coco_split)
    pools = _pools(r, ds, novel)
    evaluation = protocol.evaluation(ds.dataset, r.resolution, r.eval_size)
    drawn = protocol.draw(
        DrawInput(
            ds,
            r.fold,
            r.shot,
            seed,
            n,
            r.kind,
            r.coco_split,
            pools.classes,
            pools.records,
            pools.pool,
            pools.where,
        )
    )
    by_id = {rec.id: rec for rec in pools.records}
    used = sorted({e.query for e in drawn.episodes} | {s for e in drawn.episodes for s in e.supports})
    holdout = None
    if r.kind == "val" and pools.split == "train":
        holdout = Holdout(
            HOLDOUT_FRACTION if r.holdout_fraction is None else r.holdout_fraction, HOLDOUT_SALT
        )
    records_sha256 = hashlib.sha256(canonical_json([rec.to_json() for rec in pools.records]).encode("ascii"))
    manifest = Manifest(
        kind=r.kind,
        dataset=ds.dataset,
        class_split=r.coco_split if ds.dataset == "coco" else None,
        fold=r.fold,
        shot=r.shot,
        protocol=protocol.name,
        seed=seed,
        num_episodes=n,
        classes=tuple(pools.classes),
        # identity of the data: the canonical records of the split (paths and class pixel counts)
        source=Source(pools.split, records_sha256.hexdigest(), holdout),
        images={i: tuple(list_line(by_id[i]).split(" ")) for i in used},
        episodes=tuple(drawn.episodes),
        # the rule and the data a val draw obeyed (test manifests keep the hash they had)
        val_rule=VAL_RULE if r.kind == "val" else None,
        left_out={str(c): k for c, k in sorted(pools.left_out.items())} if r.kind == "val" else None,
        draw=drawn.params,
        # manifests scored the default way keep the hash they had
        scoring=evaluation if evaluation != Evaluation() else None,
    )
    return manifest.sealed()


def _check_request(r: ManifestRequest, ds: PreparedDataset, seed: int, n: int) -> None:
    """The checks every protocol's request passes, with the command-line flag to blame."""
    if r.dataset is not None and r.dataset != ds.dataset:
        raise FssBenchError(f"--dataset {r.dataset} but {ds.root}/dataset.json says {ds.dataset!r}")
    if r.kind not in KINDS:
        raise FssBenchError(f"unknown kind {r.kind!r}; expected one of {KINDS}")
    if ds.dataset != "coco" and r.coco_split != "interleaved":
        raise FssBenchError("--split applies to COCO only")
    if not 0 <= r.fold < C.NUM_FOLDS:
        raise FssBenchError(f"--fold must be in 0..{C.NUM_FOLDS - 1}, got {r.fold}")
    check_seed(seed, "--seed")
    if r.shot < 1:
        raise FssBenchError(f"--shot must be at least 1, got {r.shot}")
    if n < 1:
        raise FssBenchError(f"--episodes must be at least 1, got {n}")
    if r.kind == "test" and (r.val_source != "val" or r.holdout_fraction is not None):
        raise FssBenchError("--val-source and --holdout-fraction apply to --kind val only")


@dataclass(frozen=True)
class _Pools:
    """Where a request's episodes come from: the split, its records, the usable ones, the classes
    drawn for, the base classes left out (val) and the list named in errors."""

    split: str
    records: list[ImageRecord]
    pool: list[ImageRecord]
    classes: list[int]
    left_out: dict[int, int]
    where: str


def _pools(r: ManifestRequest, ds: PreparedDataset, novel: list[int]) -> _Pools:
    """Test: the fold's novel classes on the val split. Val: its base classes with enough images
    without a novel-class pixel (:func:`validation_records`, :func:`usable_classes`)."""
    if r.kind == "test":
        records = ds.records("val")
        where = f"{ds.root / fold_list_dir(ds.dataset, r.coco_split) / 'val' / f'sub_class_file_list_{r.fold}.txt'}"
        return _Pools("val", records, records, novel, {}, where)
    split, records, pool = validation_records(ds, novel, r.val_source, r.holdout_fraction)
    where = f"{ds.records_path(split)} (base classes of fold {r.fold}, no novel-class pixel)"
    classes, left_out = usable_classes(pool, C.base_classes(ds.dataset, r.fold, r.coco_split), r.shot)
    if not classes:
        raise FssBenchError(
            f"{where}: no base class has the {r.shot + 1} images a {r.shot}-shot episode needs; "
            + holdout_remedy(split, r.holdout_fraction)
        )
    if left_out:
        note = left_out_note(ds.dataset, r.fold, r.shot, left_out, split, r.holdout_fraction)
        warnings.warn(ValPoolWarning(note), stacklevel=3)
    return _Pools(split, records, pool, classes, left_out, where)


def manifest_file_name(protocol: Protocol, manifest: Manifest) -> str:
    """A study's manifest file name (without ``.json``): the cell group and what else sets its
    episodes (the kind, a held-out source, the protocol's options, a resized scoring)."""
    split = f"-{manifest.class_split}" if manifest.dataset == "coco" else ""
    tail = "" if manifest.kind == "test" else f"-{manifest.kind}"
    if manifest.source.holdout is not None:  # drawn from the train split's held-out slice
        tail += f"-holdout{manifest.source.holdout.fraction}"
    tail += protocol.file_tail()
    if manifest.evaluation.resolution == "resized":
        tail += f"-resized{manifest.evaluation.size}"
    return (
        f"{manifest.dataset}{split}-fold{manifest.fold}-{manifest.shot}shot-{protocol.name}"
        f"-seed{manifest.seed}-n{manifest.num_episodes}{tail}"
    )
