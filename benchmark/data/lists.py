"""Per-image class statistics and the PFENet-family per-fold image lists (pure functions).

A prepared dataset stores, for each split, one record per image: its id, image and label paths
(relative to the prepared root) and the number of pixels of every class present. All fold lists
are derived from these records, so the rules live in one place:

* a class counts in an image only if it covers at least ``MIN_CLASS_PIXELS`` (2*32*32) pixels;
* evaluation lists (``filter_intersection=False``): images with at least one counted class of the
  fold's class set, and per class the images where it counts;
* training lists (``filter_intersection=True``): as above, but images that contain ANY pixel of a
  class outside the class set (i.e. a novel class) are dropped entirely;
* validation (model-selection) pools: :func:`without_classes` drops every image holding any pixel
  of a novel class (the same rule), so no validation image can be a test query or support;
* the held-out slice of the train split (:func:`heldout_images`): a fixed fraction of the images,
  chosen by a hash of the image id, that validation may draw from and training must skip.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.data.classes import MIN_CLASS_PIXELS
from benchmark.errors import FssBenchError
from benchmark.io_utils import canonical_json, write_text_atomic


@dataclass(frozen=True)
class ImageRecord:
    """One image of a prepared split. ``pixels`` maps class id -> pixel count (> 0), 0/255 excluded."""

    id: str
    image: str
    label: str
    height: int
    width: int
    pixels: dict[int, int] = field(default_factory=dict)

    def present(self, classes: Iterable[int]) -> list[int]:
        """Classes of ``classes`` with at least one pixel in this image, ascending."""
        return sorted(c for c in classes if self.pixels.get(c, 0) > 0)

    def counted(self, classes: Iterable[int]) -> list[int]:
        """Classes of ``classes`` covering at least MIN_CLASS_PIXELS pixels, ascending."""
        return sorted(c for c in classes if self.pixels.get(c, 0) >= MIN_CLASS_PIXELS)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "image": self.image,
            "label": self.label,
            "height": self.height,
            "width": self.width,
            "pixels": {str(c): n for c, n in sorted(self.pixels.items())},
        }

    @staticmethod
    def from_json(d: dict) -> ImageRecord:
        return ImageRecord(
            id=d["id"],
            image=d["image"],
            label=d["label"],
            height=int(d["height"]),
            width=int(d["width"]),
            pixels={int(c): int(n) for c, n in d["pixels"].items()},
        )


@dataclass(frozen=True)
class FoldPool:
    """The ordered image list of a fold and, per class, the images where that class counts."""

    images: list[ImageRecord]
    per_class: dict[int, list[ImageRecord]]


def fold_pool(records: Sequence[ImageRecord], classes: Sequence[int], filter_intersection: bool) -> FoldPool:
    """PFENet ``make_dataset``: the list of images usable for ``classes``, in ``records`` order.

    Args:
        records: the split's images in list order.
        classes: the fold's class set (novel classes for testing, base classes for training).
        filter_intersection: drop images containing any pixel of a class outside ``classes``
            (PFENet-family training lists, so that no novel object is seen during training).
    """
    class_set = set(classes)
    images: list[ImageRecord] = []
    per_class: dict[int, list[ImageRecord]] = {c: [] for c in sorted(class_set)}
    for rec in records:
        if filter_intersection and not set(rec.pixels).issubset(class_set):
            continue
        counted = rec.counted(class_set)
        if counted:
            images.append(rec)
            for c in counted:
                per_class[c].append(rec)
    return FoldPool(images=images, per_class=per_class)


def without_classes(records: Sequence[ImageRecord], classes: Iterable[int]) -> list[ImageRecord]:
    """The records (in order) holding no pixel at all of any of ``classes``.

    With a fold's novel classes this is PFENet's training-list rule applied to validation: an image
    is usable for a base class only if none of its pixels belongs to a novel class of the fold.
    """
    excluded = set(classes)
    return [r for r in records if excluded.isdisjoint(r.pixels)]


HOLDOUT_SALT = "fssbench-holdout/1:"


def holdout_key(image_id: str) -> float:
    """Where an image falls in [0, 1) for the held-out slice: the first 8 bytes of
    ``sha256(HOLDOUT_SALT + id)`` as a big-endian integer over 2**64 (same on every machine)."""
    digest = hashlib.sha256((HOLDOUT_SALT + image_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def heldout_images(records: Iterable[ImageRecord], fraction: float) -> frozenset[str]:
    """Ids of the train split's held-out slice: the images whose :func:`holdout_key` is below
    ``fraction`` (in (0, 1)).

    A pure function of the ids and the fraction: independent of list order, fold and seed, and a
    larger fraction holds out a superset. Validation episodes (``--val-source train-holdout``) draw
    from these images; the training sampler (:func:`benchmark.jobs.train.data.train_set`) skips them.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise FssBenchError(f"holdout fraction: expected a number in (0, 1), got {fraction!r}")
    return frozenset(r.id for r in records if holdout_key(r.id) < fraction)


def list_line(rec: ImageRecord) -> str:
    """A PFENet list line: ``<image path> <label path>`` relative to the data root."""
    return f"{rec.image} {rec.label}"


def write_pfenet_lists(folder: Path, fold: int, pool: FoldPool) -> None:
    """Write ``data_list_{fold}.txt`` and ``sub_class_file_list_{fold}.txt`` in PFENet's format.

    The second file is a Python dict literal ``{class: [[image, label], ...]}`` as the PFENet, BAM,
    HMNet and FSSAM repos ship it (read it with ``ast.literal_eval``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / f"data_list_{fold}.txt", "".join(list_line(r) + "\n" for r in pool.images))
    sub = {c: [[r.image, r.label] for r in recs] for c, recs in pool.per_class.items()}
    write_text_atomic(folder / f"sub_class_file_list_{fold}.txt", repr(sub) + "\n")


def write_records(path: Path, split: str, records: Sequence[ImageRecord]) -> None:
    """Save a split's records as canonical JSON (byte-identical for identical content)."""
    write_text_atomic(path, canonical_json({"split": split, "images": [r.to_json() for r in records]}))


def read_records(path: Path) -> list[ImageRecord]:
    """Load records written by :func:`write_records`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return [ImageRecord.from_json(d) for d in data["images"]]
    except FileNotFoundError:
        raise FssBenchError(f"{path}: missing; re-run `fssbench data prepare`") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise FssBenchError(
            f"{path}: corrupt class statistics file ({e}); re-run `fssbench data prepare`"
        ) from None
