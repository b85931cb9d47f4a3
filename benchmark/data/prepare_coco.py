"""Build a COCO-20i data root from raw COCO 2014 images and instance annotations.

Label PNGs (``annotations/{train2014,val2014}/<image stem>.png``, grayscale) hold the contiguous class
ids 1..80 (COCO category ids in ascending order), 0 for background and 255 for crowd regions.

Overlap rule (COCO instances overlap; a semantic mask needs one value per pixel):
1. crowd annotations (``iscrowd=1``) are painted first, as 255 (ignore);
2. non-crowd instances are painted over them in order of decreasing mask area, so every pixel takes
   the class of the SMALLEST non-crowd instance covering it: small objects in front of large ones
   are kept, and a real object inside a crowd region wins. Equal areas are painted in ascending
   annotation id, so the higher id ends on top.
Instance areas are counted from the decoded masks, not read from the JSON ``area`` field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from benchmark.data.classes import COCO_CATEGORIES, coco_category_to_class
from benchmark.data.images import class_pixel_counts, read_image, write_label
from benchmark.data.json_stream import read_spans, stream_object
from benchmark.data.lists import ImageRecord
from benchmark.data.prepared import default_workers, link_or_copy_dir, parallel_map, write_prepared_root
from benchmark.errors import FssBenchError
from benchmark.io_utils import atomic_directory

COCO_SPLIT_NAMES = {"train": "train2014", "val": "val2014"}


def resolve_coco(path: Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FssBenchError(f"--coco {p}: directory not found")
    missing = [
        str(p / rel)
        for rel in (
            "train2014",
            "val2014",
            "annotations/instances_train2014.json",
            "annotations/instances_val2014.json",
        )
        if not (p / rel).exists()
    ]
    if missing:
        raise FssBenchError(f"--coco {p}: missing {', '.join(missing)} (expected the COCO 2014 layout)")
    return p


def decode_segmentation(seg: list | dict, h: int, w: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as an (h, w) uint8 0/1 mask."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = dict(seg)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(np.uint8)


def render_semantic_mask(anns: list[dict], h: int, w: int, cat_to_class: dict[int, int]) -> np.ndarray:
    """(h, w) uint8 semantic mask from one image's annotations, by the overlap rule of this module."""
    label = np.zeros((h, w), dtype=np.uint8)
    crowd, things = [], []
    for ann in anns:
        m = decode_segmentation(ann["segmentation"], h, w)
        if m.shape != (h, w):
            raise ValueError(f"annotation {ann['id']} decodes to {m.shape}, image is {(h, w)}")
        (crowd if ann.get("iscrowd", 0) else things).append((ann, m))
    for _, m in crowd:
        label[m > 0] = 255
    things.sort(key=lambda am: (-int(am[1].sum()), am[0]["id"]))
    for ann, m in things:
        label[m > 0] = cat_to_class[ann["category_id"]]
    return label


@dataclass
class CocoInstances:
    """What preparing needs of an ``instances_*.json`` file, read without holding its annotations:
    the image entries, and per image id the byte spans of its annotations (file order)."""

    path: Path
    images: list[dict]
    spans: dict[int, list[tuple[int, int]]]


def index_instances(path: Path, progress: bool = False) -> CocoInstances:
    """Stream and validate an ``instances_*.json`` file (a byte progress bar with ``progress``).

    Memory: the image entries and a few integers per annotation, not the annotations' polygons.
    """
    images: list[dict] = []
    anns: list[tuple[Any, Any, Any, int, int]] = []  # id, category id, image id, byte span
    size = path.stat().st_size if path.is_file() else 0
    bar = tqdm(
        total=size, desc=f"reading {path.name}", unit="B", unit_scale=True, disable=not progress, leave=False
    )

    def annotation(ann: dict, start: int, length: int) -> None:
        anns.append((ann.get("id"), ann.get("category_id"), ann.get("image_id"), start, length))

    try:
        members = stream_object(
            path, {"images": lambda im, *_: images.append(im), "annotations": annotation}, bar.update
        )
        members["images"], members["annotations"]  # noqa: B018 (both must be present)
        cats = members["categories"]
    except FileNotFoundError:
        raise FssBenchError(f"{path}: not found") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FssBenchError(f"{path}: not a COCO instances file ({e})") from None
    finally:
        bar.close()
    known = {cid: name for cid, name, _ in COCO_CATEGORIES}
    for cat in cats:
        if known.get(cat.get("id")) != cat.get("name"):
            raise FssBenchError(
                f"{path}: category {cat.get('id')} {cat.get('name')!r} is not one of the 80 COCO 2014 categories"
            )
    image_ids = {im["id"] for im in images}
    spans: dict[int, list[tuple[int, int]]] = {}
    for ann_id, cat_id, image_id, start, length in anns:
        if cat_id not in known:
            raise FssBenchError(f"{path}: annotation {ann_id} has unknown category id {cat_id}")
        if image_id not in image_ids:
            raise FssBenchError(f"{path}: annotation {ann_id} refers to unknown image id {image_id}")
        spans.setdefault(image_id, []).append((start, length))
    return CocoInstances(path, images, spans)


def _prepare_one(task: tuple[str, str, int, int, list[tuple[int, int]], str, str]) -> ImageRecord:
    """Decode one image, check its size against the JSON, read its annotations back from the JSON
    file (their byte spans), render and write its mask (in a worker)."""
    split_dir, file_name, h, w, spans, json_path, out_path = task
    anns = read_spans(Path(json_path), spans)
    img = read_image(Path(split_dir) / file_name)
    if img.shape[:2] != (h, w):
        raise FssBenchError(
            f"{Path(split_dir) / file_name}: image is {img.shape[1]}x{img.shape[0]} but {json_path} says {w}x{h}"
        )
    try:
        label = render_semantic_mask(anns, h, w, coco_category_to_class())
    except (ValueError, TypeError, KeyError) as e:
        raise FssBenchError(f"{json_path}: bad segmentation for {file_name} ({e})") from None
    write_label(Path(out_path), label)
    split = Path(split_dir).name
    stem = Path(file_name).stem
    return ImageRecord(
        id=stem,
        image=f"{split}/{file_name}",
        label=f"annotations/{split}/{stem}.png",
        height=h,
        width=w,
        pixels=class_pixel_counts(label),
    )


def prepare_coco(
    coco: Path,
    out: Path,
    workers: int | None = None,
    overwrite: bool = False,
    copy_images: bool = False,
    progress: bool = True,
) -> dict:
    """Prepare a COCO-20i root at ``out`` (atomically: nothing is left behind on failure)."""
    src = resolve_coco(coco)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        records: dict[str, list[ImageRecord]] = {}
        for split, name in COCO_SPLIT_NAMES.items():
            json_path = src / "annotations" / f"instances_{name}.json"
            index = index_instances(json_path, progress)
            (tmp / "annotations" / name).mkdir(parents=True)
            tasks = [
                (
                    str(src / name),
                    im["file_name"],
                    int(im["height"]),
                    int(im["width"]),
                    index.spans.get(im["id"], []),
                    str(json_path),
                    str(tmp / "annotations" / name / f"{Path(im['file_name']).stem}.png"),
                )
                for im in sorted(index.images, key=lambda im: im["file_name"])
            ]
            del index  # one split's index at a time
            records[split] = parallel_map(
                _prepare_one, tasks, workers or default_workers(), f"coco {name}", progress
            )
            link_or_copy_dir(src / name, tmp / name, copy_images, [t[1] for t in tasks], progress)
        info = write_prepared_root(
            tmp,
            "coco",
            records,
            {
                "sources": {"coco": str(src.resolve())},
                "label_rule": "crowd=255 first, then non-crowd instances by decreasing area (smallest on top)",
                "images": "copied" if copy_images else "symlinked",
            },
            progress,
        )
    return info
