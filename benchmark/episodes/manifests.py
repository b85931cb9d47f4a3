"""Episode manifests: the exact, hashed list of episodes every method of a study is scored on.

An episode is (query image, target class, K support images of that class, each different from the
query). A manifest is the ordered episode list for (dataset, class split, fold, shot, protocol,
seed, count, kind), saved as canonical JSON whose ``sha256`` field is the SHA-256 of the canonical
serialisation of everything else. Same inputs give a byte-identical file on any machine: the
sampler only uses ``random.Random(seed).random()``, whose sequence Python guarantees across versions
and platforms.

Protocols (see the README and ../shared/docs/protocols-and-tools.md section 1):

* ``fssam`` (PFENet family, what FSSAM reports): the fold's ordered query list is cycled
  (episode i uses query i mod len); the target class is drawn uniformly among the fold's classes
  PRESENT in the query (any pixel, as PFENet/BAM/FSSAM ``__getitem__`` do); the K supports are
  distinct images drawn uniformly from that class's list (class >= 2*32*32 px), each != query.
  Defaults: 1000 episodes, seed 321.
* ``hsnet`` (HSNet family: HSNet, DCAMA, VRP-SAM, Matcher, GF-SAM, SANSA, FS-SAM2): HSNet's test
  loop exactly (benchmark.episodes.hsnet): its published lists, numpy's legacy generator; PASCAL walks
  the (image, class) pairs in file order, COCO draws the class, then the query; scored resized to
  400 px (``eval``). Defaults: 1000 episodes, seed 0.
* ``fssam-exact``: the episodes the FSSAM release's test loop draws, reproduced exactly from its
  seeding, its DataLoader workers' streams and its lists (benchmark.episodes.fssam_exact); ``loader_workers``
  (default 32, the authors') and ``lists`` (``own``: the root's PFENet-format lists; ``authors``: the
  release's PASCAL lists, matched to the root by image id) are part of the draw. Test episodes only.

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
import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from benchmark.errors import FssBenchError
from benchmark.io_utils import canonical_json, write_text_atomic

FORMAT = "fssbench-episodes/1"
PROTOCOLS: dict[str, dict[str, int]] = {
    "fssam": {"seed": 321, "episodes": 1000},
    "hsnet": {"seed": 0, "episodes": 1000},
    "fssam-exact": {"seed": 321, "episodes": 1000},
}
RESOLUTIONS = ("original", "resized")
"""Where episodes are scored: at the label's own size (PFENet family) or on a square the image and
label are resized to (HSNet: 400 px, label with nearest)."""
EXACT_LISTS = ("own", "authors")
"""Where ``fssam-exact`` reads its PFENet-format lists: the prepared root's, or the release's (PASCAL)."""
KINDS = ("test", "val")
VAL_RULE = "no-novel-pixels"
"""The rule a ``kind: val`` manifest's images obey, recorded in it as ``val_rule`` (manifests drawn
before the rule have no such field): no pixel of any novel class of the fold."""
VAL_SOURCES = ("val", "train-holdout")
"""Where ``kind: val`` episodes come from: the val split, or the held-out slice of the train split."""
HOLDOUT_FRACTION = 0.1
"""The default share of the train split held out for ``val_source: train-holdout``."""


class ValPoolWarning(UserWarning):
    """A base class had too few images without a novel-class pixel and is left out of a val manifest."""


@dataclass(frozen=True)
class Episode:
    id: int
    query: str
    cls: int
    supports: tuple[str, ...]


class StableRng:
    """Uniform integer draws that are identical on every machine and Python version.

    Only ``random.Random.random()`` is used: Python guarantees its sequence for a given seed
    (``randrange``/``choice`` carry no such guarantee). ``below(n)`` = floor(u * n) for u in [0, 1).
    """

    def __init__(self, seed: int):
        self._rng = random.Random(int(seed))

    def below(self, n: int) -> int:
        if n <= 0:
            raise ValueError("n must be positive")
        return min(int(self._rng.random() * n), n - 1)


def draw_supports(rng: StableRng, pool: list[ImageRecord], query_id: str, shot: int) -> tuple[str, ...]:
    """K distinct images of ``pool``, none equal to the query, by rejection (as PFENet does)."""
    chosen: list[int] = []
    for _ in range(shot):
        idx = rng.below(len(pool))
        while pool[idx].id == query_id or idx in chosen:
            idx = rng.below(len(pool))
        chosen.append(idx)
    return tuple(pool[i].id for i in chosen)


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


def sample_episodes(
    records: list[ImageRecord], classes: list[int], shot: int, protocol: str, seed: int, n: int, where: str
) -> list[Episode]:
    """Sample ``n`` episodes of ``classes`` from a split's ``records`` (pure function).

    ``where`` names the list the pools come from, for error messages. Raises FssBenchError when a
    class has fewer than K+1 images (the query plus K distinct supports) or the pool is empty.
    """
    if protocol != "fssam":
        raise FssBenchError(
            f"sample_episodes draws protocol fssam; {protocol!r} has its own draw (build_manifest)"
        )
    if shot < 1:
        raise FssBenchError(f"--shot must be >= 1, got {shot}")
    if n < 1:
        raise FssBenchError(f"--episodes must be >= 1, got {n}")
    pool = fold_pool(records, classes, filter_intersection=False)
    if not pool.images:
        raise FssBenchError(f"{where}: no image contains any of the classes {classes}")
    for c in classes:
        if len(pool.per_class[c]) < shot + 1:
            raise FssBenchError(
                f"{where}: class {c} has {len(pool.per_class[c])} image(s); a {shot}-shot episode needs at least "
                f"{shot + 1} (the query and {shot} distinct supports); use fewer shots or more data"
            )
    rng = StableRng(seed)
    episodes = []
    for i in range(n):
        q = pool.images[i % len(pool.images)]
        present = q.present(classes)
        cls = present[rng.below(len(present))]
        supports = draw_supports(rng, pool.per_class[cls], q.id, shot)
        episodes.append(Episode(id=i, query=q.id, cls=cls, supports=supports))
    return episodes


@dataclass(frozen=True)
class Evaluation:
    """How a manifest's episodes are scored: ``resolution`` original | resized (to ``size`` x
    ``size``, label with nearest), ``ignore``: 255 pixels excluded (PASCAL; HSNet's COCO has none, so
    there 255 counts as background)."""

    resolution: str = "original"
    size: int | None = None
    ignore: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "size": self.size, "ignore_255": self.ignore}


def default_evaluation(
    protocol: str, dataset: str, resolution: str | None = None, size: int | None = None
) -> Evaluation:
    """A protocol's scoring: PFENet family (fssam, fssam-exact) at the original size with 255 ignored;
    hsnet resized to 400 px, 255 ignored on PASCAL only. ``resolution``/``size`` override it."""
    hsnet = protocol == "hsnet"
    resolution = resolution or ("resized" if hsnet else "original")
    if resolution not in RESOLUTIONS:
        raise FssBenchError(f"evaluation resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    ignore = not (hsnet and dataset == "coco")
    if resolution == "original":
        if size is not None:
            raise FssBenchError("an evaluation size applies to resolution resized only")
        return Evaluation("original", None, ignore)
    size = 400 if size is None else size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise FssBenchError(f"evaluation size must be a positive integer, got {size!r}")
    return Evaluation("resized", size, ignore)


def evaluation_of(manifest: dict[str, Any]) -> Evaluation:
    """The scoring a manifest records (manifests without ``eval``: original size, 255 ignored)."""
    ev = manifest.get("eval")
    if not ev:
        return Evaluation()
    return Evaluation(ev["resolution"], ev["size"], ev["ignore_255"])


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """SHA-256 of the canonical serialisation of a manifest without its ``sha256`` field."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


SEED_MAX = 2**32 - 1  # numpy's legacy generator (HSNet, BAM's seeds) takes 0..2**32 - 1


def check_seed(seed: int, where: str) -> None:
    """Every protocol's generator takes a seed in 0..``SEED_MAX``: a clear error otherwise."""
    if not 0 <= seed <= SEED_MAX:
        raise FssBenchError(f"{where}: seed {seed} is out of range; seeds are integers in 0..{SEED_MAX}")


def build_manifest(
    data_root: Path,
    fold: int,
    shot: int,
    protocol: str = "fssam",
    seed: int | None = None,
    episodes: int | None = None,
    kind: str = "test",
    coco_split: str = "interleaved",
    dataset: str | None = None,
    loader_workers: int = 32,
    lists: str = "own",
    resolution: str | None = None,
    eval_size: int | None = None,
    val_source: str = "val",
    holdout_fraction: float | None = None,
) -> dict[str, Any]:
    """Build a manifest dict (with its ``sha256``) from a prepared root.

    ``dataset``, when given, must match the prepared root's dataset. ``seed``/``episodes`` default
    to the protocol's values. ``loader_workers`` and ``lists`` apply to ``fssam-exact`` only.
    ``resolution``/``eval_size``: where episodes are scored (:func:`default_evaluation`), recorded
    in the manifest (so in the cell key). ``val_source``/``holdout_fraction`` apply to ``kind val``
    only (:func:`validation_records`); base classes with too few usable images are left out with a
    :class:`ValPoolWarning`.
    """
    ds = PreparedDataset(data_root)
    if dataset is not None and dataset != ds.dataset:
        raise FssBenchError(f"--dataset {dataset} but {ds.root}/dataset.json says {ds.dataset!r}")
    if kind not in KINDS:
        raise FssBenchError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if ds.dataset != "coco" and coco_split != "interleaved":
        raise FssBenchError("--split applies to COCO only")
    if not 0 <= fold < C.NUM_FOLDS:
        raise FssBenchError(f"--fold must be in 0..{C.NUM_FOLDS - 1}, got {fold}")
    if protocol not in PROTOCOLS:
        raise FssBenchError(f"unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    seed = PROTOCOLS[protocol]["seed"] if seed is None else int(seed)
    n = PROTOCOLS[protocol]["episodes"] if episodes is None else int(episodes)
    check_seed(seed, "--seed")
    if shot < 1:
        raise FssBenchError(f"--shot must be at least 1, got {shot}")
    if n < 1:
        raise FssBenchError(f"--episodes must be at least 1, got {n}")
    novel = C.novel_classes(ds.dataset, fold, coco_split)
    left_out: dict[int, int] = {}
    if kind == "test":
        if val_source != "val" or holdout_fraction is not None:
            raise FssBenchError("--val-source and --holdout-fraction apply to --kind val only")
        classes, split = novel, "val"
        records = pool = ds.records("val")
        where = (
            f"{ds.root / fold_list_dir(ds.dataset, coco_split) / 'val' / f'sub_class_file_list_{fold}.txt'}"
        )
    else:
        split, records, pool = validation_records(ds, novel, val_source, holdout_fraction)
        where = f"{ds.records_path(split)} (base classes of fold {fold}, no novel-class pixel)"
        if protocol == "fssam-exact":  # refused below, before any note about classes
            classes = C.base_classes(ds.dataset, fold, coco_split)
        else:
            classes, left_out = usable_classes(pool, C.base_classes(ds.dataset, fold, coco_split), shot)
            if not classes:
                raise FssBenchError(
                    f"{where}: no base class has the {shot + 1} images a {shot}-shot episode needs; "
                    + holdout_remedy(split, holdout_fraction)
                )
            if left_out:
                note = left_out_note(ds.dataset, fold, shot, left_out, split, holdout_fraction)
                warnings.warn(ValPoolWarning(note), stacklevel=2)
    evaluation = default_evaluation(protocol, ds.dataset, resolution, eval_size)
    by_id = {r.id: r for r in records}
    draw = None
    if protocol == "fssam-exact":
        eps, draw = _exact_episodes(
            ds, fold, shot, seed, n, kind, coco_split, classes, records, loader_workers, lists
        )
    elif protocol == "hsnet":
        eps, draw = _hsnet_episodes(ds, fold, shot, seed, n, kind, coco_split, classes, pool)
    else:
        eps = sample_episodes(pool, classes, shot, protocol, seed, n, where)
    used = sorted({e.query for e in eps} | {s for e in eps for s in e.supports})
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        "dataset": ds.dataset,
        "class_split": coco_split if ds.dataset == "coco" else None,
        "fold": fold,
        "shot": shot,
        "protocol": protocol,
        "seed": seed,
        "num_episodes": n,
        "classes": classes,
        "source": {
            "split": split,
            # identity of the data: the canonical records of the split (paths and class pixel counts)
            "records_sha256": hashlib.sha256(
                canonical_json([r.to_json() for r in records]).encode("ascii")
            ).hexdigest(),
        },
        "images": {i: list_line(by_id[i]).split(" ") for i in used},
        "episodes": [
            {"id": e.id, "query": e.query, "class": e.cls, "supports": list(e.supports)} for e in eps
        ],
    }
    if kind == "val":  # the rule and the data the draw obeyed (test manifests keep the hash they had)
        manifest["val_rule"] = VAL_RULE
        manifest["left_out"] = {str(c): k for c, k in sorted(left_out.items())}
        if split == "train":
            fraction = HOLDOUT_FRACTION if holdout_fraction is None else holdout_fraction
            manifest["source"]["holdout"] = {"fraction": fraction, "salt": HOLDOUT_SALT}
    if draw is not None:  # the draw's parameters, and where each episode sits in the authors' loop
        manifest["draw"] = draw["params"]
        for row, (epoch, index) in zip(manifest["episodes"], draw.get("positions", []), strict=False):
            row["epoch"], row["index"] = epoch, index
    if evaluation != Evaluation():  # manifests scored the default way keep the hash they had
        manifest["eval"] = evaluation.to_json()
    manifest["sha256"] = manifest_sha256(manifest)
    return manifest


def _exact_episodes(
    ds: PreparedDataset,
    fold: int,
    shot: int,
    seed: int,
    n: int,
    kind: str,
    coco_split: str,
    classes: list[int],
    records: list[ImageRecord],
    workers: int,
    lists: str,
) -> tuple[list[Episode], dict[str, Any]]:
    """``fssam-exact`` episodes (benchmark.episodes.fssam_exact) with the list pairs matched to the root's
    images by image id (the file name's stem), and the draw's parameters."""
    from benchmark.episodes.fssam_exact import AUTHORS_LISTS, authors_draw, read_pfenet_lists

    if kind != "test":
        raise FssBenchError("protocol fssam-exact reproduces the authors' test episodes: use kind test")
    if lists not in EXACT_LISTS:
        raise FssBenchError(f"--lists must be one of {EXACT_LISTS}, got {lists!r}")
    if lists == "authors":
        if ds.dataset != "pascal":
            raise FssBenchError(
                "--lists authors: the FSSAM release's lists shipped here are PASCAL's; use --lists own"
            )
        folder = AUTHORS_LISTS / "pascal" / "val"
    else:
        folder = ds.root / fold_list_dir(ds.dataset, coco_split) / "val"
    pl = read_pfenet_lists(folder, fold)
    by_stem = {Path(r.image).stem: r for r in records}

    def record(pair: tuple[str, str]) -> ImageRecord:
        r = by_stem.get(Path(pair[0]).stem)
        if r is None:
            raise FssBenchError(
                f"{pl.where}: {pair[0]} is not an image of the val split of {ds.root} (matched by image id "
                f"{Path(pair[0]).stem!r}); --lists authors needs the real VOC2012 val images"
            )
        return r

    for pair in pl.data_list:
        record(pair)
    drawn = authors_draw(pl, lambda q: record(q).present(classes), shot, n, seed, workers)
    eps = [Episode(d.id, record(d.query).id, d.cls, tuple(record(s).id for s in d.supports)) for d in drawn]
    params = {"seed": seed, "loader_workers": workers, "lists": lists, "lists_sha256": pl.sha256}
    return eps, {"params": params, "positions": [(d.epoch, d.index) for d in drawn]}


def _hsnet_episodes(
    ds: PreparedDataset,
    fold: int,
    shot: int,
    seed: int,
    n: int,
    kind: str,
    coco_split: str,
    classes: list[int],
    records: list[ImageRecord],
) -> tuple[list[Episode], dict[str, Any]]:
    """``hsnet`` episodes (benchmark.episodes.hsnet): HSNet's published test lists on a root that
    holds at least half of their images (the real dataset: then every one must exist), lists built by
    the documented rule otherwise (the synthetic data, whose VOC-like ids rarely match), and for
    ``kind val``, whose base classes HSNet publishes no lists for."""
    from benchmark.episodes.hsnet import derived_lists, hsnet_draw, read_published

    by_stem = {Path(r.image).stem: r for r in records}
    source = "derived"
    if kind == "test" and coco_split == "interleaved":
        classwise, pairs, sha, path = read_published(ds.dataset, fold)
        names = list(dict.fromkeys(i for v in classwise.values() for i in v))
        missing = [i for i in names if i not in by_stem]
        if 2 * len(missing) <= len(names):  # the real dataset (half or more there): every image must be
            if missing:
                raise FssBenchError(
                    f"{path}: image {missing[0]} is not in the val split of {ds.root} ({len(missing)} of "
                    f"{len(names)} missing); prepare the complete dataset"
                )
            if sorted(classwise) != sorted(classes):
                raise FssBenchError(f"{path}: classes {sorted(classwise)} are not fold {fold}'s {classes}")
            source, where = "published", path
    if source == "derived":
        classwise, pairs, sha = derived_lists(ds.dataset, records, classes)
        where = f"{ds.root} (HSNet-format lists built from the val records, fold {fold})"
    drawn = hsnet_draw(ds.dataset, classwise, pairs, shot, n, seed, where)
    eps = [
        Episode(i, by_stem[q].id, c, tuple(by_stem[x].id for x in sup)) for i, (q, c, sup) in enumerate(drawn)
    ]
    return eps, {"params": {"seed": seed, "lists": source, "lists_sha256": sha}}


def save_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Write a manifest atomically as canonical JSON."""
    write_text_atomic(Path(path), canonical_json(manifest))


def load_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest and verify its hash (a hand-edited or truncated file is an error)."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FssBenchError(
            f"{path}: episode manifest not found; make one with `fssbench episodes`"
        ) from None
    except json.JSONDecodeError as e:
        raise FssBenchError(
            f"{path}: not a valid manifest ({e}); regenerate it with `fssbench episodes`"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FssBenchError(f"{path}: not an fssbench episode manifest (format != {FORMAT})")
    if manifest.get("sha256") != manifest_sha256(manifest):
        raise FssBenchError(f"{path}: content does not match its sha256 (edited or corrupt); regenerate it")
    return manifest


def manifest_episodes(manifest: dict[str, Any]) -> list[Episode]:
    return [Episode(e["id"], e["query"], e["class"], tuple(e["supports"])) for e in manifest["episodes"]]
