"""Real-size synthetic data (``data synth --scale real | --images N --size WxH``) on small slices:
split sizes, image sizes, determinism across worker counts, class frequencies, prepare + check."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.cli import main
from benchmark.data.classes import COCO_CATEGORIES, PASCAL_CLASSES
from benchmark.data.prepared import PreparedDataset
from benchmark.data.synth_frequencies import COCO_IMAGE_COUNTS, PASCAL_IMAGE_COUNTS
from benchmark.data.synth_scale_plans import (
    ScaleRequest,
    coco_split_sizes,
    image_size,
    pascal_split_sizes,
    weighted_plans,
)
from benchmark.episodes import get_protocol
from benchmark.episodes.manifests import ManifestRequest, build_manifest

PERSON_PASCAL = PASCAL_CLASSES.index("person") + 1
PERSON_COCO = 1


def _lines(path: Path) -> list[str]:
    return path.read_text().split()


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _synth(dataset: str, out: Path, *extra: str) -> None:
    assert main(["-q", "data", "synth", "--dataset", dataset, "--out", str(out), *extra]) == 0


# --------------------------------------------------------------------------------- sizes and plans


def test_split_sizes_real_and_scaled() -> None:
    real = pascal_split_sizes(ScaleRequest(None, (500, 375)))
    assert real == {"voc_train": 1464, "voc_val": 1449, "sbd_train": 8498, "sbd_val": 2857}
    assert coco_split_sizes(ScaleRequest(None, (640, 480))) == {"train": 82783, "val": 40504}
    # 1000 distinct images: the real ones (11,385 distinct: 1464 + 1449 + 8498 + 2857 minus the
    # 1,464 + 1,419 SBD train images that are VOC images) times 1000 / 11385, rounded by hand
    assert pascal_split_sizes(ScaleRequest(1000, (240, 180))) == {
        "voc_train": 129,
        "voc_val": 127,
        "sbd_train": 746,
        "sbd_val": 251,
    }
    # COCO: 123,287 in all; 1000 * 82783 / 123287 = 671.5, 1000 * 40504 / 123287 = 328.5
    assert coco_split_sizes(ScaleRequest(1000, (240, 180))) == {"train": 671, "val": 329}
    # a fraction keeps validation whole
    assert coco_split_sizes(ScaleRequest(None, (640, 480), 0.25)) == {"train": 20696, "val": 40504}
    frac = pascal_split_sizes(ScaleRequest(None, (500, 375), 0.5))
    assert frac["voc_val"] == 1449 and frac["voc_train"] == 732 and frac["sbd_val"] == 1428


def test_image_sizes_keep_the_longer_side_and_mix_orientations() -> None:
    rng = np.random.default_rng(5)
    sizes = [image_size(rng, (500, 375)) for _ in range(400)]
    assert all(max(h, w) == 500 for h, w in sizes)
    assert {min(h, w) for h, w in sizes} == {375, 333, 281}  # 375 * (1, 0.888, 0.75)
    portrait = sum(h > w for h, w in sizes)
    assert 60 <= portrait <= 140  # a quarter of 400
    assert Counter(min(h, w) for h, w in sizes).most_common(1)[0][0] == 375


def _image_shares(plans: list, n_cls: int) -> np.ndarray:
    hits = np.zeros(n_cls + 1)
    for p in plans:
        for c in set(p.large + p.small):
            hits[c] += 1
    return hits[1:] / len(plans)


def test_class_frequencies_follow_the_table_at_real_size() -> None:
    """The plans of the real-size train splits (no pixels): person first by far, table order kept."""
    weights = np.array([PASCAL_IMAGE_COUNTS[c] for c in PASCAL_CLASSES], dtype=float)
    groups = [list(range(5 * g + 1, 5 * g + 6)) for g in range(4)]
    rng = np.random.default_rng(0)
    shares = _image_shares(weighted_plans(rng, 7087, weights, (0.55, 0.3, 0.15), 4, 0.25, groups, 0.4), 20)
    assert int(np.argmax(shares)) + 1 == PERSON_PASCAL
    assert shares[PERSON_PASCAL - 1] > 2 * np.sort(shares)[-2]
    assert shares.min() > 0.02
    coco_w = np.array([COCO_IMAGE_COUNTS[n] for _, n, _ in COCO_CATEGORIES], dtype=float)
    plans = weighted_plans(rng, 40504, coco_w, (0.1, 0.25, 0.65), 8, 0.5)
    shares = _image_shares(plans, 80)
    order = np.argsort(-shares) + 1
    assert order[0] == PERSON_COCO and 0.35 < shares[0] < 0.65
    top = {COCO_CATEGORIES[c - 1][1] for c in order[1:6]}
    assert {"car", "chair", "dining table"} <= top, top
    # rank correlation with the table (Spearman, no ties in the table's top)
    rank_table = np.argsort(np.argsort(-coco_w))
    rank_synth = np.argsort(np.argsort(-shares))
    assert np.corrcoef(rank_table, rank_synth)[0, 1] > 0.9
    assert min(Counter(c for p in plans for c in p.large).values()) >= 8


# --------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def pascal_slice(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("scale-pascal")
    args = ("--images", "200", "--size", "240x180", "--seed", "3")
    _synth("pascal", base / "w1", *args, "--workers", "1")
    _synth("pascal", base / "w2", *args, "--workers", "2")
    raw = base / "w2"
    voc, sbd = raw / "VOCdevkit" / "VOC2012", raw / "benchmark_RELEASE" / "dataset"
    prepared = base / "prepared"
    assert (
        main(
            ["-q", "data", "prepare", "pascal", "--voc", str(voc), "--sbd", str(sbd), "--out", str(prepared)]
        )
        == 0
    )
    return {"w1": base / "w1", "raw": raw, "voc": voc, "sbd": sbd, "prepared": prepared}


def test_pascal_slice_counts_sizes_and_determinism(pascal_slice: dict) -> None:
    assert _tree_digest(pascal_slice["w1"]) == _tree_digest(pascal_slice["raw"])  # 1 vs 2 workers
    expect = pascal_split_sizes(ScaleRequest(200, (240, 180)))
    voc, sbd = pascal_slice["voc"], pascal_slice["sbd"]
    sets = voc / "ImageSets" / "Segmentation"
    train, val = _lines(sets / "train.txt"), _lines(sets / "val.txt")
    sbd_train, sbd_val = _lines(sbd / "train.txt"), _lines(sbd / "val.txt")
    assert (len(train), len(val), len(sbd_train), len(sbd_val)) == (
        expect["voc_train"],
        expect["voc_val"],
        expect["sbd_train"],
        expect["sbd_val"],
    )
    assert set(sbd_train) & set(val) and set(sbd_train) & set(train)  # SBD train holds VOC images
    assert not set(sbd_val) & (set(train) | set(val))
    shorts = set()
    for i in train + val + sbd_val:
        w, h = Image.open(voc / "JPEGImages" / f"{i}.jpg").size
        assert max(w, h) == 240
        shorts.add(min(w, h))
    assert shorts == {180, 160, 135}  # 180 * (1, 0.888, 0.75), rounded


def test_pascal_slice_prepares_checks_and_builds_episodes(pascal_slice: dict) -> None:
    prepared = pascal_slice["prepared"]
    assert main(["-q", "data", "check", str(prepared)]) == 0
    sets = pascal_slice["voc"] / "ImageSets" / "Segmentation"
    val = _lines(sets / "val.txt")
    ds = PreparedDataset(prepared)
    assert [r.id for r in ds.records("val")] == val
    # train = VOC train + SBD train minus VOC val (duplicates dropped)
    expect_train = set(_lines(sets / "train.txt")) | (
        set(_lines(pascal_slice["sbd"] / "train.txt")) - set(val)
    )
    assert {r.id for r in ds.records("train")} == expect_train
    hits = Counter(c for r in ds.records("train") + ds.records("val") for c in r.pixels)
    assert hits.most_common(1)[0][0] == PERSON_PASCAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_manifest(
            get_protocol("fssam").configure({}), ManifestRequest(prepared, 3, 1, episodes=20, seed=1)
        )
    assert len(m.episodes) == 20


def test_coco_same_files_whatever_the_worker_count(tmp_path: Path) -> None:
    args = ("--images", "40", "--size", "200x150", "--seed", "2")
    _synth("coco", tmp_path / "w1", *args, "--workers", "1")
    _synth("coco", tmp_path / "w2", *args, "--workers", "2")
    digest = _tree_digest(tmp_path / "w1")
    assert digest == _tree_digest(tmp_path / "w2")
    assert len(digest) == 40 + 2  # the images and the two instances files
    _synth("coco", tmp_path / "other-seed", "--images", "40", "--size", "200x150", "--seed", "3")
    assert _tree_digest(tmp_path / "other-seed") != digest


def test_coco_slice_end_to_end(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _synth("coco", raw, "--images", "240", "--size", "240x180", "--seed", "1", "--workers", "2")
    expect = coco_split_sizes(ScaleRequest(240, (240, 180)))
    ann_ids = []
    for split in ("train", "val"):
        data = json.loads((raw / "annotations" / f"instances_{split}2014.json").read_text())
        assert list(data) == ["info", "licenses", "images", "annotations", "categories"]
        assert len(data["images"]) == expect[split] == len(list((raw / f"{split}2014").iterdir()))
        for im in data["images"]:
            assert max(im["height"], im["width"]) == 240 and min(im["height"], im["width"]) in {180, 160, 135}
            assert Image.open(raw / f"{split}2014" / im["file_name"]).size == (im["width"], im["height"])
        ann_ids += [a["id"] for a in data["annotations"]]
        assert any(a["iscrowd"] for a in data["annotations"])
    assert len(set(ann_ids)) == len(ann_ids)
    prepared = tmp_path / "prepared"
    assert main(["-q", "data", "prepare", "coco", "--coco", str(raw), "--out", str(prepared)]) == 0
    assert main(["-q", "data", "check", str(prepared)]) == 0


# --------------------------------------------------------------------------------- the command


def test_modes_are_exclusive_and_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "x")
    with pytest.raises(SystemExit) as e:
        main(["-q", "data", "synth", "--dataset", "pascal", "--out", out, "--scale", "real", "--images", "9"])
    assert e.value.code == 2
    assert main(["-q", "data", "synth", "--dataset", "pascal", "--out", out, "--size", "300x200"]) == 2
    assert "--size need --scale real or --images N" in capsys.readouterr().err
    assert (
        main(["-q", "data", "synth", "--dataset", "coco", "--out", out, "--images", "9", "--fraction", "0"])
        == 2
    )
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("")
    assert main(["-q", "data", "synth", "--dataset", "coco", "--out", out, "--images", "9"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["keep"]
