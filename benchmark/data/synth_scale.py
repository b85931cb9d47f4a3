"""Real-size synthetic datasets: the real split sizes, image sizes and class frequencies.

A second code path beside :mod:`benchmark.data.synth` (whose default output stays byte-identical),
reusing its layout, rendering and encoding helpers. Same raw on-disk layouts (see that module).

* Split sizes, image sizes and class plans: :mod:`benchmark.data.synth_scale_plans`, with the
  approximate class frequencies of :mod:`benchmark.data.synth_frequencies`.
* Objects are scaled with the image (:mod:`benchmark.data.synth_scale_render`): the guaranteed
  objects' areas are multiplied by ``max(1, h * w / 60,000)`` (the default images' size).
* Parallel and deterministic: every image has its own generator ``default_rng([seed, tag, split,
  index])`` and the plans are drawn in the main process, so the files are byte-identical whatever
  the number of worker processes. Results come back in order (``imap``); the COCO annotation JSON is
  streamed to disk (each image's annotations come back as serialised JSON; nothing per-mask is held).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmark.data import synth
from benchmark.data import synth_scale_plans as plans
from benchmark.data.classes import IGNORE_LABEL, PASCAL_CLASSES
from benchmark.data.synth_frequencies import PASCAL_IMAGE_COUNTS
from benchmark.data.synth_scale_coco import synth_coco_scaled
from benchmark.data.synth_scale_render import TAG_PASCAL, layout, ordered_map, render_jpeg

PASCAL_K = {"train": (0.55, 0.3, 0.15), "val": (0.5, 0.35, 0.15)}  # classes per image (1, 2, 3)


# -------------------------------------------------------------------------------------------- PASCAL


def _pascal_image(task: tuple) -> tuple[int, int]:
    """Render and write one PASCAL image (runs in a worker); returns (h, w)."""
    seed, index, img_id, large, small, size, in_voc, in_sbd, voc, sbd = task
    rng = np.random.default_rng([seed, TAG_PASCAL, 1, index])
    h, w = plans.image_size(rng, size)
    objs = layout(rng, h, w, synth._Plan(list(large), list(small)), coco=False)
    jpeg = render_jpeg(rng, objs, h, w)
    Path(voc, "JPEGImages", f"{img_id}.jpg").write_bytes(jpeg)
    label, inst = synth._label_map(objs, h, w)
    if in_voc:
        voc_label = label.copy()
        voc_label[synth._voc_band(inst)] = IGNORE_LABEL
        Path(voc, "SegmentationClass", f"{img_id}.png").write_bytes(synth._voc_png(voc_label))
    if in_sbd:
        Path(sbd, "img", f"{img_id}.jpg").write_bytes(jpeg)
        Path(sbd, "cls", f"{img_id}.mat").write_bytes(synth._sbd_mat(label))
    return h, w


def _pascal_ids(rng: np.random.Generator, counts: dict[str, int]) -> synth._PascalIds:
    """The ids and lists (VOC train/val, SBD-only, extras, SBD train/val) of the split sizes."""
    n_sbd = counts["sbd_train"] + counts["sbd_val"]
    dup_train, dup_val = plans.pascal_sbd_overlap(counts["voc_train"], counts["voc_val"], n_sbd)
    n_sbd_only = n_sbd - dup_train - dup_val
    n_extra = max(2, (counts["voc_train"] + counts["voc_val"]) // 30)
    ids = _unique_voc_ids(rng, counts["voc_train"] + counts["voc_val"] + n_sbd_only + n_extra)
    a, b = counts["voc_train"], counts["voc_train"] + counts["voc_val"]
    voc_train, voc_val, sbd_only, extra = ids[:a], ids[a:b], ids[b : b + n_sbd_only], ids[b + n_sbd_only :]
    n_only_train = counts["sbd_train"] - dup_train - dup_val
    sbd_train = voc_train[:dup_train] + voc_val[:dup_val] + sbd_only[:n_only_train]
    return synth._PascalIds(
        voc_train, voc_val, sbd_only, extra, sbd_train, sbd_only[n_only_train:], dup_train, dup_val
    )


def _unique_voc_ids(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` unique VOC-like ids ``{year}_{k:06d}``, years 2007..2011 (k up to 99,999 at large n)."""
    return synth._voc_ids(rng, n, top=max(8000, 2 * n // 5 + 1))


def synth_pascal_scaled(
    out: Path, request: plans.ScaleRequest, seed: int = 0, workers: int = 1, progress: bool = False
) -> dict:
    """Write a real-size synthetic VOC2012 + SBD under ``out`` (layout of :func:`synth.synth_pascal`)."""
    out = Path(out)
    voc, sbd = synth.pascal_folders(out)
    counts = plans.pascal_split_sizes(request)
    rng = np.random.default_rng([seed, TAG_PASCAL, 0])
    ids = _pascal_ids(rng, counts)
    weights = np.array([PASCAL_IMAGE_COUNTS[c] for c in PASCAL_CLASSES], dtype=np.float64)
    groups = [list(range(5 * g + 1, 5 * g + 6)) for g in range(4)]
    train_pool = ids.voc_train + ids.sbd_only
    roster = list(
        zip(
            train_pool,
            plans.weighted_plans(
                rng, len(train_pool), weights, PASCAL_K["train"], synth.MIN_TRAIN_IMAGES, 0.25, groups, 0.4
            ),
            strict=True,
        )
    )
    roster += zip(
        ids.voc_val,
        plans.weighted_plans(rng, len(ids.voc_val), weights, PASCAL_K["val"], synth.MIN_VAL_IMAGES, 0.25),
        strict=True,
    )
    roster += zip(
        ids.extra, plans.weighted_plans(rng, len(ids.extra), weights, (0.4, 0.4, 0.2), 0, 0.0), strict=True
    )
    voc_seg, in_sbd = set(ids.voc_train) | set(ids.voc_val), set(ids.sbd_train) | set(ids.sbd_val)
    tasks = (
        (
            seed,
            i,
            img_id,
            p.large,
            p.small,
            request.size,
            img_id in voc_seg,
            img_id in in_sbd,
            str(voc),
            str(sbd),
        )
        for i, (img_id, p) in enumerate(roster)
    )
    sizes = list(ordered_map(_pascal_image, tasks, len(roster), workers, "synth pascal", progress))
    sets = voc / "ImageSets" / "Segmentation"
    synth._write_lines(sets / "train.txt", sorted(ids.voc_train))
    synth._write_lines(sets / "val.txt", sorted(ids.voc_val))
    synth._write_lines(sets / "trainval.txt", sorted(ids.voc_train + ids.voc_val))
    synth._write_lines(sbd / "train.txt", sorted(ids.sbd_train))
    synth._write_lines(sbd / "val.txt", sorted(ids.sbd_val))
    return {
        "voc": voc,
        "sbd": sbd,
        "n_images": len(roster),
        **{f"n_{k}": v for k, v in counts.items()},
        "n_sbd_in_voc_train": ids.n_dup_train,
        "n_sbd_in_voc_val": ids.n_dup_val,
        "n_extra": len(ids.extra),
        "pixels": int(sum(h * w for h, w in sizes)),
    }


def synth_scaled_dataset(
    dataset: str,
    out: Path,
    request: plans.ScaleRequest,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Generate a real-size synthetic raw dataset atomically at ``out``; returns the summary."""
    from benchmark.io_utils import atomic_directory

    n_workers = workers or os.cpu_count() or 1
    with atomic_directory(out, overwrite=overwrite) as tmp:
        if dataset == "pascal":
            return synth_pascal_scaled(tmp, request, seed=seed, workers=n_workers, progress=progress)
        return synth_coco_scaled(tmp, request, seed=seed, workers=n_workers, progress=progress)
