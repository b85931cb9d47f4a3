"""Where the official files live: one table for the weights, one for the datasets.

Each entry names the page that documents its URL. ``known_hash`` is a published checksum
(``md5:...``) where the publisher gives one; elsewhere it is None and the first download records a
sha256 in the lock file (:mod:`benchmark.fetch.download`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from benchmark.errors import FssBenchError


@dataclass(frozen=True)
class Source:
    """One downloadable file.

    ``url``: the official address. ``filename``: its name on disk. ``documented_at``: where the URL
    is published. ``known_hash``: ``md5:<hex>`` / ``sha256:<hex>`` when published, else None.
    ``approx_mb``: approximate size (for ``--list``; weights: parameters x 4 bytes).
    """

    url: str
    filename: str
    documented_at: str
    known_hash: str | None = None
    approx_mb: float | None = None

    @property
    def relative_path(self) -> str:
        """``HOST/PATH`` of the URL: the layout ``wget -x`` (and ``wget --mirror``) creates, which a
        lab mirror serves under its own base URL."""
        parts = urlsplit(self.url)
        return f"{parts.netloc}{parts.path}"

    def url_from(self, mirror: str | None) -> str:
        """The official URL, or the same relative path under ``mirror``."""
        if not mirror:
            return self.url
        if urlsplit(mirror).scheme not in ("http", "https") or not urlsplit(mirror).netloc:
            raise FssBenchError(f"mirror {mirror!r} is not an http:// or https:// URL")
        return f"{mirror.rstrip('/')}/{self.relative_path}"


@dataclass(frozen=True)
class Weights:
    """A checkpoint of a known architecture: ``kind`` "sam2" (``version``, ``size``), "sam1" (SAM 1,
    ``arch`` vit_b | vit_l | vit_h) or "dinov2" (``arch``), what
    :func:`benchmark.fetch.weights.verify_weights` loads it into strictly."""

    name: str
    kind: str
    source: Source
    version: str = ""
    size: str = ""
    arch: str = ""


_SAM2_DOC = "https://github.com/facebookresearch/sam2 (README, checkpoints/download_ckpts.sh)"
_DINOV2_DOC = "https://github.com/facebookresearch/dinov2 (README, 'Pretrained models')"
_SAM2_FILES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
_SAM2_PARAMS_M = {"t": 38.9, "s": 46.0, "b+": 80.8, "l": 224.4}  # SAM 2.1 README table
_DINOV2_PARAMS_M = {"vits14": 21.0, "vitb14": 86.0, "vitl14": 300.0, "vitg14": 1100.0}  # DINOv2 README
_SAM1_DOC = "https://github.com/facebookresearch/segment-anything (README, 'Model Checkpoints')"
_SAM1_FILES = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
_SAM1_PARAMS_M = {
    "vit_b": 93.7,
    "vit_l": 312.3,
    "vit_h": 641.1,
}  # whole model (encoder, prompt encoder, decoder)


def _sam2(version: str, size: str) -> Weights:
    stem = "sam2" if version == "2.0" else "sam2.1"
    folder = "072824" if version == "2.0" else "092824"
    filename = f"{stem}_hiera_{_SAM2_FILES[size]}.pt"
    url = f"https://dl.fbaipublicfiles.com/segment_anything_2/{folder}/{filename}"
    src = Source(url, filename, _SAM2_DOC, approx_mb=round(_SAM2_PARAMS_M[size] * 4 * 1e6 / 2**20))
    return Weights(f"{stem}-{size}", "sam2", src, version, size)


def _sam1(arch: str) -> Weights:
    filename = _SAM1_FILES[arch]
    url = f"https://dl.fbaipublicfiles.com/segment_anything/{filename}"
    src = Source(url, filename, _SAM1_DOC, approx_mb=round(_SAM1_PARAMS_M[arch] * 4 * 1e6 / 2**20))
    return Weights(f"sam-{arch.replace('_', '-')}", "sam1", src, arch=arch)


def _dinov2(arch: str) -> Weights:
    filename = f"dinov2_{arch}_pretrain.pth"
    url = f"https://dl.fbaipublicfiles.com/dinov2/dinov2_{arch}/{filename}"
    src = Source(url, filename, _DINOV2_DOC, approx_mb=round(_DINOV2_PARAMS_M[arch] * 4 * 1e6 / 2**20))
    return Weights(f"dinov2-{arch}", "dinov2", src, arch=arch)


WEIGHTS: dict[str, Weights] = {
    w.name: w
    for w in [
        *(_sam2("2.0", s) for s in _SAM2_FILES),
        *(_sam2("2.1", s) for s in _SAM2_FILES),
        *(_dinov2(a) for a in _DINOV2_PARAMS_M),
        *(_sam1(a) for a in _SAM1_FILES),
    ]
}
"""``sam2-{t,s,b+,l}`` (SAM 2.0, what FSSAM uses), ``sam2.1-{t,s,b+,l}``, ``dinov2-vit{s,b,l,g}14`` and
``sam-vit-{b,l,h}`` (SAM 1, what GF-SAM, PerSAM and Matcher use)."""


@dataclass(frozen=True)
class Archive:
    """A dataset file and what becomes of it: ``extract`` (tar/zip) into the raw root, checked by
    ``expect`` (a path that exists after extraction), or ``place_at`` (a plain file copied there)."""

    source: Source
    expect: str = ""
    place_at: str = ""


_VOC_DOC = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (md5 as in torchvision.datasets.VOCSegmentation)"
_SBD_DOC = "http://home.bharathh.info/pubs/codes/SBD/download.html (md5 as in torchvision.datasets.SBDataset)"
_COCO_DOC = "https://cocodataset.org/#download (no checksums published)"

DATA: dict[str, tuple[Archive, ...]] = {
    "pascal": (
        Archive(
            Source(
                "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                "VOCtrainval_11-May-2012.tar",
                _VOC_DOC,
                "md5:6cd6e144f989b92b3379bac3b3de84fd",
                1907,
            ),
            expect="VOCdevkit/VOC2012/JPEGImages",
        ),
        Archive(
            Source(
                "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
                "benchmark.tgz",
                _SBD_DOC,
                "md5:82b4d87ceb2ed10f6038a1cba92111cb",
                1354,
            ),
            expect="benchmark_RELEASE/dataset/cls",
        ),
        Archive(
            Source(
                "http://home.bharathh.info/pubs/codes/SBD/train_noval.txt",
                "train_noval.txt",
                _SBD_DOC,
                "md5:79bff800c5f0b1ec6b21080a3c066722",
                0.07,
            ),
            place_at="benchmark_RELEASE/dataset/train_noval.txt",
        ),
    ),
    "coco": (
        Archive(
            Source(
                "http://images.cocodataset.org/zips/train2014.zip", "train2014.zip", _COCO_DOC, None, 12885
            ),
            expect="train2014",
        ),
        Archive(
            Source("http://images.cocodataset.org/zips/val2014.zip", "val2014.zip", _COCO_DOC, None, 6337),
            expect="val2014",
        ),
        Archive(
            Source(
                "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
                "annotations_trainval2014.zip",
                _COCO_DOC,
                None,
                241,
            ),
            expect="annotations/instances_val2014.json",
        ),
    ),
}
"""The raw archives of each dataset, in the order they are fetched."""

PREPARE_ARGS: dict[str, str] = {
    "pascal": "--voc {raw}/VOCdevkit --sbd {raw}/benchmark_RELEASE",
    "coco": "--coco {raw}",
}
"""``fssbench data prepare DATASET`` arguments for a raw root filled by ``fssbench fetch data``."""


def weights_named(names: list[str]) -> list[Weights]:
    """The table entries for ``names``; an unknown name is an error listing the known ones."""
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        raise FssBenchError(
            f"unknown weights {', '.join(map(repr, unknown))}: choose from {', '.join(WEIGHTS)} "
            "(fssbench fetch weights --list)"
        )
    return [WEIGHTS[n] for n in names]
