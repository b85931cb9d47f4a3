"""The prepared data root: its layout, its metadata file and the reader used by everything else.

Layout (paths relative to the root; the image folders are symlinks to the raw data unless the
preparation was asked to copy them)::

    dataset.json                            what this root is (dataset, classes, splits, sources)
    JPEGImages/ SegmentationClassAug/       PASCAL: images, masks 0..20 + 255
    train2014/ val2014/ annotations/{train2014,val2014}/   COCO: images, masks 0..80 + 255
    lists/train.txt lists/val.txt           PFENet-format lists ("<image> <label>" per line)
    lists/records_{train,val}.json          per-image class pixel counts (all fold lists derive from these)
    lists/<fss_list>/{train,val}/data_list_<k>.txt, sub_class_file_list_<k>.txt
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from benchmark import __version__
from benchmark.data import classes as C
from benchmark.data.images import read_image, read_label
from benchmark.data.lists import (
    ImageRecord,
    fold_pool,
    list_line,
    read_records,
    write_pfenet_lists,
    write_records,
)
from benchmark.errors import FssBenchError
from benchmark.io_utils import write_text_atomic

FORMAT = "fssbench-prepared/1"
SPLITS = ("train", "val")

T = TypeVar("T")
R = TypeVar("R")


def fold_list_dir(dataset: str, coco_split: str = "interleaved") -> str:
    """Folder (relative to the root) holding the per-fold lists for a class split."""
    if dataset == "coco" and coco_split == "contiguous":
        return "lists/fss_list_contiguous"
    return "lists/fss_list"


def class_splits(dataset: str) -> tuple[str, ...]:
    """The fold class splits a dataset has (COCO has two conventions, PASCAL one)."""
    return C.COCO_SPLITS if dataset == "coco" else ("interleaved",)


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str, progress: bool
) -> list[R]:
    """``[fn(x) for x in items]`` over ``workers`` processes, in order, with a progress bar."""
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if workers <= 1 or len(items) < 32:
            out = []
            for x in items:
                out.append(fn(x))
                bar.update()
            return out
        out = []
        ex = ProcessPoolExecutor(max_workers=workers)
        try:
            for r in ex.map(fn, items, chunksize=max(1, min(64, len(items) // (8 * workers)))):
                out.append(r)
                bar.update()
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
        return out
    finally:
        bar.close()


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def write_prepared_root(
    root: Path,
    dataset: str,
    records: dict[str, list[ImageRecord]],
    meta: dict[str, Any],
    progress: bool = False,
) -> dict[str, Any]:
    """Write the lists, records, per-fold lists and dataset.json of a prepared root (a progress
    bar over the fold lists with ``progress``).

    ``records`` maps split name ("train", "val") to its images in list order.
    """
    lists = root / "lists"
    for split in SPLITS:
        recs = records[split]
        if not recs:
            raise FssBenchError(f"the {split} split of the {dataset} source is empty; nothing to prepare")
        write_text_atomic(lists / f"{split}.txt", "".join(list_line(r) + "\n" for r in recs))
        write_records(lists / f"records_{split}.json", split, recs)
    fold_counts: dict[str, Any] = {}
    folds = [(cs, fold) for cs in class_splits(dataset) for fold in range(C.NUM_FOLDS)]
    for cs, fold in tqdm(folds, desc="fold lists", unit="fold", disable=not progress, leave=False):
        base_dir = root / fold_list_dir(dataset, cs)
        novel = C.novel_classes(dataset, fold, cs)
        base = C.base_classes(dataset, fold, cs)
        val_pool = fold_pool(records["val"], novel, filter_intersection=False)
        train_pool = fold_pool(records["train"], base, filter_intersection=True)
        write_pfenet_lists(base_dir / "val", fold, val_pool)
        write_pfenet_lists(base_dir / "train", fold, train_pool)
        fold_counts[f"{cs}/fold{fold}"] = {
            "val_images": len(val_pool.images),
            "train_images": len(train_pool.images),
            "val_per_class": {str(c): len(v) for c, v in val_pool.per_class.items()},
        }
    info = {
        "format": FORMAT,
        "dataset": dataset,
        "num_classes": C.num_classes(dataset),
        "class_names": list(C.class_names(dataset)),
        "splits": {
            s: {"list": f"lists/{s}.txt", "records": f"lists/records_{s}.json", "images": len(records[s])}
            for s in SPLITS
        },
        "fold_lists": {cs: fold_list_dir(dataset, cs) for cs in class_splits(dataset)},
        "folds": fold_counts,
        "min_class_pixels": C.MIN_CLASS_PIXELS,
        "created_by": f"fssam-bench {__version__}",
        **meta,
    }
    write_text_atomic(root / "dataset.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def link_or_copy_dir(
    src: Path, dst: Path, copy: bool, files: Iterable[str] | None = None, progress: bool = False
) -> None:
    """Make ``dst`` a symlink to ``src`` (absolute), or copy the named ``files`` (all if None; a
    progress bar with ``progress``)."""
    if not copy:
        os.symlink(Path(src).resolve(), dst, target_is_directory=True)
        return
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    names = sorted(files) if files is not None else sorted(p.name for p in Path(src).iterdir())
    for name in tqdm(names, desc=f"copying {Path(src).name}", unit="img", disable=not progress, leave=False):
        shutil.copy2(Path(src) / name, dst / name)


class PreparedDataset:
    """Read access to a prepared root: metadata, records, images and labels."""

    def __init__(self, root: Path):
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not self.root.is_dir():
            raise FssBenchError(f"{self.root}: data root not found; run `fssbench data prepare ...` first")
        if not meta_path.is_file():
            raise FssBenchError(
                f"{self.root}: not a prepared data root (no dataset.json); run `fssbench data prepare` to make one"
            )
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise FssBenchError(f"{meta_path}: corrupt ({e}); re-run `fssbench data prepare`") from None
        if self.meta.get("format") != FORMAT:
            raise FssBenchError(
                f"{meta_path}: format {self.meta.get('format')!r} is not {FORMAT!r}; re-prepare"
            )
        self.dataset: str = self.meta["dataset"]
        self.num_classes: int = int(self.meta["num_classes"])
        self._records: dict[str, list[ImageRecord]] = {}

    def records_path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.root / self.meta["splits"][split]["records"]

    def records(self, split: str) -> list[ImageRecord]:
        if split not in self._records:
            self._records[split] = read_records(self.records_path(split))
        return self._records[split]

    def load_image(self, rel: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        return read_image(self.root / rel)

    def load_label(self, rel: str) -> np.ndarray:
        """(H, W) uint8 class ids, 255 = ignore."""
        return read_label(self.root / rel)
