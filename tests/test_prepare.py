"""Preparation of PASCAL-5i and COCO-20i from raw files, checked against independent recomputation."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from pycocotools.coco import COCO

from benchmark.data import classes as C


def read_ids(p: Path) -> list[str]:
    return [x.strip() for x in p.read_text().splitlines() if x.strip()]


def png(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p))


def test_pascal_lists_follow_the_voc_sbd_merge_rule(pascal_raw, pascal_root):
    voc = pascal_raw / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    sbd = pascal_raw / "benchmark_RELEASE/dataset"
    voc_train, voc_val, sbd_train = (
        read_ids(voc / "train.txt"),
        read_ids(voc / "val.txt"),
        read_ids(sbd / "train.txt"),
    )
    expected_train = list(dict.fromkeys(voc_train + [i for i in sbd_train if i not in set(voc_val)]))
    lines = (pascal_root / "lists/train.txt").read_text().splitlines()
    assert lines == [f"JPEGImages/{i}.jpg SegmentationClassAug/{i}.png" for i in expected_train]
    assert len(expected_train) < len(voc_train) + len(sbd_train)  # duplicates and val images were removed
    val_lines = (pascal_root / "lists/val.txt").read_text().splitlines()
    assert [ln.split()[0][len("JPEGImages/") : -4] for ln in val_lines] == voc_val


def test_pascal_masks_come_from_voc_png_else_sbd_mat(pascal_raw, pascal_root):
    voc_dir = pascal_raw / "VOCdevkit/VOC2012"
    sbd_dir = pascal_raw / "benchmark_RELEASE/dataset"
    voc_ids = set(read_ids(voc_dir / "ImageSets/Segmentation/trainval.txt"))
    seen_sbd = seen_voc = 0
    for line in (pascal_root / "lists/train.txt").read_text().splitlines()[::3]:
        image_id = Path(line.split()[0]).stem
        aug = Image.open(pascal_root / "SegmentationClassAug" / f"{image_id}.png")
        assert aug.mode == "L"
        if image_id in voc_ids:
            expected = png(voc_dir / "SegmentationClass" / f"{image_id}.png")  # palette indices
            seen_voc += 1
        else:
            expected = scipy.io.loadmat(sbd_dir / "cls" / f"{image_id}.mat")["GTcls"][0]["Segmentation"][0]
            seen_sbd += 1
        assert np.array_equal(np.asarray(aug), expected)
        img = Image.open(pascal_root / "JPEGImages" / f"{image_id}.jpg")  # through the symlink
        assert img.size == aug.size
    assert seen_voc > 0 and seen_sbd > 0


def fold_lists_by_hand(root: Path, split: str, classes: set[int], train: bool) -> tuple[list[str], dict]:
    """PFENet make_dataset recomputed from the mask PNGs with plain numpy."""
    images, sub = [], {c: [] for c in sorted(classes)}
    for line in (root / f"lists/{split}.txt").read_text().splitlines():
        img, lab = line.split()
        label = png(root / lab)
        present = set(np.unique(label).tolist()) - {0, 255}
        if train and not present <= classes:
            continue
        counted = [c for c in sorted(present & classes) if (label == c).sum() >= 2048]
        if counted:
            images.append(line)
            for c in counted:
                sub[c].append([img, lab])
    return images, sub


def test_pascal_fold_lists_match_pfenet_rules(pascal_root):
    for fold in (0, 3):
        novel, base = set(C.novel_classes("pascal", fold)), set(C.base_classes("pascal", fold))
        for split, classes, train in (("val", novel, False), ("train", base, True)):
            images, sub = fold_lists_by_hand(pascal_root, split, classes, train)
            d = pascal_root / "lists/fss_list" / split
            assert (d / f"data_list_{fold}.txt").read_text().splitlines() == images
            assert ast.literal_eval((d / f"sub_class_file_list_{fold}.txt").read_text()) == sub
            assert images  # non-trivial


def coco_mask_by_hand(coco: COCO, img: dict) -> np.ndarray:
    """The documented overlap rule, recomputed with pycocotools' own annToMask."""
    remap = {cid: i + 1 for i, cid in enumerate(sorted(coco.getCatIds()))}
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]], iscrowd=None))
    label = np.zeros((img["height"], img["width"]), np.uint8)
    for a in anns:
        if a["iscrowd"]:
            label[coco.annToMask(a) > 0] = 255
    things = [(coco.annToMask(a), a) for a in anns if not a["iscrowd"]]
    for m, a in sorted(things, key=lambda t: (-int(t[0].sum()), t[1]["id"])):
        label[m > 0] = remap[a["category_id"]]
    return label


def test_coco_masks_classes_and_crowd(coco_raw, coco_root, capsys):
    coco = COCO(str(coco_raw / "annotations/instances_val2014.json"))
    capsys.readouterr()
    imgs = sorted(coco.loadImgs(coco.getImgIds()), key=lambda im: im["file_name"])
    lines = (coco_root / "lists/val.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == [f"val2014/{im['file_name']}" for im in imgs]
    n_crowd = 0
    for im in imgs[::4]:
        stem = Path(im["file_name"]).stem
        got = png(coco_root / "annotations/val2014" / f"{stem}.png")
        expected = coco_mask_by_hand(coco, im)
        assert np.array_equal(got, expected), stem
        n_crowd += int((got == 255).any())
    assert n_crowd > 0
    assert sorted(coco.getCatIds()) == [cid for cid, _, _ in C.COCO_CATEGORIES]


def test_coco_has_both_class_splits(coco_root):
    meta = json.loads((coco_root / "dataset.json").read_text())
    assert meta["fold_lists"] == {"interleaved": "lists/fss_list", "contiguous": "lists/fss_list_contiguous"}
    for cs, rel in meta["fold_lists"].items():
        for fold in range(4):
            sub = ast.literal_eval((coco_root / rel / "val" / f"sub_class_file_list_{fold}.txt").read_text())
            assert sorted(sub) == C.novel_classes("coco", fold, cs)
            assert all(len(v) >= 6 for v in sub.values())  # enough for 5-shot episodes


def test_synth_prepare_check_is_clean_for_both_datasets(pascal_root, coco_root):
    """The synthetic data is rich enough for every fold's lists of both class splits: the checker
    (unchanged, as strict as for real data) finds nothing, so every base class has train images."""
    from benchmark.data.check import check_prepared

    for root in (pascal_root, coco_root):
        report = check_prepared(root, progress=False)
        assert report.ok, report.problems
    for split in ("fss_list", "fss_list_contiguous"):
        for fold in range(4):
            sub = ast.literal_eval(
                (coco_root / "lists" / split / "train" / f"sub_class_file_list_{fold}.txt").read_text()
            )
            assert all(sub[c] for c in sub), (split, fold)
