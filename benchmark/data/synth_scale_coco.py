"""The COCO 2014 part of the real-size synthetic generator (:mod:`benchmark.data.synth_scale`).

Layout and encodings of :func:`benchmark.data.synth.synth_coco`. Memory stays bounded at any size:
each image's annotations come back from its worker as serialised JSON (polygons, compressed RLE,
crowd regions in uncompressed RLE) and are appended to a spool file, and the image entries to a
second one; ``instances_<split>2014.json`` is then assembled by streaming the two spools.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from benchmark.data import synth
from benchmark.data import synth_scale_plans as plans
from benchmark.data.classes import COCO_CATEGORIES
from benchmark.data.synth_frequencies import COCO_IMAGE_COUNTS
from benchmark.data.synth_scale_render import TAG_COCO, layout, ordered_map, render_jpeg

_INFO = {
    "description": "fssam-bench synthetic COCO 2014 (instances), real-size",
    "url": "",
    "version": "1.0",
    "year": 2014,
    "contributor": "fssam-bench",
    "date_created": "2015/01/01",
}
_COMPACT = (",", ":")
COCO_K = (0.1, 0.25, 0.65)  # classes per image (1, 2, 3)


def _coco_image(task: tuple) -> tuple[str, list[tuple[bool, str]]]:
    """Render and write one image (runs in a worker): (image entry JSON, [(crowd, annotation JSON
    without its id)])."""
    seed, split_index, split, index, image_id, large, small, crowd, size, folder = task
    rng = np.random.default_rng([seed, TAG_COCO, 1 + split_index, index])
    h, w = plans.image_size(rng, size)
    objs = layout(rng, h, w, synth._Plan(list(large), list(small), crowd), coco=True)
    file_name = f"COCO_{split}2014_{image_id:012d}.jpg"
    Path(folder, file_name).write_bytes(render_jpeg(rng, objs, h, w))
    entry = synth.coco_image_entry(split, file_name, h, w, image_id)
    anns = []
    for o in objs:
        ann = synth._coco_annotation(o, 0, image_id, h, w)
        del ann["id"]
        anns.append((o.crowd, json.dumps(ann, separators=_COMPACT)))
    return json.dumps(entry, separators=_COMPACT), anns


def _split_plans(rng: np.random.Generator, split: str, n: int) -> list[synth._Plan]:
    """The plans of a split: weighted classes, every 13th image with a crowd region, one image
    without annotations; train: half the images from one (interleaved, contiguous) fold cell."""
    weights = np.array([COCO_IMAGE_COUNTS[name] for _, name, _ in COCO_CATEGORIES], dtype=np.float64)
    cells = [
        [c for c in range(1, 81) if (c - 1) % 4 == g and (c - 1) // 20 == h]
        for g in range(4)
        for h in range(4)
    ]
    train = split == "train"
    min_per_class = synth.MIN_TRAIN_IMAGES if train else synth.MIN_VAL_IMAGES
    out = plans.weighted_plans(
        rng, n - 1, weights, COCO_K, min_per_class, 0.5, cells if train else None, 0.5 if train else 0.0
    )
    for i, plan in enumerate(out):
        plan.crowd = i % 13 == 5
    out.insert(int(rng.integers(n)), synth._Plan())
    return out


def _write_instances(path: Path, images_spool: Path, anns_spool: Path) -> None:
    """``instances_*.json`` (keys in COCO's order) from the spools of comma-separated entries."""
    categories = [{"supercategory": sc, "id": cid, "name": name} for cid, name, sc in COCO_CATEGORIES]
    with open(path, "w", encoding="ascii") as f:
        f.write('{"info":' + json.dumps(_INFO, separators=_COMPACT))
        f.write(',"licenses":[{"url":"","id":1,"name":"synthetic"}],"images":[')
        for spool in (images_spool, anns_spool):
            with open(spool, encoding="ascii") as s:
                shutil.copyfileobj(s, f)
            f.write('],"annotations":[' if spool == images_spool else "]")
        f.write(',"categories":' + json.dumps(categories, separators=_COMPACT) + "}")
    images_spool.unlink()
    anns_spool.unlink()


def _coco_split(
    out: Path,
    task_head: tuple,
    image_ids: list[int],
    split_plans: list,
    size,
    ids: list[int],
    workers: int,
    progress: bool,
) -> dict:
    """Render one split and write its instances JSON; ``ids`` = [next annotation id, next crowd id]."""
    seed, split_index, split = task_head
    folder = out / f"{split}2014"
    folder.mkdir(parents=True, exist_ok=True)
    tasks = (
        (seed, split_index, split, i, image_ids[i], p.large, p.small, p.crowd, size, str(folder))
        for i, p in enumerate(split_plans)
    )
    images_spool, anns_spool = out / f".images_{split}.spool", out / f".anns_{split}.spool"
    n_anns = n_crowd = 0
    with open(images_spool, "w", encoding="ascii") as fi, open(anns_spool, "w", encoding="ascii") as fa:
        results = ordered_map(_coco_image, tasks, len(split_plans), workers, f"synth coco {split}", progress)
        for i, (entry, anns) in enumerate(results):
            fi.write(("," if i else "") + entry)
            for crowd, text in anns:
                k = 1 if crowd else 0
                fa.write(("," if n_anns else "") + f'{{"id":{ids[k]},' + text[1:])
                ids[k] += 1
                n_anns += 1
                n_crowd += crowd
    _write_instances(out / "annotations" / f"instances_{split}2014.json", images_spool, anns_spool)
    return {
        f"n_{split}_images": len(split_plans),
        f"n_{split}_annotations": n_anns,
        f"n_{split}_crowd": n_crowd,
    }


def synth_coco_scaled(
    out: Path, request: plans.ScaleRequest, seed: int = 0, workers: int = 1, progress: bool = False
) -> dict:
    """Write a real-size synthetic COCO 2014 under ``out`` (layout of :func:`synth.synth_coco`)."""
    out = Path(out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    counts = plans.coco_split_sizes(request)
    rng = np.random.default_rng([seed, TAG_COCO, 0])
    image_ids = (rng.choice(581929, size=counts["train"] + counts["val"], replace=False) + 1).tolist()
    ids = [int(rng.integers(100_000, 200_000)), synth.COCO_CROWD_ID_BASE + int(rng.integers(0, 500_000))]
    summary: dict = {"coco": out}
    split_ids = {"train": image_ids[: counts["train"]], "val": image_ids[counts["train"] :]}
    for split_index, split in enumerate(("train", "val")):
        split_plans = _split_plans(rng, split, counts[split])
        summary.update(
            _coco_split(
                out,
                (seed, split_index, split),
                split_ids[split],
                split_plans,
                request.size,
                ids,
                workers,
                progress,
            )
        )
    return summary
