"""``fssam`` (PFENet family, what FSSAM reports): the fold's ordered query list is cycled (episode i
uses query i mod len); the target class is drawn uniformly among the fold's classes PRESENT in the
query (any pixel, as PFENet/BAM/FSSAM ``__getitem__`` do); the K supports are distinct images drawn
uniformly from that class's list (class >= 2*32*32 px), each != query. Defaults: 1000 episodes,
seed 321; scored at the label's size with 255 ignored.

Same inputs give the same episodes on any machine: the sampler only uses
``random.Random(seed).random()``, whose sequence Python guarantees across versions and platforms.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from benchmark.data.lists import ImageRecord, fold_pool
from benchmark.episodes.manifest import Episode
from benchmark.episodes.registry import DrawInput, Drawn, Protocol
from benchmark.errors import FssBenchError


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


def sample_episodes(
    records: list[ImageRecord], classes: list[int], shot: int, seed: int, n: int, where: str
) -> list[Episode]:
    """Sample ``n`` fssam episodes of ``classes`` from a split's ``records`` (pure function).

    ``where`` names the list the pools come from, for error messages. Raises FssBenchError when a
    class has fewer than K+1 images (the query plus K distinct supports) or the pool is empty.
    """
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
class Fssam(Protocol):
    """The PFENet family's sampler (module docstring); no options."""

    name = "fssam"
    description = "PFENet-family episodes (what FSSAM reports): cycled queries, uniform class and supports"
    default_seed = 321

    def draw(self, request: DrawInput) -> Drawn:
        r = request
        return Drawn(sample_episodes(r.pool, r.classes, r.shot, r.seed, r.episodes, r.where))
