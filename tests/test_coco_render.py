"""The COCO overlap rule and segmentation decoding on hand-drawn annotations."""

import numpy as np
from pycocotools import mask as mask_utils

from benchmark.data.classes import coco_category_to_class
from benchmark.data.prepare_coco import decode_segmentation, render_semantic_mask

H, W = 6, 8
CAT = coco_category_to_class()  # person 1->1, car 3->3, dog 18->17, cat 17->16


def box_polygon(x0, y0, x1, y1):
    """Polygon of the pixel block [x0, x1) x [y0, y1) (pycocotools rasterises pixel centres)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def block(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def test_polygon_and_both_rle_forms_decode_to_the_same_block():
    expected = block(1, 1, 5, 4)
    assert (decode_segmentation(box_polygon(1, 1, 5, 4), H, W) == expected).all()
    compressed = mask_utils.encode(np.asfortranarray(expected))
    compressed["counts"] = compressed["counts"].decode("ascii")
    assert (decode_segmentation(compressed, H, W) == expected).all()
    # uncompressed RLE: run lengths in column-major order, starting with a run of zeros
    flat = expected.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v == cur:
            n += 1
        else:
            runs.append(n)
            cur, n = v, 1
    runs.append(n)
    assert (decode_segmentation({"counts": runs, "size": [H, W]}, H, W) == expected).all()


def test_smallest_instance_wins_and_things_beat_crowd():
    anns = [
        {"id": 1, "category_id": 1, "iscrowd": 0, "segmentation": box_polygon(0, 0, 6, 6)},  # person 36 px
        {
            "id": 2,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": box_polygon(2, 2, 4, 4),
        },  # car 4 px, on top
        {"id": 3, "category_id": 18, "iscrowd": 1, "segmentation": box_polygon(5, 0, 8, 3)},  # crowd dog
    ]
    label = render_semantic_mask(anns, H, W, CAT)
    expected = np.zeros((H, W), np.uint8)
    expected[:, 6:8] = 0
    expected[0:3, 6:8] = 255  # crowd region outside the person
    expected[0:6, 0:6] = 1  # the person covers the crowd pixels in column 5
    expected[2:4, 2:4] = 3  # the smaller car is in front of the person
    assert (label == expected).all()


def test_equal_area_ties_go_to_the_higher_annotation_id():
    anns = [
        {"id": 7, "category_id": 17, "iscrowd": 0, "segmentation": box_polygon(0, 0, 4, 2)},  # cat
        {"id": 5, "category_id": 18, "iscrowd": 0, "segmentation": box_polygon(2, 0, 6, 2)},  # dog, same area
    ]
    label = render_semantic_mask(anns, H, W, CAT)
    # painted in ascending id order among equal areas: dog (5) first, then cat (7) on top
    assert label[0, 2] == 16 and label[0, 5] == 17 and label[0, 0] == 16
