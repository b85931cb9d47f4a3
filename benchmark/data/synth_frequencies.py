"""Approximate real dataset statistics used by the real-size synthetic generator (:mod:`synth_scale`).

The per-class image counts below are APPROXIMATIONS, written from memory of the datasets' published
statistics (VOC2012 segmentation trainval per-class image counts; COCO per-category image counts of
the 2014/2017 train set). They serve only as relative sampling weights, so that the synthetic roots
have the real datasets' ordering of class frequencies (PASCAL: person by far the most frequent;
COCO: person in about half the images, then car, chair, dining table, cup, bottle, ...). They are not
exact and must not be quoted as dataset statistics.

The split sizes are the real ones (VOC2012 segmentation, SBD, COCO 2014).
"""

from __future__ import annotations

# VOC2012 segmentation: ImageSets/Segmentation train.txt / val.txt; SBD: train.txt / val.txt
PASCAL_REAL_SPLITS: dict[str, int] = {"voc_train": 1464, "voc_val": 1449, "sbd_train": 8498, "sbd_val": 2857}
# COCO 2014: train2014 / val2014 images
COCO_REAL_SPLITS: dict[str, int] = {"train": 82783, "val": 40504}
# nominal (width, height) of a landscape image; the longer side is what the real images have at most
PASCAL_REAL_SIZE = (500, 375)
COCO_REAL_SIZE = (640, 480)

# approximate number of VOC2012 seg trainval images containing each class (PASCAL_CLASSES order)
PASCAL_IMAGE_COUNTS: dict[str, int] = {
    "aeroplane": 178,
    "bicycle": 144,
    "bird": 208,
    "boat": 150,
    "bottle": 183,
    "bus": 152,
    "car": 255,
    "cat": 250,
    "chair": 271,
    "cow": 135,
    "diningtable": 157,
    "dog": 249,
    "horse": 147,
    "motorbike": 157,
    "person": 888,
    "pottedplant": 167,
    "sheep": 120,
    "sofa": 183,
    "train": 167,
    "tvmonitor": 157,
}

# approximate number of COCO train images containing each category (COCO_CATEGORIES names)
COCO_IMAGE_COUNTS: dict[str, int] = {
    "person": 45174,
    "bicycle": 2287,
    "car": 8606,
    "motorcycle": 2442,
    "airplane": 2243,
    "bus": 2791,
    "train": 2464,
    "truck": 4321,
    "boat": 2098,
    "traffic light": 2893,
    "fire hydrant": 1205,
    "stop sign": 1214,
    "parking meter": 481,
    "bench": 3844,
    "bird": 2241,
    "cat": 2818,
    "dog": 3041,
    "horse": 2068,
    "sheep": 1105,
    "cow": 1389,
    "elephant": 1524,
    "bear": 668,
    "zebra": 1324,
    "giraffe": 1798,
    "backpack": 3924,
    "umbrella": 2749,
    "handbag": 4792,
    "tie": 2667,
    "suitcase": 1631,
    "frisbee": 1511,
    "skis": 2209,
    "snowboard": 1145,
    "sports ball": 3017,
    "kite": 1625,
    "baseball bat": 1804,
    "baseball glove": 1884,
    "skateboard": 2511,
    "surfboard": 2342,
    "tennis racket": 2368,
    "bottle": 5968,
    "wine glass": 1771,
    "cup": 6518,
    "fork": 2504,
    "knife": 3047,
    "spoon": 2493,
    "bowl": 5028,
    "banana": 1618,
    "apple": 1171,
    "sandwich": 1645,
    "orange": 1216,
    "broccoli": 1395,
    "carrot": 1195,
    "hot dog": 846,
    "pizza": 2202,
    "donut": 1062,
    "cake": 2080,
    "chair": 8950,
    "couch": 3170,
    "potted plant": 3084,
    "bed": 2539,
    "dining table": 8378,
    "toilet": 2317,
    "tv": 3191,
    "laptop": 2442,
    "mouse": 1324,
    "remote": 2180,
    "keyboard": 1471,
    "cell phone": 3322,
    "microwave": 1089,
    "oven": 2001,
    "toaster": 151,
    "sink": 3291,
    "refrigerator": 1671,
    "book": 3734,
    "clock": 3159,
    "vase": 2530,
    "scissors": 673,
    "teddy bear": 1571,
    "hair drier": 128,
    "toothbrush": 700,
}
