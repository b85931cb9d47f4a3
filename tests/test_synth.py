"""The synthetic PASCAL (VOC2012 + SBD) and COCO 2014 datasets, checked from the files written."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from pycocotools.coco import COCO
from scipy import ndimage

from benchmark.data.classes import COCO_CATEGORIES, MIN_CLASS_PIXELS, novel_classes
from benchmark.data.synth import synth_coco, synth_pascal
from benchmark.data.synth_shapes import SHAPES, TEXTURES, class_style

# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def pascal(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("pascal")
    return synth_pascal(out)


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("coco")
    return synth_coco(out)


def _lines(path: Path) -> list[str]:
    return path.read_text().split()


def _png(voc: Path, i: str) -> np.ndarray:
    return np.asarray(Image.open(voc / "SegmentationClass" / f"{i}.png"))


def _sbd_seg(sbd: Path, i: str) -> np.ndarray:
    return scipy.io.loadmat(sbd / "cls" / f"{i}.mat", squeeze_me=True, struct_as_record=False)[
        "GTcls"
    ].Segmentation


def _voc_colormap() -> np.ndarray:
    """Independent re-statement of the VOC colour map (bit-interleaving of the index)."""
    cmap = []
    for i in range(256):
        rgb = [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((i >> (3 * j + ch)) & 1) << (7 - j)
        cmap.append(rgb)
    return np.array(cmap, dtype=np.uint8)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    small_p = {"n_voc_train": 6, "n_voc_val": 6, "n_sbd": 12}
    small_c = {"n_train": 6, "n_val": 6}
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        (tmp_path / name / "p").mkdir(parents=True)
        (tmp_path / name / "c").mkdir(parents=True)
        synth_pascal(tmp_path / name / "p", seed=seed, **small_p)
        synth_coco(tmp_path / name / "c", seed=seed, **small_c)
        runs[name] = _all_files(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert any(p.endswith(".mat") for p in runs["a"])
    assert any(p.endswith(".png") for p in runs["a"])
    assert any(p.endswith(".json") for p in runs["a"])
    a, c = runs["a"], runs["c"]
    json_a = [v for k, v in a.items() if k.endswith("instances_val2014.json")]
    json_c = [v for k, v in c.items() if k.endswith("instances_val2014.json")]
    assert json_a != json_c
    assert sorted(k for k in a if "JPEGImages" in k) != sorted(k for k in c if "JPEGImages" in k)


# ------------------------------------------------------------------------------------------- PASCAL


def test_pascal_layout_and_lists(pascal: dict) -> None:
    voc, sbd = pascal["voc"], pascal["sbd"]
    sets = voc / "ImageSets" / "Segmentation"
    train, val, trainval = (_lines(sets / f"{s}.txt") for s in ("train", "val", "trainval"))
    assert len(train) == 80 and len(val) == 100
    assert sorted(train + val) == trainval
    assert not set(train) & set(val)
    sbd_train, sbd_val = _lines(sbd / "train.txt"), _lines(sbd / "val.txt")
    assert len(sbd_train) + len(sbd_val) == 120
    jpegs = {p.stem for p in (voc / "JPEGImages").glob("*.jpg")}
    for i in jpegs:
        assert re.fullmatch(r"20(0[7-9]|1[01])_\d{6}", i), i
    assert set(trainval) <= jpegs and set(sbd_train + sbd_val) <= jpegs
    extras = jpegs - set(trainval) - set(sbd_train) - set(sbd_val)
    assert len(extras) >= 2  # detection-only images in no list
    assert {p.stem for p in (voc / "SegmentationClass").glob("*.png")} == set(trainval)
    assert {p.stem for p in (sbd / "cls").glob("*.mat")} == set(sbd_train + sbd_val)
    for i in sbd_train[:10] + sbd_val[:10]:
        assert (sbd / "img" / f"{i}.jpg").read_bytes() == (voc / "JPEGImages" / f"{i}.jpg").read_bytes()
    sizes = set()
    for i in sorted(jpegs)[:60]:
        im = Image.open(voc / "JPEGImages" / f"{i}.jpg")
        assert im.format == "JPEG" and im.mode == "RGB"
        w, h = im.size
        assert w != h and 200 <= w <= 320 and 180 <= h <= 300
        sizes.add(im.size)
    assert len(sizes) > 30


def test_voc_png_format(pascal: dict) -> None:
    voc = pascal["voc"]
    cmap = _voc_colormap()
    assert tuple(cmap[1]) == (128, 0, 0) and tuple(cmap[255]) == (224, 224, 192)
    ids = _lines(voc / "ImageSets" / "Segmentation" / "trainval.txt")
    for i in ids[::6]:
        im = Image.open(voc / "SegmentationClass" / f"{i}.png")
        assert im.format == "PNG" and im.mode == "P"
        pal = np.array(im.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
        assert np.array_equal(pal, cmap)
        assert im.size == Image.open(voc / "JPEGImages" / f"{i}.jpg").size
        a = np.asarray(im)
        values = set(np.unique(a).tolist())
        assert values <= set(range(21)) | {255}
        assert 255 in values and len(values - {0, 255}) >= 1
        # the 255 band separates every pair of different labels by at least 4 pixels
        for d in range(1, 5):
            for x, y in ((a[:, :-d], a[:, d:]), (a[:-d, :], a[d:, :])):
                assert not np.any((x != y) & (x != 255) & (y != 255)), (i, d)
        # ... and is about 4-5 px wide: band pixels lie within 2 px of a labelled pixel, except in
        # narrow gaps and thin parts of objects
        band = a == 255
        dist = ndimage.distance_transform_cdt(band, metric="chessboard")[band]
        assert np.mean(dist <= 2) >= 0.9 and dist.max() <= 6, i


def test_sbd_mat_loads_both_ways(pascal: dict) -> None:
    sbd, voc = pascal["sbd"], pascal["voc"]
    ids = _lines(sbd / "train.txt")[::7] + _lines(sbd / "val.txt")[::7]
    for i in ids:
        p = sbd / "cls" / f"{i}.mat"
        gt = scipy.io.loadmat(p, squeeze_me=True, struct_as_record=False)["GTcls"]
        seg = gt.Segmentation
        classic = scipy.io.loadmat(p)["GTcls"][0]["Segmentation"][0]
        assert seg.dtype == np.uint8 and seg.ndim == 2
        assert np.array_equal(seg, classic)
        w, h = Image.open(voc / "JPEGImages" / f"{i}.jpg").size
        assert seg.shape == (h, w)
        assert seg.max() <= 20 and 255 not in seg
        present = np.atleast_1d(gt.CategoriesPresent)  # squeeze_me turns a single class into a scalar
        classic_present = scipy.io.loadmat(p)["GTcls"][0]["CategoriesPresent"][0]
        assert classic_present.dtype == np.uint8
        assert classic_present.ravel().tolist() == present.tolist()
        assert sorted(present.tolist()) == sorted(set(np.unique(seg).tolist()) - {0})
        assert len(gt.Boundaries) == 20
        for c in range(1, 21):
            edge = gt.Boundaries[c - 1]
            edge = edge.toarray() if hasattr(edge, "toarray") else np.asarray(edge)
            assert edge.shape == (h, w)
            assert bool(edge.any()) == (c in present)
            assert np.all(seg[edge.astype(bool)] == c)


def test_sbd_voc_overlaps(pascal: dict) -> None:
    voc, sbd = pascal["voc"], pascal["sbd"]
    sets = voc / "ImageSets" / "Segmentation"
    train, val = set(_lines(sets / "train.txt")), set(_lines(sets / "val.txt"))
    sbd_train, sbd_val = set(_lines(sbd / "train.txt")), set(_lines(sbd / "val.txt"))
    assert len(sbd_train & train) >= 5  # duplicates to be removed
    assert len(sbd_train & val) >= 5  # must be excluded from training
    assert len((sbd_train | sbd_val) - train - val) >= 50  # SBD-only
    assert not sbd_train & sbd_val
    for i in sorted((sbd_train | sbd_val) & (train | val)):
        png, seg = _png(voc, i), _sbd_seg(sbd, i)
        keep = png != 255
        assert np.array_equal(png[keep], seg[keep])  # same objects, SBD without the band
        assert set(np.unique(seg).tolist()) - {0} == set(np.unique(png).tolist()) - {0, 255}


def _class_counts(label: np.ndarray) -> np.ndarray:
    return np.bincount(label.ravel(), minlength=256)[:256]


def test_pascal_coverage_purity_and_small_objects(pascal: dict) -> None:
    voc, sbd = pascal["voc"], pascal["sbd"]
    sets = voc / "ImageSets" / "Segmentation"
    train, val = _lines(sets / "train.txt"), _lines(sets / "val.txt")
    sbd_ids = _lines(sbd / "train.txt") + _lines(sbd / "val.txt")
    labels = {i: _png(voc, i) for i in train}
    labels.update({i: _sbd_seg(sbd, i) for i in sbd_ids if i not in set(train) | set(val)})

    val_hits, train_hits = Counter(), Counter()
    small = 0
    for i in val:
        counts = _class_counts(_png(voc, i))
        val_hits.update(c for c in range(1, 21) if counts[c] >= MIN_CLASS_PIXELS)
    for label in labels.values():
        counts = _class_counts(label)
        train_hits.update(c for c in range(1, 21) if counts[c] >= MIN_CLASS_PIXELS)
        small += sum(1 for c in range(1, 21) if 0 < counts[c] < MIN_CLASS_PIXELS)
    assert min(val_hits[c] for c in range(1, 21)) >= 8, val_hits
    assert min(train_hits[c] for c in range(1, 21)) >= 4, train_hits
    assert small >= 10  # classes below the PFENet-family pixel threshold
    # for every fold, many training images hold base classes only (survive novel-class exclusion)
    for fold in range(4):
        novel = set(novel_classes("pascal", fold))
        base_only = [
            i for i, label in labels.items() if not (set(np.unique(label).tolist()) - {0, 255}) & novel
        ]
        assert len(base_only) >= 40, fold
        multi = [i for i in base_only if len(set(np.unique(labels[i]).tolist()) - {0, 255}) >= 2]
        assert len(multi) >= 10, fold


def _mean_colour_separation(samples: list[tuple[int, np.ndarray]]) -> tuple[float, float]:
    """Mean distance of mean colours of objects of the same class, and of different classes."""
    cls = np.array([c for c, _ in samples])
    col = np.stack([m for _, m in samples])
    d = np.linalg.norm(col[:, None, :] - col[None, :, :], axis=-1)
    same = cls[:, None] == cls[None, :]
    off = ~np.eye(len(cls), dtype=bool)
    return float(d[same & off].mean()), float(d[~same].mean())


def test_pascal_same_class_looks_alike(pascal: dict) -> None:
    voc = pascal["voc"]
    samples = []
    for i in _lines(voc / "ImageSets" / "Segmentation" / "val.txt"):
        img = np.asarray(Image.open(voc / "JPEGImages" / f"{i}.jpg"), dtype=np.float64)
        label = _png(voc, i)
        for c in set(np.unique(label).tolist()) - {0, 255}:
            m = label == c
            if m.sum() >= 300:
                samples.append((c, img[m].mean(axis=0)))
    same, diff = _mean_colour_separation(samples)
    assert same < 0.5 * diff, (same, diff)


# --------------------------------------------------------------------------------------------- COCO


def _load(coco_root: Path, split: str) -> COCO:
    return COCO(str(coco_root / "annotations" / f"instances_{split}2014.json"))


def test_coco_json_and_segmentation_kinds(coco: dict) -> None:
    root = coco["coco"]
    all_image_ids, all_ann_ids = [], []
    kinds = Counter()
    for split, n in (("train", 160), ("val", 240)):
        raw = json.loads((root / "annotations" / f"instances_{split}2014.json").read_text())
        assert set(raw) == {"info", "licenses", "images", "annotations", "categories"}
        assert [(c["id"], c["name"], c["supercategory"]) for c in raw["categories"]] == list(COCO_CATEGORIES)
        api = _load(root, split)
        assert len(api.getImgIds()) == n
        imgs = api.loadImgs(api.getImgIds())
        all_image_ids += [im["id"] for im in imgs]
        all_ann_ids += list(api.getAnnIds())
        assert any(not api.getAnnIds(imgIds=im["id"]) for im in imgs)  # an image without annotations
        crowd_images = set()
        for im in imgs:
            assert im["file_name"] == f"COCO_{split}2014_{im['id']:012d}.jpg"
            jpg = Image.open(root / f"{split}2014" / im["file_name"])
            assert jpg.mode == "RGB" and jpg.size == (im["width"], im["height"])
            h, w = im["height"], im["width"]
            for ann in api.loadAnns(api.getAnnIds(imgIds=im["id"], iscrowd=None)):
                m = api.annToMask(ann)
                assert m.shape == (h, w) and m.any()
                assert ann["area"] == pytest.approx(float(m.sum()))
                ys, xs = np.nonzero(m)
                assert ann["bbox"] == pytest.approx(
                    [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                )
                segm = ann["segmentation"]
                if ann["iscrowd"]:
                    assert isinstance(segm["counts"], list) and segm["size"] == [h, w]
                    # uncompressed RLE, column-major, starting with a run of zeros
                    runs = np.array(segm["counts"])
                    flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8)
                    assert np.array_equal(flat.reshape(w, h).T, m)
                    kinds["crowd"] += 1
                    crowd_images.add(im["id"])
                elif isinstance(segm, dict):
                    assert isinstance(segm["counts"], str) and segm["size"] == [h, w]
                    kinds["rle"] += 1
                else:
                    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in segm)
                    kinds[f"polygon{len(segm)}"] += 1
        assert len(crowd_images) >= 3, split
    assert kinds["polygon1"] > kinds["rle"] >= 20 and kinds["polygon2"] >= 20, kinds
    assert all(i > 0 for i in all_image_ids + all_ann_ids)
    assert len(set(all_image_ids)) == len(all_image_ids)
    assert len(set(all_ann_ids)) == len(all_ann_ids)


def _coco_labels(api: COCO, first_wins: bool = False) -> dict[int, np.ndarray]:
    """Class-id maps (contiguous ids 1..80) from the non-crowd annotations, in file order."""
    cat_to_cls = {cid: k + 1 for k, (cid, _, _) in enumerate(COCO_CATEGORIES)}
    out = {}
    for im in api.loadImgs(api.getImgIds()):
        label = np.zeros((im["height"], im["width"]), dtype=np.uint8)
        anns = api.loadAnns(api.getAnnIds(imgIds=im["id"], iscrowd=False))
        for ann in reversed(anns) if first_wins else anns:
            label[api.annToMask(ann) > 0] = cat_to_cls[ann["category_id"]]
        out[im["id"]] = label
    return out


def test_coco_coverage_and_overlaps(coco: dict) -> None:
    root = coco["coco"]
    for split, need in (("train", 4), ("val", 8)):
        api = _load(root, split)
        for first_wins in (False, True):
            hits = Counter()
            for label in _coco_labels(api, first_wins).values():
                counts = _class_counts(label)
                hits.update(c for c in range(1, 81) if counts[c] >= MIN_CLASS_PIXELS)
            assert min(hits[c] for c in range(1, 81)) >= need, (split, first_wins, hits.most_common()[-3:])
        overlapping = 0
        small = 0
        for img_id in api.getImgIds():
            anns = api.loadAnns(api.getAnnIds(imgIds=img_id, iscrowd=False))
            masks = [api.annToMask(a).astype(bool) for a in anns]
            overlapping += any(
                (masks[a] & masks[b]).any() and anns[a]["category_id"] != anns[b]["category_id"]
                for a in range(len(anns))
                for b in range(a + 1, len(anns))
            )
            per_class = defaultdict(int)
            for a, m in zip(anns, masks, strict=True):
                per_class[a["category_id"]] += int(m.sum())
            small += sum(1 for v in per_class.values() if v < MIN_CLASS_PIXELS)
        assert overlapping >= 10, split
        assert small >= 5, split


def test_coco_same_class_looks_alike(coco: dict) -> None:
    root = coco["coco"]
    api = _load(root, "val")
    cat_to_cls = {cid: k + 1 for k, (cid, _, _) in enumerate(COCO_CATEGORIES)}
    labels = _coco_labels(api)
    samples = []
    for im in api.loadImgs(api.getImgIds()[:120]):
        img = np.asarray(Image.open(root / "val2014" / im["file_name"]), dtype=np.float64)
        label = labels[im["id"]]
        for cid in {a["category_id"] for a in api.loadAnns(api.getAnnIds(imgIds=im["id"], iscrowd=False))}:
            m = ndimage.binary_erosion(label == cat_to_cls[cid], iterations=2)
            if m.sum() >= 300:
                samples.append((cat_to_cls[cid], img[m].mean(axis=0)))
    same, diff = _mean_colour_separation(samples)
    assert same < 0.5 * diff, (same, diff)


def test_class_styles_unique() -> None:
    styles = [class_style(c) for c in range(1, 81)]
    assert len({(s.shape, round(s.hue, 6), s.texture) for s in styles}) == 80
    assert {s.shape for s in styles} == set(SHAPES) and {s.texture for s in styles} == set(TEXTURES)
