"""``hsnet``: the episodes HSNet's test loop scores (HSNet, DCAMA, VRP-SAM, Matcher, GF-SAM, SANSA,
FS-SAM2 evaluate this way), from HSNet's published lists and numpy's legacy generator.

HSNet seeds with ``fix_randseed(0)`` and loads with ``nworker=0``, so its episodes are a pure function
of ``np.random.seed(seed)``'s stream; every draw is ``np.random.choice(list, 1, replace=False)[0]``
(which consumes a permutation of the whole list), reproduced here on ``np.random.RandomState(seed)``:

* PASCAL: episode ``idx`` takes the ``(image, class)`` pair ``idx % len`` of the fold's list, in file
  order; supports are drawn from the class's images in that list (file order) until K differ from
  the query (a support may repeat, as in HSNet).
* COCO: the class is drawn among the fold's 20 (ascending), the query from that class's list, then
  the supports likewise.

Lists: on a real VOC/COCO root the published ones (``benchmark/published/hsnet-splits/``; a root
holding at least half of their images is taken for the real one, and then every image must be
there); on another root (the synthetic data), lists in HSNet's format built by this rule:
every (val image, class) pair with at least 2,048 pixels of a fold class, PASCAL pairs sorted by
image id then class, COCO images per class in the val list's order.

The protocol object (:class:`Hsnet`): defaults 1000 episodes, seed 0; scored resized to 400 px
(``eval``), 255 ignored on PASCAL only (HSNet's COCO labels have no 255).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.data.lists import MIN_CLASS_PIXELS, ImageRecord
from benchmark.episodes.manifest import Episode
from benchmark.episodes.registry import DrawInput, Drawn, Protocol
from benchmark.errors import FssBenchError

HSNET_SPLITS = Path(__file__).resolve().parents[2] / "published" / "hsnet-splits"
"""HSNet's ``data/splits`` test lists (PASCAL ``fold<k>.txt``, COCO ``fold<k>.json.gz``), package data."""


def read_published(dataset: str, fold: int) -> tuple[dict[int, list[str]], list[tuple[str, int]], str, str]:
    """HSNet's lists of a fold: (class -> image stems in list order, PASCAL (stem, class) pairs in file
    order (empty for COCO), sha256 of the file, its path)."""
    if dataset == "pascal":
        path = HSNET_SPLITS / "pascal" / "val" / f"fold{fold}.txt"
        raw = path.read_bytes()
        pairs = []
        for line in raw.decode("ascii").split():
            name, cc = line.split("__")
            pairs.append((name, int(cc)))
        return _classwise(pairs), pairs, hashlib.sha256(raw).hexdigest(), str(path)
    path = HSNET_SPLITS / "coco" / "val" / f"fold{fold}.json.gz"
    raw = path.read_bytes()
    classes = json.loads(gzip.decompress(raw))["classes"]
    classwise = {int(c): [Path(p).stem for p in images] for c, images in classes.items()}
    return dict(sorted(classwise.items())), [], hashlib.sha256(raw).hexdigest(), str(path)


def _classwise(pairs: list[tuple[str, int]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for name, c in pairs:
        out.setdefault(c, []).append(name)
    return dict(sorted(out.items()))


def derived_lists(
    dataset: str, records: list[ImageRecord], classes: list[int]
) -> tuple[dict[int, list[str]], list[tuple[str, int]], str]:
    """Lists in HSNet's format for a root that is not the real dataset (module docstring's rule):
    (class -> image ids, PASCAL pairs, sha256 of their canonical JSON)."""
    counted = [(r.id, c) for r in records for c in classes if r.pixels.get(c, 0) >= MIN_CLASS_PIXELS]
    pairs = sorted(counted) if dataset == "pascal" else []
    grouped: dict[int, list[str]] = {c: [] for c in classes}
    for i, c in counted:  # one pass; each class's ids stay in record order
        grouped[c].append(i)
    classwise = {c: v for c, v in grouped.items() if v}
    body = json.dumps({"pairs": pairs, "classes": classwise}, sort_keys=True).encode()
    return classwise, pairs, hashlib.sha256(body).hexdigest()


def _supports(rs: np.random.RandomState, images: list[str], query: str, shot: int, where: str) -> list[str]:
    if all(i == query for i in images):
        raise FssBenchError(
            f"{where}: the class of query {query} lists no other image; no support can be drawn"
        )
    out: list[str] = []
    while True:  # HSNet: keep sampling while the support equals the query; repeats allowed
        # np.random.choice draws an index the same way for a list and for its length (one
        # permutation of that many); drawing the index skips turning the list into an array
        s = images[int(rs.choice(len(images), 1, replace=False)[0])]
        if s != query:
            out.append(s)
        if len(out) == shot:
            return out


def hsnet_draw(
    dataset: str,
    classwise: dict[int, list[str]],
    pairs: list[tuple[str, int]],
    shot: int,
    episodes: int = 1000,
    seed: int = 0,
    where: str = "hsnet lists",
) -> list[tuple[str, int, list[str]]]:
    """(query, class, supports) of each episode, as HSNet's test loop draws them (module docstring)."""
    if not classwise:
        raise FssBenchError(f"{where}: no class has an image")
    rs = np.random.RandomState(int(seed))
    class_ids = sorted(classwise)
    out = []
    for idx in range(episodes):
        if dataset == "pascal":
            if not pairs:
                raise FssBenchError(f"{where}: the list is empty")
            query, cls = pairs[idx % len(pairs)]
        else:
            cls = int(rs.choice(class_ids, 1, replace=False)[0])
            query = classwise[cls][int(rs.choice(len(classwise[cls]), 1, replace=False)[0])]
        out.append((query, cls, _supports(rs, classwise[cls], query, shot, where)))
    return out


@dataclass(frozen=True)
class Hsnet(Protocol):
    """HSNet's test loop (module docstring); no options (the lists follow from the root and kind)."""

    name = "hsnet"
    description = (
        "HSNet's test episodes (HSNet, DCAMA, VRP-SAM, Matcher, GF-SAM, SANSA, FS-SAM2), resized to 400 px"
    )
    default_seed = 0
    default_resolution = "resized"

    def ignores_255(self, dataset: str) -> bool:
        return dataset != "coco"

    def draw(self, request: DrawInput) -> Drawn:
        """HSNet's published test lists on a root that holds at least half of their images (the real
        dataset: then every one must exist), lists built by the documented rule otherwise (the
        synthetic data, whose VOC-like ids rarely match), and for ``kind val``, whose base classes
        HSNet publishes no lists for."""
        r = request
        by_stem = {Path(rec.image).stem: rec for rec in r.pool}
        source = "derived"
        if r.kind == "test" and r.coco_split == "interleaved":
            classwise, pairs, sha, path = read_published(r.ds.dataset, r.fold)
            names = list(dict.fromkeys(i for v in classwise.values() for i in v))
            missing = [i for i in names if i not in by_stem]
            if 2 * len(missing) <= len(names):  # the real dataset (half or more there): every image must be
                if missing:
                    raise FssBenchError(
                        f"{path}: image {missing[0]} is not in the val split of {r.ds.root} ({len(missing)} of "
                        f"{len(names)} missing); prepare the complete dataset"
                    )
                if sorted(classwise) != sorted(r.classes):
                    raise FssBenchError(
                        f"{path}: classes {sorted(classwise)} are not fold {r.fold}'s {r.classes}"
                    )
                source, where = "published", path
        if source == "derived":
            classwise, pairs, sha = derived_lists(r.ds.dataset, r.pool, r.classes)
            where = f"{r.ds.root} (HSNet-format lists built from the val records, fold {r.fold})"
        drawn = hsnet_draw(r.ds.dataset, classwise, pairs, r.shot, r.episodes, r.seed, where)
        eps = [
            Episode(i, by_stem[q].id, c, tuple(by_stem[x].id for x in sup))
            for i, (q, c, sup) in enumerate(drawn)
        ]
        return Drawn(eps, {"seed": r.seed, "lists": source, "lists_sha256": sha})
