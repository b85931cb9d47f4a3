"""Small synthetic datasets in exactly the raw on-disk formats of PASCAL VOC2012 + SBD and COCO 2014.

The files are meant to be read by the project's real data preparation (the code that reads real
VOC2012/SBD/COCO-2014 downloads), so that tests and the demo exercise it end to end.

Layouts written (``OUT`` is the folder passed in):

PASCAL (:func:`synth_pascal`)
    ``OUT/VOCdevkit/VOC2012/JPEGImages/{id}.jpg``            every image (VOC seg sets, SBD, extras)
    ``OUT/VOCdevkit/VOC2012/SegmentationClass/{id}.png``     palette PNG, 0 / 1..20 / 255 band
    ``OUT/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt``
    ``OUT/benchmark_RELEASE/dataset/cls/{id}.mat``           SBD ``GTcls`` struct (v5 MAT, compressed)
    ``OUT/benchmark_RELEASE/dataset/img/{id}.jpg``           same bytes as in JPEGImages
    ``OUT/benchmark_RELEASE/dataset/{train,val}.txt``        SBD's own split

COCO (:func:`synth_coco`)
    ``OUT/{train2014,val2014}/COCO_{split}2014_{image_id:012d}.jpg``
    ``OUT/annotations/instances_{train,val}2014.json``

Properties a reader can rely on (with the default sizes; by balanced round-robin class assignment and
layout retries, tested for seed 0 in tests/test_synth.py and checked by hand for seeds 1, 2, 3, 17):

* every class has >= MIN_CLASS_PIXELS pixels of its own label (after the 255 band for VOC) in at least 8
  validation images (VOC val / val2014) and at least 4 training images;
* PASCAL training images (VOC train and SBD-only) include "pure" images whose classes all lie in one group
  of five (one fold's novel set), so some survive any fold's novel-class exclusion;
* COCO annotations of an image are listed in paint order: where two annotation masks overlap, the later
  one is what the image shows. Every guaranteed (image, class) pair also has an instance with
  >= MIN_CLASS_PIXELS pixels that no other annotation covers, so the coverage holds under any overlap rule.

Everything is deterministic: the same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage
from tqdm import tqdm

from benchmark.data import synth_shapes as shapes
from benchmark.data.classes import COCO_CATEGORIES, IGNORE_LABEL, MIN_CLASS_PIXELS, PASCAL_CLASSES

JPEG_QUALITY = 90
BAND_SIZE = 5  # VOC ignore band: pixels within 2 px of an instance boundary (a band ~4-5 px wide)
MIN_VAL_IMAGES = 8  # coverage guarantee per class (defaults): validation images ...
MIN_TRAIN_IMAGES = 4  # ... and training images with >= MIN_CLASS_PIXELS own pixels
PASCAL_SIZE = ((200, 320), (180, 300))  # (width range, height range), inclusive
COCO_SIZE = ((240, 340), (200, 300))
COCO_CROWD_ID_BASE = 900100000000  # real COCO crowd annotation ids start here

_TAG_PASCAL, _TAG_COCO = 1, 2
_MARGIN = 1.15  # guaranteed classes get >= _MARGIN * MIN_CLASS_PIXELS pixels
_ATTEMPTS = 24
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: synthetic (fssam-bench)"


# --------------------------------------------------------------------------------------------- plans


@dataclass
class _Plan:
    """What one image must contain."""

    large: list[int] = field(default_factory=list)  # guaranteed classes (one large instance each)
    small: list[int] = field(default_factory=list)  # classes present only with small instances
    crowd: bool = False  # add a crowd region (COCO)


def _take(rng: np.random.Generator, queue: deque, pool: Sequence[int], exclude: list[int]) -> int:
    """Pop the first class of ``queue`` not in ``exclude``; the queue is refilled with permutations of
    ``pool`` (round-robin), so classes are used in a balanced way."""
    i = 0
    while True:
        while i >= len(queue):
            queue.extend(int(c) for c in rng.permutation(np.asarray(pool)))
        if queue[i] not in exclude:
            c = queue[i]
            del queue[i]
            return c
        i += 1


def _balanced_plans(
    rng: np.random.Generator,
    n: int,
    n_classes: int,
    weights: tuple[float, float, float],
    min_per_class: int,
    small_p: float,
    groups: list[list[int]] | None = None,
    pure_frac: float = 0.0,
) -> list[_Plan]:
    """Plans for ``n`` images with 1..3 guaranteed classes each, assigned round-robin over seeded
    permutations. The total number of class slots is topped up to ``n_classes * min_per_class`` (plus a
    little), so each class is guaranteed in at least ``min_per_class`` images when ``n`` allows it."""
    if n <= 0:
        return []
    classes = list(range(1, n_classes + 1))
    ks = rng.choice([1, 2, 3], size=n, p=list(weights)).astype(int)
    target = min(n_classes * min_per_class + n_classes // 2, 3 * n)
    while ks.sum() < target:
        low = np.flatnonzero(ks < 3)
        ks[low[rng.integers(len(low))]] += 1
    pure = rng.random(n) < pure_frac if groups else np.zeros(n, dtype=bool)
    queue: deque = deque()
    group_queue: deque = deque()
    class_queues = [deque() for _ in groups or []]
    plans = []
    for k, is_pure in zip(ks.tolist(), pure.tolist(), strict=True):
        plan = _Plan()
        if is_pure:
            assert groups is not None
            g = _take(rng, group_queue, range(len(groups)), [])
            for _ in range(k):
                plan.large.append(_take(rng, class_queues[g], groups[g], plan.large))
            pool = [c for c in groups[g] if c not in plan.large]
        else:
            for _ in range(k):
                plan.large.append(_take(rng, queue, classes, plan.large))
            pool = [c for c in classes if c not in plan.large]
        if k < 3 and rng.random() < small_p:
            plan.small.append(int(pool[rng.integers(len(pool))]))
        plans.append(plan)
    return plans


# -------------------------------------------------------------------------------------------- layout


@dataclass
class _Obj:
    cls: int
    polys: list[np.ndarray]
    mask: np.ndarray  # painted pixels
    ident: int
    shade: float
    primary: bool = False
    crowd: bool = False
    encoding: str = "polygon"  # COCO: "polygon" or "rle" (compressed); crowd: uncompressed RLE
    ann_mask: np.ndarray | None = None  # crowd: the coarse annotated region (covers ``mask``)

    @property
    def annotated(self) -> np.ndarray:
        return self.mask if self.ann_mask is None else self.ann_mask


def _place(
    rng: np.random.Generator,
    polys: list[np.ndarray],
    h: int,
    w: int,
    placed: list[np.ndarray],
    near_p: float,
) -> list[np.ndarray] | None:
    """Translate polygons (centred at the origin) to a random position fully inside the image; with
    probability ``near_p`` next to an already placed object (so that objects overlap)."""
    for _ in range(8):
        pts = np.concatenate(polys)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        xr = (-lo[0] + 0.5, w - 0.5 - hi[0])
        yr = (-lo[1] + 0.5, h - 0.5 - hi[1])
        if xr[0] < xr[1] and yr[0] < yr[1]:
            break
        polys = [p * 0.9 for p in polys]
    else:
        return None
    if placed and rng.random() < near_p:
        other = placed[int(rng.integers(len(placed)))]
        a = rng.uniform(0, 2 * np.pi)
        dist = 0.55 * (np.ptp(other[:, 0]) + np.ptp(pts[:, 0])) / 2
        centre = other.mean(axis=0) + dist * np.array([np.cos(a), np.sin(a)])
        centre = np.clip(centre, [xr[0], yr[0]], [xr[1], yr[1]])
    else:
        centre = np.array([rng.uniform(*xr), rng.uniform(*yr)])
    out = []
    for p in polys:
        q = np.round(p + centre, 2)
        q[:, 0] = np.clip(q[:, 0], 0, w)
        q[:, 1] = np.clip(q[:, 1], 0, h)
        out.append(q)
    return out


def _try_layout(
    rng: np.random.Generator,
    h: int,
    w: int,
    plan: _Plan,
    grow: float,
    simple: bool,
    coco: bool,
) -> list[_Obj]:
    """One random layout of the plan, in paint order."""
    k = len(plan.large)
    hi_primary = {1: 9000.0, 2: 7500.0}.get(k, 6400.0)
    # (class, area, primary, number of polygons)
    specs: list[tuple[int, float, bool, int]] = []
    for c in plan.large:
        specs.append((c, rng.uniform(3600.0, hi_primary) * grow, True, 1))
        if not simple:
            for _ in range(int(rng.choice([0, 1, 2], p=[0.5, 0.33, 0.17]))):
                small = rng.random() < 0.4
                specs.append((c, rng.uniform(350, 1500) if small else rng.uniform(1800, 3500), False, 1))
    if not simple:
        for c in plan.small:  # small-only classes: total < MIN_CLASS_PIXELS
            n_inst = int(rng.integers(1, 3))
            for _ in range(n_inst):
                specs.append((c, rng.uniform(300, 1700) / n_inst, False, 1))
    cap = 0.5 * h * w
    while sum(s[1] for s in specs) > cap and not all(s[2] for s in specs):
        last_extra = max(i for i, s in enumerate(specs) if not s[2])
        del specs[last_extra]
    if coco:  # some objects made of two polygons (the second a smaller detached part)
        specs = [(c, a, p, 2 if rng.random() < 0.12 else 1) for c, a, p, _ in specs]
    order = rng.permutation(len(specs))

    objs: list[_Obj] = []
    placed: list[np.ndarray] = []
    if plan.crowd and not simple and plan.large:
        c = plan.large[int(rng.integers(len(plan.large)))]
        ident = int(rng.integers(shapes.N_IDENTITIES))
        style = shapes.class_style(c)
        cx, cy = rng.uniform(40, w - 40), rng.uniform(35, h - 35)
        polys = []
        for _ in range(int(rng.integers(5, 9))):
            p = shapes.shape_polygon(
                c, shapes.identity(style, ident), rng.uniform(90, 220), rng.uniform(-0.3, 0.3)
            )
            q = np.round(p + [cx + rng.uniform(-28, 28), cy + rng.uniform(-20, 20)], 2)
            polys.append(np.clip(q, 0, [w, h]))
        mask = shapes.rasterize(polys, h, w)
        ann = ndimage.binary_dilation(mask, iterations=2)
        objs.append(_Obj(c, polys, mask, ident, float(rng.uniform(0.93, 1.05)), crowd=True, ann_mask=ann))
    for i in order.tolist():
        c, area, primary, n_polys = specs[i]
        style = shapes.class_style(c)
        ident = int(rng.integers(shapes.N_IDENTITIES))
        idn = shapes.identity(style, ident)
        angle = rng.uniform(-0.3, 0.3)
        main_area = area / 1.22 if n_polys == 2 else area
        polys = [shapes.shape_polygon(c, idn, main_area, angle)]
        if n_polys == 2:
            part = shapes.shape_polygon(c, idn, area - main_area, angle)
            a = rng.uniform(0, 2 * np.pi)
            r_main = np.abs(polys[0]).max()
            r_part = np.abs(part).max()
            polys.append(part + (r_main + r_part + 3) * np.array([np.cos(a), np.sin(a)]))
        polys = _place(rng, polys, h, w, placed, near_p=0.35)
        if polys is None:
            continue
        placed.append(np.concatenate(polys))
        mask = shapes.rasterize(polys, h, w)
        if not mask.any():
            continue
        enc = "rle" if coco and rng.random() < 0.15 else "polygon"
        objs.append(_Obj(c, polys, mask, ident, float(rng.uniform(0.93, 1.05)), primary, encoding=enc))
    return objs


def _label_map(objs: list[_Obj], h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Class label (0 background) and instance map (0 background, i+1 for objs[i]); later objects
    overwrite earlier ones (paint order)."""
    label = np.zeros((h, w), dtype=np.uint8)
    inst = np.zeros((h, w), dtype=np.int32)
    for i, o in enumerate(objs):
        label[o.mask] = o.cls
        inst[o.mask] = i + 1
    return label, inst


def _voc_band(inst: np.ndarray) -> np.ndarray:
    """Pixels within BAND_SIZE // 2 of a boundary between two instances (or instance and background)."""
    return ndimage.maximum_filter(inst, size=BAND_SIZE) != ndimage.minimum_filter(inst, size=BAND_SIZE)


def _layout_ok(objs: list[_Obj], plan: _Plan, h: int, w: int, coco: bool) -> bool:
    thr = _MARGIN * MIN_CLASS_PIXELS
    if coco:
        cover = np.zeros((h, w), dtype=np.int16)
        for o in objs:
            cover += o.annotated
        best = dict.fromkeys(plan.large, 0)
        for o in objs:
            if o.primary:
                own = int(np.count_nonzero(o.mask & (cover == 1)))
                best[o.cls] = max(best[o.cls], own)
        return all(v >= thr for v in best.values())
    label, inst = _label_map(objs, h, w)
    label[_voc_band(inst)] = IGNORE_LABEL
    counts = np.bincount(label.ravel(), minlength=256)
    return all(counts[c] >= thr for c in plan.large)


def _layout(rng: np.random.Generator, h: int, w: int, plan: _Plan, coco: bool) -> list[_Obj]:
    """A layout meeting the plan's guarantees: random attempts, growing the guaranteed objects, and a
    last attempt with the guaranteed objects only."""
    objs: list[_Obj] = []
    for attempt in range(_ATTEMPTS):
        simple = attempt == _ATTEMPTS - 1
        objs = _try_layout(rng, h, w, plan, grow=1.0 + 0.04 * attempt, simple=simple, coco=coco)
        if _layout_ok(objs, plan, h, w, coco):
            break
    return objs


def _image_size(rng: np.random.Generator, size: tuple[tuple[int, int], tuple[int, int]]) -> tuple[int, int]:
    (w0, w1), (h0, h1) = size
    while True:
        w, h = int(rng.integers(w0, w1 + 1)), int(rng.integers(h0, h1 + 1))
        if abs(w - h) >= 10:
            return h, w


def _render(rng: np.random.Generator, objs: list[_Obj], h: int, w: int) -> bytes:
    """JPEG bytes of the image: background, then the objects in paint order, then slight noise."""
    img = shapes.background(rng, h, w)
    for o in objs:
        ys, xs = np.nonzero(o.mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        style = shapes.class_style(o.cls)
        fill = shapes.render_fill(style, shapes.identity(style, o.ident), (y0, x0, y1, x1), o.shade)
        m = o.mask[y0:y1, x0:x1]
        img[y0:y1, x0:x1][m] = fill[m]
    img = img + rng.normal(0.0, 0.012, size=img.shape)
    buf = io.BytesIO()
    Image.fromarray(shapes.to_uint8(img), "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _write_lines(path: Path, ids: list[str]) -> None:
    path.write_text("".join(f"{i}\n" for i in ids), encoding="ascii")


# -------------------------------------------------------------------------------------------- PASCAL


def _voc_ids(rng: np.random.Generator, n: int, top: int = 8000) -> list[str]:
    """``n`` unique VOC-like ids ``{year}_{k:06d}`` (years 2007..2011, k below ``top``), in random order."""
    seen: set[str] = set()
    ids = []
    while len(ids) < n:
        i = f"{int(rng.integers(2007, 2012))}_{int(rng.integers(1, top)):06d}"
        if i not in seen:
            seen.add(i)
            ids.append(i)
    return ids


def _voc_png(label: np.ndarray) -> bytes:
    im = Image.fromarray(label)
    im.putpalette(shapes.voc_colormap().reshape(-1).tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _sbd_mat(seg: np.ndarray) -> bytes:
    """SBD ``cls/{id}.mat``: struct ``GTcls`` with Segmentation (uint8 H x W, 0..20), Boundaries (20 x 1
    cell of sparse logical class-boundary maps) and CategoriesPresent (uint8 column of present classes)."""
    edge = ndimage.maximum_filter(seg, size=3) != ndimage.minimum_filter(seg, size=3)
    boundaries = np.empty((len(PASCAL_CLASSES), 1), dtype=object)
    for c in range(1, len(PASCAL_CLASSES) + 1):
        boundaries[c - 1, 0] = scipy.sparse.csc_matrix(edge & (seg == c))
    present = np.unique(seg)
    present = present[present > 0].astype(np.uint8).reshape(-1, 1)
    gt = {"Segmentation": seg.astype(np.uint8), "Boundaries": boundaries, "CategoriesPresent": present}
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"GTcls": gt}, do_compression=True)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")  # scipy writes a time stamp here
    return bytes(data)


@dataclass
class _PascalIds:
    """The image ids of a synthetic PASCAL: VOC's segmentation train/val sets, the SBD-only images,
    the extra JPEGs in no list, and SBD's train/val lists (with the VOC duplicates counted)."""

    voc_train: list[str]
    voc_val: list[str]
    sbd_only: list[str]
    extra: list[str]
    sbd_train: list[str]
    sbd_val: list[str]
    n_dup_train: int
    n_dup_val: int


def _pascal_ids(rng: np.random.Generator, n_voc_train: int, n_voc_val: int, n_sbd: int) -> _PascalIds:
    """Draw the ids and split them into the lists (:func:`synth_pascal`'s docstring)."""
    n_dup_train = min(n_voc_train, n_sbd // 6)
    n_dup_val = min(n_voc_val, n_sbd // 8)
    n_sbd_only = n_sbd - n_dup_train - n_dup_val
    n_extra = max(2, (n_voc_train + n_voc_val) // 30)
    ids = _voc_ids(rng, n_voc_train + n_voc_val + n_sbd_only + n_extra)
    voc_train = ids[:n_voc_train]
    voc_val = ids[n_voc_train : n_voc_train + n_voc_val]
    sbd_only = ids[n_voc_train + n_voc_val : n_voc_train + n_voc_val + n_sbd_only]
    extra = ids[n_voc_train + n_voc_val + n_sbd_only :]
    n_sbd_only_train = round(0.6 * n_sbd_only)
    sbd_train = voc_train[:n_dup_train] + voc_val[:n_dup_val] + sbd_only[:n_sbd_only_train]
    sbd_val = sbd_only[n_sbd_only_train:]
    return _PascalIds(voc_train, voc_val, sbd_only, extra, sbd_train, sbd_val, n_dup_train, n_dup_val)


def _pascal_roster(rng: np.random.Generator, ids: _PascalIds, n_cls: int) -> list[tuple[str, _Plan]]:
    """(image id, plan) of every image: train images (VOC train + SBD-only), VOC val, extras."""
    groups = [list(range(5 * g + 1, 5 * g + 6)) for g in range(n_cls // 5)]
    train_pool = ids.voc_train + ids.sbd_only
    train_plans = _balanced_plans(
        rng, len(train_pool), n_cls, (0.35, 0.4, 0.25), MIN_TRAIN_IMAGES, 0.25, groups, pure_frac=0.4
    )
    val_plans = _balanced_plans(rng, len(ids.voc_val), n_cls, (0.2, 0.45, 0.35), MIN_VAL_IMAGES, 0.25)
    extra_plans = _balanced_plans(rng, len(ids.extra), n_cls, (0.4, 0.4, 0.2), 0, 0.0)
    return list(zip(train_pool + ids.voc_val + ids.extra, train_plans + val_plans + extra_plans, strict=True))


def pascal_folders(out: Path) -> tuple[Path, Path]:
    """Make the raw VOC2012 and SBD folders under ``out``: (``out/VOCdevkit/VOC2012``,
    ``out/benchmark_RELEASE/dataset``), as the real archives unpack."""
    voc, sbd = out / "VOCdevkit" / "VOC2012", out / "benchmark_RELEASE" / "dataset"
    for d in (
        voc / "JPEGImages",
        voc / "SegmentationClass",
        voc / "ImageSets" / "Segmentation",
        sbd / "cls",
        sbd / "img",
    ):
        d.mkdir(parents=True, exist_ok=True)
    return voc, sbd


def synth_pascal(
    out: Path,
    seed: int = 0,
    n_voc_train: int = 80,
    n_voc_val: int = 100,
    n_sbd: int = 120,
    progress: bool = False,
) -> dict:
    """Write a synthetic PASCAL VOC2012 + SBD in the raw on-disk layouts under ``out``.

    ``n_voc_train`` / ``n_voc_val`` images form VOC's segmentation train / val sets. ``n_sbd`` images
    have an SBD annotation: ``n_sbd // 6`` of them are also VOC train images (duplicates),
    ``n_sbd // 8`` are VOC val images (both in SBD's train.txt), the rest are SBD-only (about 60 % in
    SBD train.txt, 40 % in val.txt). A few extra JPEGs are in no list. Where an image has both a VOC PNG
    and an SBD .mat, they describe the same objects (SBD's without the 255 band).

    Returns a summary: the raw roots ``voc`` (``out/VOCdevkit/VOC2012``) and ``sbd``
    (``out/benchmark_RELEASE/dataset``) and counts.
    """
    voc, sbd = pascal_folders(Path(out))
    rng = np.random.default_rng([seed, _TAG_PASCAL, 0])
    ids = _pascal_ids(rng, n_voc_train, n_voc_val, n_sbd)
    in_sbd = set(ids.sbd_train) | set(ids.sbd_val)
    roster = _pascal_roster(rng, ids, len(PASCAL_CLASSES))
    voc_seg = set(ids.voc_train) | set(ids.voc_val)
    for index, (img_id, plan) in enumerate(tqdm(roster, desc="synth pascal", disable=not progress)):
        irng = np.random.default_rng([seed, _TAG_PASCAL, 1, index])
        h, w = _image_size(irng, PASCAL_SIZE)
        objs = _layout(irng, h, w, plan, coco=False)
        jpeg = _render(irng, objs, h, w)
        _write_bytes(voc / "JPEGImages" / f"{img_id}.jpg", jpeg)
        label, inst = _label_map(objs, h, w)
        if img_id in voc_seg:
            voc_label = label.copy()
            voc_label[_voc_band(inst)] = IGNORE_LABEL
            _write_bytes(voc / "SegmentationClass" / f"{img_id}.png", _voc_png(voc_label))
        if img_id in in_sbd:
            _write_bytes(sbd / "img" / f"{img_id}.jpg", jpeg)
            _write_bytes(sbd / "cls" / f"{img_id}.mat", _sbd_mat(label))

    sets = voc / "ImageSets" / "Segmentation"
    _write_lines(sets / "train.txt", sorted(ids.voc_train))
    _write_lines(sets / "val.txt", sorted(ids.voc_val))
    _write_lines(sets / "trainval.txt", sorted(ids.voc_train + ids.voc_val))
    _write_lines(sbd / "train.txt", sorted(ids.sbd_train))
    _write_lines(sbd / "val.txt", sorted(ids.sbd_val))
    return {
        "voc": voc,
        "sbd": sbd,
        "n_images": len(roster),
        "n_voc_train": len(ids.voc_train),
        "n_voc_val": len(ids.voc_val),
        "n_sbd": len(in_sbd),
        "n_sbd_train": len(ids.sbd_train),
        "n_sbd_val": len(ids.sbd_val),
        "n_sbd_in_voc_train": ids.n_dup_train,
        "n_sbd_in_voc_val": ids.n_dup_val,
        "n_extra": len(ids.extra),
    }


# ---------------------------------------------------------------------------------------------- COCO


def _uncompressed_rle(m: np.ndarray) -> dict:
    """COCO uncompressed RLE of a boolean mask: run lengths in column-major order, starting with 0s."""
    h, w = m.shape
    flat = m.reshape(-1, order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat.size and flat[0] == 1:
        runs = [0, *runs]
    return {"counts": [int(r) for r in runs], "size": [h, w]}


def _coco_annotation(o: _Obj, ann_id: int, image_id: int, h: int, w: int) -> dict:
    category_id = COCO_CATEGORIES[o.cls - 1][0]
    if o.crowd:
        segm: list | dict = _uncompressed_rle(o.annotated)
        rle = mask_utils.frPyObjects(segm, h, w)
    elif o.encoding == "rle":
        rle = mask_utils.encode(np.asfortranarray(o.mask.astype(np.uint8)))
        segm = {"counts": rle["counts"].decode("ascii"), "size": [h, w]}
    else:
        segm = [p.reshape(-1).tolist() for p in o.polys]
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segm,
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": int(o.crowd),
    }


@dataclass
class _CocoIds:
    """The running annotation ids of a synthetic COCO (crowd regions have their own range)."""

    next_ann: int
    next_crowd: int


def _coco_plans(rng: np.random.Generator, split: str, n: int, min_per_class: int) -> list[_Plan]:
    """The plans of a split's ``n`` images: all but one annotated (placed at random), every 13th crowd."""
    n_cls = len(COCO_CATEGORIES)
    n_annotated = n - 1 if n >= 2 else n
    # train: half the images hold classes of one (interleaved fold, contiguous fold) cell only, so
    # every fold's train list (which drops images with any novel pixel) has every base class, for
    # both class splits; the rest mix classes freely
    cells = [
        [c for c in range(1, n_cls + 1) if (c - 1) % 4 == g and (c - 1) // 20 == h]
        for g in range(4)
        for h in range(4)
    ]
    pure = 0.5 if split == "train" else 0.0
    plans = _balanced_plans(
        rng, n_annotated, n_cls, (0.04, 0.12, 0.84), min_per_class, 0.5, cells if pure else None, pure
    )
    for i, plan in enumerate(plans):
        plan.crowd = i % 13 == 5
    if n_annotated < n:
        plans.insert(int(rng.integers(n)), _Plan())
    return plans


def coco_image_entry(split: str, file_name: str, h: int, w: int, image_id: int) -> dict:
    """An ``images`` entry of a COCO 2014 instances file, with the real files' fields in their order."""
    return {
        "license": 1,
        "file_name": file_name,
        "coco_url": f"http://images.cocodataset.org/{split}2014/{file_name}",
        "height": h,
        "width": w,
        "date_captured": "2013-11-14 16:28:13",
        "flickr_url": "",
        "id": image_id,
    }


def _coco_split_images(
    out: Path,
    seed: int,
    split_index: int,
    split: str,
    plans: list[_Plan],
    split_ids: list,
    ann: _CocoIds,
    progress: bool,
) -> tuple[list[dict], list[dict], int]:
    """Render a split's images into ``out/<split>2014``: (image entries, annotations, crowd count)."""
    folder = out / f"{split}2014"
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    n_crowd = 0
    for index, plan in enumerate(tqdm(plans, desc=f"synth coco {split}", disable=not progress)):
        irng = np.random.default_rng([seed, _TAG_COCO, 1 + split_index, index])
        h, w = _image_size(irng, COCO_SIZE)
        objs = _layout(irng, h, w, plan, coco=True)
        image_id = int(split_ids[index])
        file_name = f"COCO_{split}2014_{image_id:012d}.jpg"
        _write_bytes(folder / file_name, _render(irng, objs, h, w))
        images.append(coco_image_entry(split, file_name, h, w, image_id))
        for o in objs:
            if o.crowd:
                ann_id, ann.next_crowd = ann.next_crowd, ann.next_crowd + 1
                n_crowd += 1
            else:
                ann_id, ann.next_ann = ann.next_ann, ann.next_ann + 1
            annotations.append(_coco_annotation(o, ann_id, image_id, h, w))
    return images, annotations, n_crowd


def synth_coco(
    out: Path, seed: int = 0, n_train: int = 160, n_val: int = 240, progress: bool = False
) -> dict:
    """Write a synthetic COCO 2014 (instances) in the raw on-disk layout under ``out``.

    ``out/{train2014,val2014}/COCO_{split}2014_{image_id:012d}.jpg`` and
    ``out/annotations/instances_{train,val}2014.json`` with the real 80 categories (ids 1..90 with gaps).
    Segmentations: mostly polygons (some objects with two), some compressed RLE (str counts), and
    crowd regions (iscrowd 1) as uncompressed RLE. Each split has one image without annotations.

    Returns a summary: the raw root ``coco`` (= ``out``) and counts.
    """
    out = Path(out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, _TAG_COCO, 0])
    image_ids = (rng.choice(581929, size=n_train + n_val, replace=False) + 1).tolist()
    next_ann = int(rng.integers(100_000, 200_000))
    ann = _CocoIds(next_ann, COCO_CROWD_ID_BASE + int(rng.integers(0, 500_000)))
    categories = [{"supercategory": sc, "id": cid, "name": name} for cid, name, sc in COCO_CATEGORIES]
    summary: dict = {"coco": out}
    for split_index, (split, n, min_per_class, split_ids) in enumerate(
        [
            ("train", n_train, MIN_TRAIN_IMAGES, image_ids[:n_train]),
            ("val", n_val, MIN_VAL_IMAGES, image_ids[n_train:]),
        ]
    ):
        plans = _coco_plans(rng, split, n, min_per_class)
        images, annotations, n_crowd = _coco_split_images(
            out, seed, split_index, split, plans, split_ids, ann, progress
        )
        data = {
            "info": {
                "description": "fssam-bench synthetic COCO 2014 (instances)",
                "url": "",
                "version": "1.0",
                "year": 2014,
                "contributor": "fssam-bench",
                "date_created": "2015/01/01",
            },
            "licenses": [{"url": "", "id": 1, "name": "synthetic"}],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        path = out / "annotations" / f"instances_{split}2014.json"
        path.write_text(json.dumps(data, separators=(",", ":")), encoding="ascii")
        summary[f"n_{split}_images"] = len(images)
        summary[f"n_{split}_annotations"] = len(annotations)
        summary[f"n_{split}_crowd"] = n_crowd
    return summary


def synth_raw_roots(dataset: str, out: Path) -> dict[str, Path]:
    """Where the raw roots of a synthetic dataset lie (what ``data prepare`` takes)."""
    if dataset == "pascal":
        return {"voc": out / "VOCdevkit" / "VOC2012", "sbd": out / "benchmark_RELEASE" / "dataset"}
    return {"coco": out}


def synth_dataset(
    dataset: str, out: Path, seed: int = 0, overwrite: bool = False, progress: bool = True
) -> dict:
    """Generate a synthetic raw dataset atomically at ``out``; returns the generator's summary."""
    from benchmark.io_utils import atomic_directory

    with atomic_directory(out, overwrite=overwrite) as tmp:
        fn = synth_pascal if dataset == "pascal" else synth_coco
        return fn(tmp, seed=seed, progress=progress)
