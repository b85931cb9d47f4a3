"""``fssam-exact``: the test episodes the FSSAM release scores, episode for episode.

The draw, as ../shared/docs/authors-episodes.md describes the release's ``test.py`` +
``SemData.__getitem__`` + PyTorch's DataLoader (pure functions; no DataLoader is used here):

* ``setup_seed(seed)`` seeds torch and Python's ``random``. The loop runs ``ceil(N / (L - 1))``
  epochs over the fold's ``data_list`` (L lines, index order) and stops after N episodes.
* Each epoch's iterator draws ``base_seed = torch.empty((), dtype=torch.int64).random_()`` from
  torch's generator. With W > 0 loader workers, worker ``w`` seeds ``random.seed(base_seed + w)`` and
  produces items ``i`` with ``i % W == w``, in order; with W = 0 one ``random`` stream, seeded once,
  serves every item of every epoch. So the same seed gives other episodes with another W.
* One item: the query's classes are its label's unique values that are novel classes (any pixel);
  ``cls = label_class[randint(1, len) - 1]``. Each of the K supports: one ``randint(1, n) - 1`` drawn
  and discarded, then redrawn while the pick equals the query (image and label) or was chosen
  already. The model receives the supports in reverse draw order.

The protocol object (:class:`FssamExact`) draws test episodes only, at the label's size; its options
are the draw's: ``draw_workers`` (W; a study file's and the command line's ``loader_workers``, default
32, the authors') and ``lists`` (``own``: the root's PFENet-format lists; ``authors``: the release's
PASCAL lists, matched to the root by image id).

Only Python's ``random.Random.randint`` (what the release calls) and torch's CPU generator are used,
so the episodes are a function of (lists, classes, K, N, seed, W).
"""

from __future__ import annotations

import ast
import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmark.data.lists import ImageRecord
from benchmark.data.prepared import fold_list_dir
from benchmark.episodes.manifest import Episode
from benchmark.episodes.registry import DrawInput, Drawn, Protocol
from benchmark.errors import FssBenchError

Pair = tuple[str, str]
"""(image path, label path) as written in the lists; compared as strings, as the release does."""

AUTHORS_LISTS = Path(__file__).resolve().parents[2] / "published" / "fssam-lists"
"""The FSSAM release's PASCAL-5i test lists (``pascal/val/``), shipped as package data."""
EXACT_LISTS = ("own", "authors")
"""Where ``fssam-exact`` reads its PFENet-format lists: the prepared root's, or the release's (PASCAL)."""


@dataclass(frozen=True)
class PfenetLists:
    """A fold's PFENet-format test lists: ``data_list`` (query pairs, file order) and
    ``sub_class_file_list`` (class -> pairs, in the order written); ``sha256`` of both files' bytes."""

    data_list: list[Pair]
    sub_class_file_list: dict[int, list[Pair]]
    sha256: str
    where: str


def read_pfenet_lists(folder: Path, fold: int) -> PfenetLists:
    """``data_list_<fold>.txt`` and ``sub_class_file_list_<fold>.txt`` of ``folder`` (the dict literal
    is read with ``ast.literal_eval``, never ``eval``)."""
    folder = Path(folder)
    dl, sc = folder / f"data_list_{fold}.txt", folder / f"sub_class_file_list_{fold}.txt"
    for p in (dl, sc):
        if not p.is_file():
            raise FssBenchError(
                f"{p}: list not found (PFENet-format lists are made by `fssbench data prepare`)"
            )
    raw_dl, raw_sc = dl.read_bytes(), sc.read_bytes()
    texts = {}
    for p, raw in ((dl, raw_dl), (sc, raw_sc)):
        try:
            texts[p] = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FssBenchError(f"{p}: not UTF-8 text ({e}); is this a PFENet-format list?") from None
    pairs = []
    for n, line in enumerate(texts[dl].splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2:
                raise FssBenchError(f"{dl}:{n}: expected 'IMAGE LABEL', got {line!r}")
            pairs.append((parts[0], parts[1]))
    try:
        sub = ast.literal_eval(texts[sc])
        sub = {int(c): [(str(a), str(b)) for a, b in v] for c, v in sub.items()}
    except (ValueError, SyntaxError, TypeError, AttributeError, MemoryError, RecursionError) as e:
        raise FssBenchError(f"{sc}: not a dict literal class -> [(image, label), ...] ({e})") from None
    sha = hashlib.sha256(raw_dl + b"\0" + raw_sc).hexdigest()
    return PfenetLists(pairs, sub, sha, str(dl))


@dataclass(frozen=True)
class DrawnEpisode:
    """Episode ``id`` = item ``index`` of ``epoch``: the query pair, the class and the supports in
    the order the model receives them (reverse draw order)."""

    id: int
    epoch: int
    index: int
    query: Pair
    cls: int
    supports: tuple[Pair, ...]


def _item(rng: random.Random, query: Pair, label_class: list[int], lists: PfenetLists, shot: int) -> tuple:
    cls = label_class[rng.randint(1, len(label_class)) - 1]
    files = lists.sub_class_file_list.get(cls)
    if files is None:
        raise FssBenchError(
            f"{lists.where}: query {query[0]} holds class {cls}, which the class list "
            "(sub_class_file_list) does not list; the two lists do not belong together"
        )
    n = len(files)
    if sum(f != query for f in files) < shot:
        raise FssBenchError(
            f"{lists.where}: class {cls} lists {n} image(s) besides the query's {query[0]}; a {shot}-shot "
            "episode needs that many others"
        )
    chosen: list[int] = []
    supports: list[Pair] = []
    for _ in range(shot):
        idx = rng.randint(1, n) - 1  # drawn and discarded: the loop test starts with support = query
        support = query
        while support == query or idx in chosen:
            idx = rng.randint(1, n) - 1
            support = files[idx]
        chosen.append(idx)
        supports.append(support)
    return cls, tuple(reversed(supports))


def authors_draw(
    lists: PfenetLists,
    label_classes: Callable[[Pair], list[int]],
    shot: int,
    episodes: int = 1000,
    seed: int = 321,
    workers: int = 32,
) -> list[DrawnEpisode]:
    """The release's test episodes (module docstring). ``label_classes(pair)``: the query's novel
    classes with any pixel, ascending (``label_class`` of ``SemData``)."""
    import torch

    L = len(lists.data_list)
    if L < 2:
        raise FssBenchError(f"{lists.where}: the test list needs at least 2 queries, has {L}")
    if workers < 0:
        raise FssBenchError(f"--loader-workers must be >= 0, got {workers}")
    gen = torch.Generator().manual_seed(int(seed))
    main = random.Random(int(seed))
    out: list[DrawnEpisode] = []
    for epoch in range(math.ceil(episodes / (L - 1))):
        base_seed = int(torch.empty((), dtype=torch.int64).random_(generator=gen).item())
        streams = [random.Random(base_seed + w) for w in range(min(workers, L))]  # workers >= L idle
        for i, query in enumerate(lists.data_list):
            if len(out) == episodes:
                return out
            present = label_classes(query)
            if not present:
                raise FssBenchError(f"{lists.where}: query {query[0]} holds none of the fold's novel classes")
            rng = streams[i % workers] if workers else main
            cls, supports = _item(rng, query, present, lists, shot)
            out.append(DrawnEpisode(len(out), epoch, i, query, cls, supports))
    return out


@dataclass(frozen=True)
class FssamExact(Protocol):
    """The FSSAM release's test episodes, exactly (module docstring). ``draw_workers``: the
    DataLoader workers whose random streams the release draws with; ``lists``: :data:`EXACT_LISTS`."""

    name = "fssam-exact"
    description = "the FSSAM release's own test episodes, exactly (its seeding, loader workers and lists)"
    default_seed = 321
    kinds = ("test",)
    user_options = {"loader_workers": "draw_workers", "lists": "lists"}

    draw_workers: int = 32
    lists: str = "own"

    def check_options(self) -> None:
        if self.lists not in EXACT_LISTS:
            raise FssBenchError(f"--lists must be one of {EXACT_LISTS}, got {self.lists!r}")

    def check_request(self, kind: str, dataset: str) -> None:
        if kind != "test":
            raise FssBenchError("protocol fssam-exact reproduces the authors' test episodes: use kind test")
        self.check_options()
        if self.lists == "authors" and dataset != "pascal":
            raise FssBenchError(
                "--lists authors: the FSSAM release's lists shipped here are PASCAL's; use --lists own"
            )

    def file_tail(self) -> str:
        return f"-w{self.draw_workers}-{self.lists}"

    def draw(self, request: DrawInput) -> Drawn:
        """The release's episodes with the list pairs matched to the root's images by image id (the
        file name's stem); records the draw's parameters and each episode's (epoch, index)."""
        r = request
        if self.lists == "authors":
            folder = AUTHORS_LISTS / "pascal" / "val"
        else:
            folder = r.ds.root / fold_list_dir(r.ds.dataset, r.coco_split) / "val"
        pl = read_pfenet_lists(folder, r.fold)
        by_stem = {Path(rec.image).stem: rec for rec in r.records}

        def record(pair: Pair) -> ImageRecord:
            rec = by_stem.get(Path(pair[0]).stem)
            if rec is None:
                raise FssBenchError(
                    f"{pl.where}: {pair[0]} is not an image of the val split of {r.ds.root} (matched by image id "
                    f"{Path(pair[0]).stem!r}); --lists authors needs the real VOC2012 val images"
                )
            return rec

        for pair in pl.data_list:
            record(pair)
        drawn = authors_draw(
            pl, lambda q: record(q).present(r.classes), r.shot, r.episodes, r.seed, self.draw_workers
        )
        eps = [
            Episode(
                d.id, record(d.query).id, d.cls, tuple(record(s).id for s in d.supports), d.epoch, d.index
            )
            for d in drawn
        ]
        params = {
            "seed": r.seed,
            "loader_workers": self.draw_workers,
            "lists": self.lists,
            "lists_sha256": pl.sha256,
        }
        return Drawn(eps, params)
