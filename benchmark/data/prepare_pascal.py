"""Build a PASCAL-5i data root from raw VOC2012 and SBD downloads.

* ``SegmentationClassAug/<id>.png`` (grayscale, 0..20, 255 = ignore) for every image of the train and
  val lists: the VOC ``SegmentationClass`` PNG where VOC has one (it carries the 255 boundary band
  and is the official ground truth), otherwise the SBD ``cls/<id>.mat`` ``GTcls.Segmentation``.
* train list = VOC ``train.txt`` + SBD ``train_noval.txt`` (or SBD ``train.txt`` minus the VOC val
  images when ``train_noval.txt`` is absent), duplicates removed keeping the first occurrence
  (PFENet's ``voc_sbd_merge_noduplicate.txt``: 1,464 + 5,623 -> 5,953 on the real data).
* val list = VOC ``val.txt`` (1,449), in file order (the PFENet family iterates it in this order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from benchmark.data.classes import PASCAL_CLASSES
from benchmark.data.images import check_label_values, class_pixel_counts, read_image, read_label, write_label
from benchmark.data.lists import ImageRecord
from benchmark.data.prepared import default_workers, link_or_copy_dir, parallel_map, write_prepared_root
from benchmark.errors import FssBenchError
from benchmark.io_utils import atomic_directory

NUM_CLASSES = len(PASCAL_CLASSES)


def resolve_voc(path: Path) -> Path:
    """The VOC2012 folder given ``--voc`` (VOC2012 itself, VOCdevkit, or their parent)."""
    p = Path(path)
    if not p.is_dir():
        raise FssBenchError(f"--voc {p}: directory not found")
    for cand in (p, p / "VOC2012", p / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    raise FssBenchError(
        f"--voc {p}: no VOC2012 folder (expected JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/ "
        "there or in VOC2012/ or VOCdevkit/VOC2012/ below it)"
    )


def resolve_sbd(path: Path) -> Path:
    """The SBD ``dataset`` folder given ``--sbd`` (``dataset`` itself or ``benchmark_RELEASE``)."""
    p = Path(path)
    if not p.is_dir():
        raise FssBenchError(f"--sbd {p}: directory not found")
    for cand in (p, p / "dataset", p / "benchmark_RELEASE" / "dataset"):
        if (cand / "cls").is_dir():
            return cand
    raise FssBenchError(
        f"--sbd {p}: no SBD dataset folder (expected cls/ and train.txt there or in dataset/ below it)"
    )


def read_id_list(path: Path) -> list[str]:
    """Image ids, one per line (blank lines ignored)."""
    if not path.is_file():
        raise FssBenchError(f"{path}: list file not found")
    ids = [line.strip().split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise FssBenchError(f"{path}: list is empty")
    return ids


def read_sbd_mat(path: Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file as (H, W) uint8."""
    if not path.is_file():
        raise FssBenchError(f"{path}: SBD annotation not found")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
        seg = np.asarray(mat["GTcls"].Segmentation)
    except (KeyError, AttributeError):
        raise FssBenchError(f"{path}: not an SBD class annotation (no GTcls.Segmentation)") from None
    except Exception as e:  # scipy raises a variety of errors on corrupt files
        raise FssBenchError(f"{path}: unreadable SBD .mat file ({e})") from None
    if seg.ndim != 2 or seg.size == 0 or seg.min() < 0 or seg.max() > 255:
        raise FssBenchError(f"{path}: GTcls.Segmentation must be a 2-D array of class ids 0..{NUM_CLASSES}")
    return seg.astype(np.uint8)


def merged_train_ids(voc_train: list[str], sbd_train: list[str], voc_val: list[str]) -> list[str]:
    """VOC train then SBD train, VOC val images removed, duplicates dropped (first one kept)."""
    val = set(voc_val)
    seen: set[str] = set()
    out = []
    for i in [*voc_train, *(s for s in sbd_train if s not in val)]:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def _prepare_one(task: tuple[str, str, str, str, str]) -> ImageRecord:
    """Decode one image and its label, validate them, write the aug mask. Runs in a worker."""
    image_id, img_path, kind, src_path, out_path = task
    img = read_image(Path(img_path))
    label = read_label(Path(src_path)) if kind == "voc" else read_sbd_mat(Path(src_path))
    h, w = img.shape[:2]
    if label.shape != (h, w):
        raise FssBenchError(
            f"{src_path}: mask size {label.shape[1]}x{label.shape[0]} differs from image {img_path} ({w}x{h})"
        )
    check_label_values(label, NUM_CLASSES, Path(src_path))
    write_label(Path(out_path), label)
    return ImageRecord(
        id=image_id,
        image=f"JPEGImages/{image_id}.jpg",
        label=f"SegmentationClassAug/{image_id}.png",
        height=h,
        width=w,
        pixels=class_pixel_counts(label),
    )


def prepare_pascal(
    voc: Path,
    sbd: Path,
    out: Path,
    workers: int | None = None,
    overwrite: bool = False,
    copy_images: bool = False,
    progress: bool = True,
) -> dict:
    """Prepare a PASCAL-5i root at ``out`` (atomically: nothing is left behind on failure)."""
    voc_dir, sbd_dir = resolve_voc(voc), resolve_sbd(sbd)
    seg_sets = voc_dir / "ImageSets" / "Segmentation"
    voc_train = read_id_list(seg_sets / "train.txt")
    voc_val = read_id_list(seg_sets / "val.txt")
    noval = sbd_dir / "train_noval.txt"
    sbd_list = noval if noval.is_file() else sbd_dir / "train.txt"
    sbd_train = read_id_list(sbd_list)
    train_ids = merged_train_ids(voc_train, sbd_train, voc_val)
    voc_labelled = set(voc_train) | set(voc_val)

    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "SegmentationClassAug").mkdir()
        tasks = []
        for image_id in dict.fromkeys([*voc_val, *train_ids]):
            img = voc_dir / "JPEGImages" / f"{image_id}.jpg"
            if image_id in voc_labelled:
                kind, src = "voc", voc_dir / "SegmentationClass" / f"{image_id}.png"
            else:
                kind, src = "sbd", sbd_dir / "cls" / f"{image_id}.mat"
            tasks.append(
                (image_id, str(img), kind, str(src), str(tmp / "SegmentationClassAug" / f"{image_id}.png"))
            )
        recs = parallel_map(_prepare_one, tasks, workers or default_workers(), "pascal masks", progress)
        by_id = {r.id: r for r in recs}
        link_or_copy_dir(
            voc_dir / "JPEGImages", tmp / "JPEGImages", copy_images, [f"{i}.jpg" for i in by_id], progress
        )
        info = write_prepared_root(
            tmp,
            "pascal",
            {"train": [by_id[i] for i in train_ids], "val": [by_id[i] for i in voc_val]},
            {
                "sources": {
                    "voc": str(voc_dir.resolve()),
                    "sbd": str(sbd_dir.resolve()),
                    "sbd_train_list": sbd_list.name,
                },
                "label_rule": "VOC SegmentationClass where available, else SBD cls/*.mat",
                "images": "copied" if copy_images else "symlinked",
            },
            progress,
        )
    return info
