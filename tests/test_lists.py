"""PFENet-family list rules on hand-built records (expected lists worked out by hand)."""

import ast

from benchmark.data.lists import ImageRecord, fold_pool, read_records, write_pfenet_lists, write_records
from benchmark.data.prepare_pascal import merged_train_ids

BIG, SMALL = 2048, 2047  # MIN_CLASS_PIXELS is 2*32*32 = 2048: BIG counts, SMALL does not


def rec(i, **pixels):
    return ImageRecord(
        i,
        f"JPEGImages/{i}.jpg",
        f"SegmentationClassAug/{i}.png",
        10,
        20,
        {int(k[1:]): v for k, v in pixels.items()},
    )


RECORDS = [
    rec("a", c1=BIG),  # novel 1 counts
    rec("b", c1=SMALL, c7=BIG),  # novel 1 present but too small; base 7 counts
    rec("c", c2=BIG, c3=BIG),  # two novel classes
    rec("d", c8=BIG),  # base only
    rec("e"),  # background only
    rec("f", c8=SMALL),  # base present but too small
]


def test_eval_pool_counts_only_classes_with_2048_pixels():
    pool = fold_pool(RECORDS, [1, 2, 3, 4, 5], filter_intersection=False)
    assert [r.id for r in pool.images] == ["a", "c"]
    assert {c: [r.id for r in v] for c, v in pool.per_class.items()} == {
        1: ["a"],
        2: ["c"],
        3: ["c"],
        4: [],
        5: [],
    }


def test_train_pool_drops_images_with_any_novel_pixel():
    base = list(range(6, 21))
    pool = fold_pool(RECORDS, base, filter_intersection=True)
    # "b" has base class 7 but also 2047 px of novel class 1: dropped. "f" has no counted class.
    assert [r.id for r in pool.images] == ["d"]
    assert [r.id for r in pool.per_class[8]] == ["d"] and pool.per_class[7] == []
    # without the intersection filter "b" would count for class 7
    assert [r.id for r in fold_pool(RECORDS, base, filter_intersection=False).images] == ["b", "d"]


def test_present_vs_counted():
    r = RECORDS[1]
    assert r.present([1, 2, 7]) == [1, 7] and r.counted([1, 2, 7]) == [7]


def test_pfenet_list_files_round_trip(tmp_path):
    pool = fold_pool(RECORDS, [1, 2, 3, 4, 5], filter_intersection=False)
    write_pfenet_lists(tmp_path, 0, pool)
    assert (tmp_path / "data_list_0.txt").read_text() == (
        "JPEGImages/a.jpg SegmentationClassAug/a.png\nJPEGImages/c.jpg SegmentationClassAug/c.png\n"
    )
    sub = ast.literal_eval((tmp_path / "sub_class_file_list_0.txt").read_text())
    assert sub[3] == [["JPEGImages/c.jpg", "SegmentationClassAug/c.png"]] and sub[5] == []
    write_records(tmp_path / "r.json", "val", RECORDS)
    assert read_records(tmp_path / "r.json") == RECORDS


def test_merged_train_list_matches_pfenet_rules():
    voc_train = ["t1", "t2", "t3"]
    sbd_train = ["s1", "t2", "v1", "s2", "s1"]  # t2 duplicate, v1 is a VOC val image, s1 repeated
    assert merged_train_ids(voc_train, sbd_train, ["v1", "v2"]) == ["t1", "t2", "t3", "s1", "s2"]
