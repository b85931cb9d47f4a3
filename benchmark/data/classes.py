"""Class names, COCO category ids and the fold splits of PASCAL-5i and COCO-20i.

Class ids are 1-based everywhere in the suite: 0 is background and 255 is "ignore".
PASCAL ids are the VOC indices 1..20. COCO ids are the contiguous remap 1..80 of COCO's category
ids (1..90 with gaps) in ascending order, as in the PFENet/HSNet pre-rendered masks.
"""

from __future__ import annotations

IGNORE_LABEL = 255
MIN_CLASS_PIXELS = 2 * 32 * 32  # a class counts in an image only with at least this many pixels

PASCAL_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# (COCO category id, name, supercategory) in ascending id order; index + 1 = contiguous class id.
COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "person", "person"),
    (2, "bicycle", "vehicle"),
    (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"),
    (6, "bus", "vehicle"),
    (7, "train", "vehicle"),
    (8, "truck", "vehicle"),
    (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"),
    (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"),
    (14, "parking meter", "outdoor"),
    (15, "bench", "outdoor"),
    (16, "bird", "animal"),
    (17, "cat", "animal"),
    (18, "dog", "animal"),
    (19, "horse", "animal"),
    (20, "sheep", "animal"),
    (21, "cow", "animal"),
    (22, "elephant", "animal"),
    (23, "bear", "animal"),
    (24, "zebra", "animal"),
    (25, "giraffe", "animal"),
    (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"),
    (31, "handbag", "accessory"),
    (32, "tie", "accessory"),
    (33, "suitcase", "accessory"),
    (34, "frisbee", "sports"),
    (35, "skis", "sports"),
    (36, "snowboard", "sports"),
    (37, "sports ball", "sports"),
    (38, "kite", "sports"),
    (39, "baseball bat", "sports"),
    (40, "baseball glove", "sports"),
    (41, "skateboard", "sports"),
    (42, "surfboard", "sports"),
    (43, "tennis racket", "sports"),
    (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"),
    (47, "cup", "kitchen"),
    (48, "fork", "kitchen"),
    (49, "knife", "kitchen"),
    (50, "spoon", "kitchen"),
    (51, "bowl", "kitchen"),
    (52, "banana", "food"),
    (53, "apple", "food"),
    (54, "sandwich", "food"),
    (55, "orange", "food"),
    (56, "broccoli", "food"),
    (57, "carrot", "food"),
    (58, "hot dog", "food"),
    (59, "pizza", "food"),
    (60, "donut", "food"),
    (61, "cake", "food"),
    (62, "chair", "furniture"),
    (63, "couch", "furniture"),
    (64, "potted plant", "furniture"),
    (65, "bed", "furniture"),
    (67, "dining table", "furniture"),
    (70, "toilet", "furniture"),
    (72, "tv", "electronic"),
    (73, "laptop", "electronic"),
    (74, "mouse", "electronic"),
    (75, "remote", "electronic"),
    (76, "keyboard", "electronic"),
    (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"),
    (79, "oven", "appliance"),
    (80, "toaster", "appliance"),
    (81, "sink", "appliance"),
    (82, "refrigerator", "appliance"),
    (84, "book", "indoor"),
    (85, "clock", "indoor"),
    (86, "vase", "indoor"),
    (87, "scissors", "indoor"),
    (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"),
    (90, "toothbrush", "indoor"),
)
COCO_CLASSES: tuple[str, ...] = tuple(name for _, name, _ in COCO_CATEGORIES)

DATASETS = ("pascal", "coco")
COCO_SPLITS = ("interleaved", "contiguous")
NUM_FOLDS = 4


def class_names(dataset: str) -> tuple[str, ...]:
    """Names of classes 1..C (index 0 of the tuple is class 1)."""
    if dataset == "pascal":
        return PASCAL_CLASSES
    if dataset == "coco":
        return COCO_CLASSES
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def num_classes(dataset: str) -> int:
    return len(class_names(dataset))


def coco_category_to_class() -> dict[int, int]:
    """COCO category id (1..90, with gaps) -> contiguous class id 1..80."""
    return {cat_id: i + 1 for i, (cat_id, _, _) in enumerate(COCO_CATEGORIES)}


def novel_classes(dataset: str, fold: int, coco_split: str = "interleaved") -> list[int]:
    """The novel (test) class ids of a fold, ascending.

    PASCAL-5i: fold k tests 5k+1..5k+5. COCO-20i interleaved ("FWB", the PFENet/HSNet/FSSAM default):
    fold k tests {4m+k+1 : m=0..19}; contiguous ("PANet"): fold k tests 20k+1..20k+20.
    """
    if not 0 <= fold < NUM_FOLDS:
        raise ValueError(f"fold must be in 0..{NUM_FOLDS - 1}, got {fold}")
    if dataset == "pascal":
        return list(range(5 * fold + 1, 5 * fold + 6))
    if dataset == "coco":
        if coco_split == "interleaved":
            return [4 * m + fold + 1 for m in range(20)]
        if coco_split == "contiguous":
            return list(range(20 * fold + 1, 20 * fold + 21))
        raise ValueError(f"unknown COCO split {coco_split!r}; expected one of {COCO_SPLITS}")
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def base_classes(dataset: str, fold: int, coco_split: str = "interleaved") -> list[int]:
    """All class ids of the dataset that are not novel in this fold (the training classes)."""
    novel = set(novel_classes(dataset, fold, coco_split))
    return [c for c in range(1, num_classes(dataset) + 1) if c not in novel]
