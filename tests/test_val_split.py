"""Validation manifests (``kind val``) that are disjoint from the test: no image with a novel-class
pixel, so no val query or support is a test query or support; the held-out train slice; the fields
that carry the choice (CLI, study, search and training files).

Expectations are read off the label files with PIL/numpy, and the held-out rule is written out here
from its description (sha256 of salt + id, first 8 bytes big-endian over 2**64, below the fraction).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.cli import main
from benchmark.data import classes as C
from benchmark.data.lists import ImageRecord, heldout_images
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import Holdout, Manifest, load_manifest
from benchmark.episodes.manifests import ManifestRequest, ValPoolWarning, build_manifest
from benchmark.errors import FssBenchError
from benchmark.jobs.train.data import train_set
from benchmark.plan import study_manifests
from benchmark.specs.search import parse_search
from benchmark.specs.study import parse_study
from benchmark.specs.train import parse_train
from tests.helpers import TINY_128

MIN_PX = 2 * 32 * 32  # a class counts in an image with at least this many pixels (PFENet)
_LABELS: dict[Path, dict[int, int]] = {}


def label_pixels(root: Path, rel: str) -> dict[int, int]:
    """Class id -> pixel count of a label file (0 and 255 excluded), read with PIL/numpy."""
    path = root / rel
    if path not in _LABELS:
        values, counts = np.unique(np.array(Image.open(path)), return_counts=True)
        _LABELS[path] = {int(v): int(n) for v, n in zip(values, counts, strict=True) if v not in (0, 255)}
    return _LABELS[path]


def split_labels(root: Path, split: str) -> dict[str, dict[int, int]]:
    """image id -> class pixel counts, for every image of a prepared split (paths from its list file)."""
    out = {}
    for line in (root / "lists" / f"{split}.txt").read_text().splitlines():
        image, label = line.split(" ")
        out[Path(image).stem] = label_pixels(root, label)
    return out


def holdout_key(image_id: str) -> float:
    """The held-out rule, from its description."""
    digest = hashlib.sha256(("fssbench-holdout/1:" + image_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def expected_classes(pixels: dict[str, dict[int, int]], novel: list[int], base: list[int], shot: int):
    """(kept base classes, {left-out class: count}) from label pixel counts: images with no novel
    pixel; a class needs shot + 1 images where it has >= MIN_PX pixels."""
    usable = [p for p in pixels.values() if not set(p) & set(novel)]
    counts = {c: sum(1 for p in usable if p.get(c, 0) >= MIN_PX) for c in base}
    return [c for c in base if counts[c] > shot], {c: n for c, n in counts.items() if n <= shot}


def manifest_labels(root: Path, m: Manifest) -> dict[str, dict[int, int]]:
    """image id -> class pixel counts of every image a manifest uses (its own label paths)."""
    return {i: label_pixels(root, paths[1]) for i, paths in m.images.items()}


def check_val_against_test(root: Path, fold: int, split: str, shot: int, protocol: str = "fssam") -> None:
    dataset = PreparedDataset(root).dataset
    novel = C.novel_classes(dataset, fold, split)
    base = C.base_classes(dataset, fold, split)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ValPoolWarning)
        val = build_manifest(
            get_protocol(protocol),
            ManifestRequest(root, fold, shot, episodes=60, kind="val", coco_split=split),
        )
    # enough test episodes to cycle the whole test list (the synthetic val splits hold <= 240 images)
    test = build_manifest(
        get_protocol("fssam"), ManifestRequest(root, fold, shot, episodes=300, coco_split=split)
    )
    test_queries = {e.query for e in test.episodes}
    test_images = set(test.images)
    # every val-split image with a counted novel class is a test query: the whole test list was cycled
    with_novel = {
        i for i, p in split_labels(root, "val").items() if any(p.get(c, 0) >= MIN_PX for c in novel)
    }
    assert {Path(test.images[q][0]).stem for q in test_queries} == with_novel
    val_labels = manifest_labels(root, val)
    assert val_labels and not set(val.images) & test_images
    for image_id, pixels in val_labels.items():
        assert not set(pixels) & set(novel), f"{image_id} holds novel-class pixels {set(pixels) & set(novel)}"
    kept, left_out = expected_classes(split_labels(root, "val"), novel, base, shot)
    assert list(val.classes) == kept and val.left_out == {str(c): n for c, n in left_out.items()}
    assert val.val_rule == "no-novel-pixels" and val.source.split == "val"
    for e in val.episodes:
        assert e.cls in kept and val_labels[e.query].get(e.cls, 0) > 0
        assert all(val_labels[s].get(e.cls, 0) >= MIN_PX for s in e.supports)


@pytest.mark.parametrize("fold", range(4))
def test_pascal_val_manifests_hold_no_novel_pixel_and_no_test_image(pascal_root, fold):
    check_val_against_test(pascal_root, fold, "interleaved", 1)


def test_hsnet_val_manifests_follow_the_same_rule(pascal_root):
    check_val_against_test(pascal_root, 2, "interleaved", 2, protocol="hsnet")


@pytest.mark.parametrize("split", C.COCO_SPLITS)
@pytest.mark.parametrize("fold", range(4))
def test_coco_val_manifests_hold_no_novel_pixel_and_no_test_image(coco_root, fold, split):
    check_val_against_test(coco_root, fold, split, 1)


def test_a_class_with_too_few_images_is_left_out_in_one_line_naming_it(coco_root, tmp_path, capsys):
    """COCO fold 0 (synthetic): the label files say which base classes lack 2 usable images."""
    kept, left_out = expected_classes(
        split_labels(coco_root, "val"), C.novel_classes("coco", 0), C.base_classes("coco", 0), 1
    )
    assert left_out, "the synthetic COCO root no longer has a thin base class in fold 0; pick another fold"
    with pytest.warns(ValPoolWarning) as caught:
        build_manifest(get_protocol("fssam"), ManifestRequest(coco_root, 0, 1, episodes=5, kind="val"))
    (note,) = [str(w.message) for w in caught]
    assert "\n" not in note and "--val-source train-holdout" in note
    names = C.class_names("coco")
    for c, n in left_out.items():
        assert f"{c} ({names[c - 1]}) {n} image(s)" in note
    out = tmp_path / "v.json"
    argv = ["-q", "episodes", "--dataset", "coco", "--data-root", str(coco_root), "--fold", "0"]
    assert main([*argv, "--shot", "1", "--kind", "val", "--episodes", "5", "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"note: {note}"]
    assert list(load_manifest(out).classes) == kept


def test_val_manifests_differ_from_the_old_draw_and_test_manifests_do_not_carry_the_rule(pascal_root):
    test = build_manifest(get_protocol("fssam"), ManifestRequest(pascal_root, 0, 1, episodes=20))
    assert (
        "val_rule" not in test.to_dict() and "left_out" not in test.to_dict() and test.source.split == "val"
    )
    val = build_manifest(get_protocol("fssam"), ManifestRequest(pascal_root, 0, 1, episodes=20, kind="val"))
    # the old val draw used every val-split image with a counted base class; on the synthetic root
    # about half of them hold a novel pixel, and the new manifest never uses one of those
    novel = set(C.novel_classes("pascal", 0))
    base = C.base_classes("pascal", 0)
    old_pool = {
        i for i, p in split_labels(pascal_root, "val").items() if any(p.get(c, 0) >= MIN_PX for c in base)
    }
    with_novel = {i for i in old_pool if set(split_labels(pascal_root, "val")[i]) & novel}
    assert with_novel and not {Path(v[0]).stem for v in val.images.values()} & with_novel


def test_heldout_images_rule():
    ids = [f"img{i:05d}" for i in range(4000)]
    records = [ImageRecord(i, f"J/{i}.jpg", f"S/{i}.png", 4, 4) for i in ids]
    for fraction in (0.05, 0.1, 0.5):
        held = heldout_images(records, fraction)
        assert held == {i for i in ids if holdout_key(i) < fraction}
        # a binomial(4000, f) count: within 5 standard deviations of 4000 f
        assert abs(len(held) - 4000 * fraction) < 5 * (4000 * fraction * (1 - fraction)) ** 0.5
    assert heldout_images(records, 0.1) <= heldout_images(records, 0.2)  # nested
    assert heldout_images(records[::-1], 0.1) == heldout_images(records, 0.1)  # order-free
    for bad in (0, 1, 1.5, -0.1, True, "0.1"):
        with pytest.raises(FssBenchError, match="holdout fraction: expected a number in"):
            heldout_images(records, bad)


def test_train_holdout_val_manifest_and_training_skip_the_same_images(pascal_root):
    fraction = 0.5
    train = split_labels(pascal_root, "train")
    held = {i for i in train if holdout_key(i) < fraction}
    novel = C.novel_classes("pascal", 1)
    m = build_manifest(
        get_protocol("fssam"),
        ManifestRequest(
            pascal_root, 1, 1, episodes=30, kind="val", val_source="train-holdout", holdout_fraction=0.5
        ),
    )
    assert m.source.split == "train" and m.source.holdout == Holdout(0.5, "fssbench-holdout/1:")
    assert m.to_dict()["source"]["holdout"] == {"fraction": 0.5, "salt": "fssbench-holdout/1:"}
    used = {Path(v[0]).stem for v in m.images.values()}
    assert used and used <= held
    assert all(not set(train[i]) & set(novel) for i in used)
    kept, left_out = expected_classes({i: train[i] for i in held}, novel, C.base_classes("pascal", 1), 1)
    assert list(m.classes) == kept and m.left_out == {str(c): n for c, n in left_out.items()}
    # training skips exactly the held-out images and keeps every other image of its list
    # (an image's id is its file name's stem, which is what the list files give here)
    ds = PreparedDataset(pascal_root)
    full = {r.id for r in train_set(ds, 1, 1).pool.images}
    skipping = {r.id for r in train_set(ds, 1, 1, holdout_fraction=fraction).pool.images}
    assert skipping == full - held and full & held  # the slice did take images out of training


def test_val_source_errors(pascal_root):
    with pytest.raises(FssBenchError, match="no base class has the 2 images .*--holdout-fraction, now 1e-09"):
        build_manifest(
            get_protocol("fssam"),
            ManifestRequest(
                pascal_root, 0, 1, episodes=4, kind="val", val_source="train-holdout", holdout_fraction=1e-09
            ),
        )
    with pytest.raises(FssBenchError, match="apply to --kind val only"):
        build_manifest(
            get_protocol("fssam"), ManifestRequest(pascal_root, 0, 1, episodes=4, val_source="train-holdout")
        )
    with pytest.raises(FssBenchError, match="--holdout-fraction applies to --val-source train-holdout only"):
        build_manifest(
            get_protocol("fssam"),
            ManifestRequest(pascal_root, 0, 1, episodes=4, kind="val", holdout_fraction=0.2),
        )
    with pytest.raises(FssBenchError, match="--val-source must be one of"):
        build_manifest(
            get_protocol("fssam"),
            ManifestRequest(pascal_root, 0, 1, episodes=4, kind="val", val_source="test"),
        )


def study_dict(root: Path, **extra) -> dict:
    return {
        "name": "s",
        "data": {"pascal": str(root)},
        "folds": [0],
        "shots": [1],
        "episodes": 6,
        "model": dict(TINY_128),
        "variants": {"fssam": {}},
        **extra,
    }


def test_study_and_search_fields(pascal_root, tmp_path):
    s = parse_study(study_dict(pascal_root, val_source="train-holdout"), "s.yaml")
    assert (s.val_source, s.holdout_fraction) == ("train-holdout", 0.1)
    with pytest.warns(ValPoolWarning, match="hold out more of the train split"):  # 10 % of a tiny split
        (path,) = study_manifests(s, tmp_path, kind="val").values()
    m = load_manifest(path)
    assert path.stem.endswith("-val-holdout0.1") and m.source.split == "train"
    (test_path,) = study_manifests(s, tmp_path, kind="test").values()  # test manifests ignore it
    assert load_manifest(test_path).source.split == "val" and load_manifest(test_path).val_rule is None
    with pytest.raises(
        FssBenchError, match=r"s.yaml: val_source: 'train' is not one of \['val', 'train-holdout'\]"
    ):
        parse_study(study_dict(pascal_root, val_source="train"), "s.yaml")
    with pytest.raises(
        FssBenchError, match="s.yaml: holdout_fraction: applies to val_source: train-holdout only"
    ):
        parse_study(study_dict(pascal_root, holdout_fraction=0.2), "s.yaml")
    with pytest.raises(
        FssBenchError, match=r"s.yaml: holdout_fraction: expected a number in \(0, 1\), got 2"
    ):
        parse_study(study_dict(pascal_root, val_source="train-holdout", holdout_fraction=2), "s.yaml")
    space = {"threshold": {"type": "float", "low": 0.2, "high": 0.8}}
    search = {"name": "q", "study": study_dict(pascal_root), "space": space}
    plain = parse_search(search, "q.yaml")
    held = parse_search({**search, "study": study_dict(pascal_root, val_source="train-holdout")}, "q.yaml")
    assert plain.identity()["val_rule"] == "no-novel-pixels"
    assert plain.sha256 != held.sha256  # a resumed Optuna study must have tuned on the same manifests


def train_dict(root: Path, **val) -> dict:
    return {
        "name": "t",
        "method": "fssam",
        "data": {"pascal": str(root)},
        "fold": 0,
        "shot": 1,
        "model": dict(TINY_128),
        "train": {"batch_size": 2, "max_iters": 2},
        "val": {"episodes": 4, "every": 2, **val},
    }


def test_training_file_val_source(pascal_root, tmp_path, monkeypatch):
    from benchmark.jobs.train import job as job_module

    spec = parse_train(train_dict(pascal_root, source="train-holdout", holdout_fraction=0.5), "t.yaml")
    assert spec.val["source"] == "train-holdout" and spec.val["holdout_fraction"] == 0.5
    assert (
        parse_train(train_dict(pascal_root, source="train-holdout"), "t.yaml").val["holdout_fraction"] == 0.1
    )
    assert parse_train(train_dict(pascal_root), "t.yaml").val["holdout_fraction"] is None
    for val, message in [
        ({"source": "train"}, r"t.yaml: val.source: 'train' is not one of"),
        (
            {"source": "train-holdout", "kind": "test"},
            "t.yaml: val.source: train-holdout applies to val.kind: val only",
        ),
        (
            {"holdout_fraction": 0.2},
            "t.yaml: val.holdout_fraction: applies to val.source: train-holdout only",
        ),
        (
            {"source": "train-holdout", "holdout_fraction": 0},
            r"t.yaml: val.holdout_fraction: expected a number in \(0, 1\)",
        ),
    ]:
        with pytest.raises(FssBenchError, match=message):
            parse_train(train_dict(pascal_root, **val), "t.yaml")
    # the trainer validates on the held-out slice and trains on the rest
    trainer = job_module.Trainer(spec, tmp_path / "out", device="cpu", progress=False, log=lambda _: None)
    m = load_manifest(trainer.val_manifest())
    assert m.source.split == "train" and m.source.holdout.fraction == 0.5
    seen = {}

    class Stop(Exception):
        pass

    def spy(root, fold, shot, split, holdout_fraction=None):
        seen["holdout_fraction"] = holdout_fraction
        raise Stop

    monkeypatch.setattr(job_module, "train_set", spy)
    with pytest.raises(Stop):
        trainer.run()
    assert seen == {"holdout_fraction": 0.5}


def test_cli_val_source(pascal_root, tmp_path, capsys):
    out = tmp_path / "h.json"
    argv = [
        "-q",
        "episodes",
        "--dataset",
        "pascal",
        "--data-root",
        str(pascal_root),
        "--fold",
        "1",
        "--shot",
        "1",
    ]
    held = ["--kind", "val", "--val-source", "train-holdout", "--holdout-fraction", "0.5"]
    assert main([*argv, *held, "--episodes", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 val episodes" in printed and "from the train split's held-out 0.5" in printed
    assert load_manifest(out).source.split == "train"
    assert main([*argv, "--holdout-fraction", "0.5", "--out", str(tmp_path / "t.json")]) == 2
    assert "--val-source and --holdout-fraction apply to --kind val only" in capsys.readouterr().err


def test_every_command_shows_a_left_out_class_as_one_note_line(capsys, monkeypatch):
    from benchmark.cli import guards

    others = []  # what Python's own display gets: every other warning
    monkeypatch.setattr(warnings, "showwarning", lambda *args, **kwargs: others.append(args[1]))
    guards.notes_as_one_line()
    # what Python calls to show a warning that no filter silenced
    warnings.showwarning(ValPoolWarning("class 7 (cat): 1 image; left out"), ValPoolWarning, "x.py", 3)
    warnings.showwarning(UserWarning("something else"), UserWarning, "x.py", 4)
    assert capsys.readouterr().err.splitlines() == ["fssbench: note: class 7 (cat): 1 image; left out"]
    assert others == [UserWarning]
