"""What a real-size synthetic dataset holds: split sizes, image sizes and per-image class plans.

Used by :mod:`benchmark.data.synth_scale`. Everything here runs in the main process and is cheap
(no pixels); it is deterministic given the generator ``rng``.

* :func:`pascal_split_sizes` / :func:`coco_split_sizes`: the real split sizes
  (:mod:`synth_frequencies`), scaled to ``images`` in the real proportions, then ``fraction`` applied
  to the training side (validation kept whole).
* :func:`image_size`: the longer side is the nominal width, the shorter side the nominal height times
  one of :data:`SHORT_SIDE_FACTORS` (500 x 375 gives 375, 333 or 281); a quarter are portrait.
* :func:`weighted_plans`: 1..3 guaranteed classes per image drawn without replacement with the
  class-frequency weights (Gumbel top-k), plus a block of images planned by the default generator's
  balanced round-robin so that every class has the coverage the episode lists need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.data.synth import _balanced_plans, _Plan
from benchmark.data.synth_frequencies import COCO_REAL_SPLITS, PASCAL_REAL_SPLITS

SHORT_SIDE_FACTORS = (1.0, 0.888, 0.75)  # 375 -> 375, 333, 281; 480 -> 480, 426, 360
SHORT_SIDE_WEIGHTS = (0.6, 0.3, 0.1)
PORTRAIT_SHARE = 0.25
MIN_SIDE = 96


@dataclass(frozen=True)
class ScaleRequest:
    """A real-size request: ``images`` total (None: the real counts), nominal ``size`` (W, H),
    ``fraction`` of the training side kept (validation whole)."""

    images: int | None
    size: tuple[int, int]
    fraction: float = 1.0


def _scaled(counts: dict[str, int], images: int | None, real_total: int) -> dict[str, int]:
    if images is None:
        return dict(counts)
    return {k: max(1, round(v * images / real_total)) for k, v in counts.items()}


def pascal_sbd_overlap(n_voc_train: int, n_voc_val: int, n_sbd: int) -> tuple[int, int]:
    """(VOC train, VOC val) images also in SBD's train.txt: the default generator's rule."""
    return min(n_voc_train, n_sbd // 6), min(n_voc_val, n_sbd // 8)


def pascal_distinct(counts: dict[str, int]) -> int:
    """Distinct annotated images of PASCAL split sizes (VOC seg sets plus SBD-only images)."""
    dup_train, dup_val = pascal_sbd_overlap(
        counts["voc_train"], counts["voc_val"], counts["sbd_train"] + counts["sbd_val"]
    )
    return (
        counts["voc_train"]
        + counts["voc_val"]
        + counts["sbd_train"]
        + counts["sbd_val"]
        - dup_train
        - dup_val
    )


def pascal_split_sizes(request: ScaleRequest) -> dict[str, int]:
    """``voc_train``, ``voc_val``, ``sbd_train``, ``sbd_val``: real (1,464 / 1,449 / 8,498 / 2,857)
    or scaled so that the distinct annotated images are about ``images``; the training side
    (everything but VOC val) times ``fraction``."""
    counts = _scaled(PASCAL_REAL_SPLITS, request.images, pascal_distinct(PASCAL_REAL_SPLITS))
    for k in ("voc_train", "sbd_train", "sbd_val"):
        counts[k] = max(1, round(counts[k] * request.fraction))
    dup_train, dup_val = pascal_sbd_overlap(
        counts["voc_train"], counts["voc_val"], counts["sbd_train"] + counts["sbd_val"]
    )
    counts["sbd_train"] = max(counts["sbd_train"], dup_train + dup_val)  # the duplicates are in SBD train
    return counts


def coco_split_sizes(request: ScaleRequest) -> dict[str, int]:
    """``train``, ``val``: real (82,783 / 40,504) or scaled to ``images`` in total; train times
    ``fraction``."""
    counts = _scaled(COCO_REAL_SPLITS, request.images, sum(COCO_REAL_SPLITS.values()))
    counts["train"] = max(2, round(counts["train"] * request.fraction))
    counts["val"] = max(2, counts["val"])
    return counts


def image_size(rng: np.random.Generator, nominal: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of one image: longer side max(nominal), shorter side min(nominal) times a factor."""
    long_side, short_base = max(nominal), min(nominal)
    factor = SHORT_SIDE_FACTORS[int(rng.choice(len(SHORT_SIDE_FACTORS), p=SHORT_SIDE_WEIGHTS))]
    short = max(MIN_SIDE, min(long_side, round(short_base * factor)))
    return (long_side, short) if rng.random() < PORTRAIT_SHARE else (short, long_side)


def weighted_plans(
    rng: np.random.Generator,
    n: int,
    weights: np.ndarray,
    k_probs: tuple[float, float, float],
    min_per_class: int,
    small_p: float,
    groups: list[list[int]] | None = None,
    pure_frac: float = 0.0,
) -> list[_Plan]:
    """Plans of ``n`` images, in a random order.

    A guarantee block of images is planned by the default generator's balanced round-robin
    (every class in at least ``min_per_class`` of them; pure images from ``groups``); the others draw
    ``k`` (from ``k_probs``) classes without replacement with probabilities ``weights`` (length
    n_classes, class ids 1..n_classes): with probability ``pure_frac`` all from one group (a group
    drawn by its total weight), and with probability ``small_p`` one more class present only small.
    """
    n_cls = len(weights)
    n_guard = min(n, n_cls * min_per_class // 2 + n_cls) if min_per_class else 0
    guard = _balanced_plans(rng, n_guard, n_cls, k_probs, min_per_class, small_p, groups, pure_frac)
    m = n - n_guard
    p = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    keys = np.log(p)[None, :] + rng.gumbel(size=(m, n_cls))
    pure = rng.random(m) < pure_frac if groups else np.zeros(m, dtype=bool)
    if groups and pure.any():
        gw = np.array([p[np.asarray(g) - 1].sum() for g in groups])
        chosen = rng.choice(len(groups), size=int(pure.sum()), p=gw / gw.sum())
        member = np.zeros((len(groups), n_cls), dtype=bool)
        for gi, g in enumerate(groups):
            member[gi, np.asarray(g) - 1] = True
        keys[np.flatnonzero(pure)] = np.where(member[chosen], keys[np.flatnonzero(pure)], -np.inf)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :4] + 1
    ks = rng.choice([1, 2, 3], size=m, p=list(k_probs))
    small = rng.random(m) < small_p
    plans = list(guard)
    for row, k, s in zip(order.tolist(), ks.tolist(), small.tolist(), strict=True):
        plans.append(_Plan(large=row[:k], small=row[k : k + 1] if s and k < 3 else []))
    return [plans[i] for i in rng.permutation(n).tolist()]
