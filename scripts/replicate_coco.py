"""Grow a small raw COCO 2014 root (e.g. ``fssbench data synth --dataset coco``) to COCO's size:
its images and their annotations replicated under new ids and file names, the JPEGs hard-linked,
up to 40,504 val and 82,783 train images. For measuring ``data prepare``/``data check``/manifests
at scale without the real data. Usage: python scripts/replicate_coco.py SMALL_ROOT OUT_ROOT"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

COUNTS = {"val2014": 40504, "train2014": 82783}


def replicate(src: Path, dst: Path, name: str, count: int) -> None:
    """Write ``dst/annotations/instances_<name>.json`` and ``count`` linked images of ``name``."""
    data = json.loads((src / "annotations" / f"instances_{name}.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    (dst / name).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(count):
        im = data["images"][i % len(data["images"])]
        file_name = f"COCO_{name}_{i + 1:012d}.jpg"
        if not (dst / name / file_name).exists():
            os.link(src / name / im["file_name"], dst / name / file_name)
        images.append({**im, "id": i + 1, "file_name": file_name})
        anns += [
            {**a, "id": len(anns) + k + 1, "image_id": i + 1}
            for k, a in enumerate(by_image.get(im["id"], []))
        ]
    out = {**data, "images": images, "annotations": anns}
    (dst / "annotations").mkdir(parents=True, exist_ok=True)
    (dst / "annotations" / f"instances_{name}.json").write_text(json.dumps(out))
    print(f"{name}: {len(images)} images, {len(anns)} annotations")


if __name__ == "__main__":
    for split, n in COUNTS.items():
        replicate(Path(sys.argv[1]), Path(sys.argv[2]), split, n)
