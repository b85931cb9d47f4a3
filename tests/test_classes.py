"""Fold splits and class tables against the lists in the protocol notes (section 1.2)."""

import pytest

from benchmark.data import classes as C


def test_pascal_folds_partition_the_20_classes():
    folds = [C.novel_classes("pascal", k) for k in range(4)]
    assert folds[0] == [1, 2, 3, 4, 5] and folds[3] == [16, 17, 18, 19, 20]
    assert sorted(c for f in folds for c in f) == list(range(1, 21))
    names = [C.PASCAL_CLASSES[c - 1] for c in folds[2]]
    assert names == ["diningtable", "dog", "horse", "motorbike", "person"]
    assert C.base_classes("pascal", 1) == [1, 2, 3, 4, 5, *range(11, 21)]


def test_coco_interleaved_fold_names_match_the_fwb_split():
    fold0 = [C.COCO_CLASSES[c - 1] for c in C.novel_classes("coco", 0)]
    assert fold0 == [
        "person",
        "airplane",
        "boat",
        "parking meter",
        "dog",
        "elephant",
        "backpack",
        "suitcase",
        "sports ball",
        "skateboard",
        "wine glass",
        "spoon",
        "sandwich",
        "hot dog",
        "chair",
        "dining table",
        "mouse",
        "microwave",
        "refrigerator",
        "scissors",
    ]
    fold3 = [C.COCO_CLASSES[c - 1] for c in C.novel_classes("coco", 3)]
    assert fold3[:4] == ["motorcycle", "truck", "stop sign", "cat"] and fold3[-1] == "toothbrush"
    assert C.novel_classes("coco", 1)[:3] == [2, 6, 10]


def test_coco_contiguous_split_and_category_remap():
    assert C.novel_classes("coco", 2, "contiguous") == list(range(41, 61))
    remap = C.coco_category_to_class()
    assert len(remap) == 80 and remap[1] == 1 and remap[13] == 12 and remap[90] == 80
    assert sorted(remap) == [cid for cid, _, _ in C.COCO_CATEGORIES]  # ascending category ids
    for split in C.COCO_SPLITS:
        assert sorted(c for k in range(4) for c in C.novel_classes("coco", k, split)) == list(range(1, 81))


def test_bad_fold_and_dataset():
    with pytest.raises(ValueError):
        C.novel_classes("pascal", 4)
    with pytest.raises(ValueError):
        C.novel_classes("voc", 0)
    with pytest.raises(ValueError):
        C.novel_classes("coco", 0, "panet")
