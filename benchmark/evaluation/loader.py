"""The episode loader: one manifest episode -> everything a method and the scorer need.

The only place where an episode's pixels are read and transformed. FSSAM (BAM
``transform_new.Resize``) resizes query and supports directly to ``S x S``: images with linear
interpolation (cv2 INTER_LINEAR == torch bilinear, align_corners=False, no antialias), labels with
nearest neighbour (cv2 INTER_NEAREST == torch "nearest"). The query target stays at its ORIGINAL
size for the metric. Data flows one way::

    manifest episode --load_episode--> EpisodeData --method--> logits --metrics--> counts

Images are decoded lazily (:class:`EpisodeImage`), so an episode whose features are all cached
never decodes a JPEG; labels and image hashes are memoised with a bounded LRU.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmark.data.classes import IGNORE_LABEL
from benchmark.data.images import read_label
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes.manifest import Episode, Evaluation
from benchmark.errors import FssBenchError
from benchmark.evaluation.label_cache import (
    LABEL_CACHE_BYTES,
    RAW_LABEL_BYTES,
    BytesLRU,
    shared_image_cache,
    shared_label_cache,
    shared_raw_labels,
)
from benchmark.evaluation.scoring import ScoredTarget

LOADER_VERSION = "decode-rgb+resize-bilinear/1"  # bump when decoding or resizing of images changes
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
K = TypeVar("K")
V = TypeVar("V")


def episode_target(label: ArrayT, cls: int) -> ArrayT:
    """Binary target of one episode from a semantic label map.

    Args:
        label: ``(H, W)`` semantic label (numpy array or torch tensor, any integer dtype) holding
            1-based class ids, 0 for background and ``IGNORE_LABEL`` (255) for "ignore".
        cls: the episode's target class id, in ``1..254``.

    Returns:
        Same type (and, for tensors, device) as ``label``, shape ``(H, W)``, dtype uint8:
        1 where ``label == cls``, 255 where ``label == 255``, 0 elsewhere (other classes included).
    """
    if isinstance(cls, bool) or int(cls) != cls:
        raise FssBenchError(f"episode_target: class id must be an integer, got {cls!r}")
    cls = int(cls)
    if not 0 < cls < IGNORE_LABEL:
        raise FssBenchError(f"episode_target: class id must be in 1..{IGNORE_LABEL - 1}, got {cls}")
    if isinstance(label, torch.Tensor):
        out_t = torch.zeros(label.shape, dtype=torch.uint8, device=label.device)
        out_t[label == cls] = 1
        out_t[label == IGNORE_LABEL] = IGNORE_LABEL
        return out_t
    arr = np.asarray(label)
    out = np.zeros(arr.shape, dtype=np.uint8)
    out[arr == cls] = 1
    out[arr == IGNORE_LABEL] = IGNORE_LABEL
    return out


IMAGE_RESIZES = ("bilinear", "pil-bilinear")
"""How the loader resizes an image to a method's ``S x S`` (the method's optional ``image_resize``):
``bilinear`` (the default: torch bilinear, align_corners=False, no antialias, as FSSAM/BAM's cv2
INTER_LINEAR) or ``pil-bilinear`` (Pillow's ``Image.resize((S, S), Image.BILINEAR)`` on the uint8
image, antialiased when downscaling, as the HSNet-family releases GF-SAM and Matcher load images)."""
DEFAULT_IMAGE_RESIZE = "bilinear"


def check_image_resize(resize: str, where: str = "image_resize") -> str:
    """``resize`` if it is one of :data:`IMAGE_RESIZES`, else an FssBenchError naming ``where``."""
    if resize not in IMAGE_RESIZES:
        raise FssBenchError(f"{where}: {resize!r} is not one of {list(IMAGE_RESIZES)}")
    return resize


def method_image_resize(method: object) -> str:
    """A method's image resize: its ``image_resize`` attribute, :data:`DEFAULT_IMAGE_RESIZE` when it
    has none (every method written before the attribute existed)."""
    resize = getattr(method, "image_resize", None)
    return DEFAULT_IMAGE_RESIZE if resize is None else check_image_resize(str(resize))


def method_reads_masks(method: object) -> bool:
    """Whether a method reads the values of its support and query masks: its ``reads_masks``
    attribute, True when it has none (every method but the model-free ``all_foreground``, which
    takes only their shape)."""
    return bool(getattr(method, "reads_masks", True))


def loader_identity(size: int, resize: str = DEFAULT_IMAGE_RESIZE) -> dict[str, object]:
    """What the pixels an encoder sees depend on besides the image file: how it was decoded and
    resized to ``size`` (part of every feature-cache key). The resize is named only when it is not
    the default, so the keys of the default resize stay what they were before it could be chosen."""
    import PIL

    out: dict[str, object] = {"version": LOADER_VERSION, "image_size": size, "pillow": PIL.__version__}
    if check_image_resize(resize) != DEFAULT_IMAGE_RESIZE:
        out["resize"] = resize
    return out


def resize_image(image: np.ndarray, size: int, resize: str = DEFAULT_IMAGE_RESIZE) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) float32 RGB in 0..255.

    ``resize`` "bilinear": torch bilinear, align_corners=False, no antialias (float output);
    "pil-bilinear": Pillow's bilinear resize of the uint8 image (antialiased when downscaling), so
    the values are the integers PIL gives, as float32."""
    arr = np.array(image, dtype=np.uint8)
    if check_image_resize(resize) == "pil-bilinear":
        pil = Image.fromarray(arr).resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.array(pil, dtype=np.uint8)).permute(2, 0, 1).float().contiguous()
    x = torch.from_numpy(arr).permute(2, 0, 1).float().unsqueeze(0)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]


def resize_label(label: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) uint8 -> (size, size) uint8 (nearest)."""
    y = torch.from_numpy(np.array(label, dtype=np.uint8)).float()[None, None]
    return F.interpolate(y, size=(size, size), mode="nearest")[0, 0].to(torch.uint8)


def scored_target(target: np.ndarray, evaluation: Evaluation) -> np.ndarray:
    """The target an episode is scored on: ``(H, W)`` {0, 1, 255} at the label's size, or resized to
    ``(size, size)`` with nearest (HSNet's ``F.interpolate(mode="nearest")``); without an ignore label
    (HSNet's COCO), 255 becomes background."""
    out = np.array(target, dtype=np.uint8)
    if not evaluation.ignore:
        out[out == IGNORE_LABEL] = 0
    if evaluation.resolution == "resized":
        out = resize_label(out, int(evaluation.size)).numpy()
    return out


class LRU(OrderedDict[K, V]):
    """A dict that keeps at most ``maxsize`` entries, dropping the least recently used."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        while len(self) > self.maxsize:
            self.popitem(last=False)
        return value


MAX_STAMPS = 65536
"""Files whose size and modification time an :class:`ImageStore` remembers (then it starts afresh)."""


class ImageStore:
    """Images (bytes, SHA-256, decoded on demand) and labels of a prepared root.

    What an episode needs of a label is memoised compactly in a :class:`BytesLRU` (bounded by
    bytes): the scored target as bits (:meth:`scored`), the masks at model size as bit planes
    (:meth:`mask`), and the image hashes; decoded labels, from which those are derived, sit in a
    smaller LRU of their own (``raw_labels``), so that they do not crowd out the compact entries.
    Keys name the root, the file and its size and modification time (a file changed on disk is read
    again). :func:`shared_store` gives every cell of a process the same caches, so a label is
    decoded once per process, not once per cell; ``ImageStore(ds)`` alone has its own
    (``max_label_bytes``, and at most :data:`RAW_LABEL_BYTES` of it for the decoded labels).
    """

    def __init__(
        self,
        ds: PreparedDataset,
        max_label_bytes: int = LABEL_CACHE_BYTES,
        cache: BytesLRU | None = None,
        raw_labels: BytesLRU | None = None,
        images: BytesLRU | None = None,
    ):
        self.ds = ds
        self.cache = cache if cache is not None else BytesLRU(max_label_bytes)
        self.raw_labels = (
            raw_labels if raw_labels is not None else BytesLRU(min(max_label_bytes, RAW_LABEL_BYTES))
        )
        self.images = images  # decoded images (None: decoded on every call)
        self._root = str(Path(ds.root).resolve())
        self._stamps: dict[str, tuple[str, str, int, int]] = {}  # this store's (a cell's) view of the files

    def _path(self, rel: str) -> Path:
        return self.ds.root / rel

    def _stamp(self, rel: str) -> tuple[str, str, int, int]:
        """(root, rel, size, mtime): the cache key of a file, taken once per store (one per cell from
        :func:`shared_store`), so a file changed between cells is read again."""
        stamp = self._stamps.get(rel)
        if stamp is not None:
            return stamp
        try:
            st = os.stat(os.path.join(self._root, rel))
        except OSError:  # not remembered: reading it reports the error
            return (self._root, rel, -1, -1)
        if len(self._stamps) >= MAX_STAMPS:  # bounded like the hashes were (a long-lived store)
            self._stamps.clear()
        stamp = self._stamps[rel] = (self._root, rel, st.st_size, st.st_mtime_ns)
        return stamp

    def _read(self, rel: str) -> bytes:
        path = self._path(rel)
        try:
            return path.read_bytes()
        except OSError as e:
            raise FssBenchError(f"{path}: cannot read image ({e}); run `fssbench data check`") from None

    def sha256(self, rel: str) -> str:
        return self.cache.get_or_make(
            ("sha256", *self._stamp(rel)), lambda: hashlib.sha256(self._read(rel)).hexdigest()
        )

    def image(self, rel: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB (read-only): from the ``images`` cache when the store has one
        (:func:`shared_store`), else decoded now."""
        if self.images is None:
            return self._decode(rel)
        return self.images.get_or_make(("image", *self._stamp(rel)), lambda: self._decode(rel))

    def _decode(self, rel: str) -> np.ndarray:
        data = self._read(rel)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as e:
            path = self._path(rel)
            raise FssBenchError(f"{path}: unreadable image ({e}); run `fssbench data check`") from None

    def label(self, rel: str) -> np.ndarray:
        """(H, W) uint8 class ids, 255 = ignore (read-only)."""
        return self._label(self._stamp(rel))

    def _label(self, stamp: tuple) -> np.ndarray:
        return self.raw_labels.get_or_make(("label", *stamp), lambda: read_label(self._path(stamp[1])))

    def target(self, rel: str, cls: int) -> np.ndarray:
        """:func:`episode_target` of the label at ``rel`` for class ``cls`` (a new array, not memoised)."""
        return episode_target(self.label(rel), cls)

    def mask(self, rel: str, cls: int, size: int) -> np.ndarray:
        """The target at model size, (size, size) uint8: :func:`resize_label` of :meth:`target` (a new
        array each call, numpy, so that stacking it is one small copy without torch's threads;
        memoised as bit planes, :class:`PackedMask`)."""
        stamp = self._stamp(rel)
        packed = self.cache.get_or_make(
            ("mask", cls, size, *stamp),
            lambda: PackedMask.of(resize_label(self.target(rel, cls), size).numpy()),
        )
        return packed.unpack()

    def scored(self, rel: str, cls: int, evaluation: Evaluation | None) -> ScoredTarget:
        """The episode's scored target (:func:`scored_target`; the label-size target without an
        ``evaluation``) as :func:`benchmark.evaluation.scoring.score_batch` counts it."""
        stamp = self._stamp(rel)
        how = None if evaluation is None else (evaluation.resolution, evaluation.size, evaluation.ignore)

        def make() -> ScoredTarget:
            target = self.target(rel, cls)
            return ScoredTarget.of(target if evaluation is None else scored_target(target, evaluation))

        return self.cache.get_or_make(("scored", cls, how, *stamp), make)


@dataclass(frozen=True)
class PackedMask:
    """An (H, W) uint8 mask in {0, 1, 255} as bit planes (``np.packbits``): ``fg`` (1) and
    ``ignore`` (255; None when there is none), 1/8 or 1/4 of the bytes."""

    shape: tuple[int, int]
    fg: np.ndarray
    ignore: np.ndarray | None

    @classmethod
    def of(cls, mask: np.ndarray) -> PackedMask:
        m = np.asarray(mask)
        if not np.all((m == 0) | (m == 1) | (m == IGNORE_LABEL)):
            raise ValueError(f"a mask holds only 0, 1 and {IGNORE_LABEL}, found {np.unique(m)[:5]}")
        ignore = m == IGNORE_LABEL
        fg = np.packbits(m == 1)
        ignore_bits = np.packbits(ignore) if ignore.any() else None
        for bits in (fg, ignore_bits):
            if bits is not None:
                bits.flags.writeable = False  # cached: read-only
        return cls((int(m.shape[0]), int(m.shape[1])), fg, ignore_bits)

    def unpack(self) -> np.ndarray:
        """The (H, W) uint8 mask (a new array)."""
        n = self.shape[0] * self.shape[1]
        out = np.unpackbits(self.fg, count=n)
        if self.ignore is not None:
            out += np.unpackbits(self.ignore, count=n) * np.uint8(IGNORE_LABEL)
        return out.reshape(self.shape)


def shared_store(root: Path) -> ImageStore:
    """An :class:`ImageStore` of the prepared root ``root`` on the process-wide cache
    (:func:`benchmark.evaluation.label_cache.shared_label_cache`) and decoded-image cache
    (:func:`benchmark.evaluation.label_cache.shared_image_cache`): what one cell decoded and hashed,
    the next cell of the process finds."""
    return ImageStore(
        PreparedDataset(root),
        cache=shared_label_cache(),
        raw_labels=shared_raw_labels(),
        images=shared_image_cache(),
    )


@dataclass
class EpisodeImage:
    """One image of an episode: its path, content hash, and its pixels at size S on demand (resized
    the way ``resize`` names, see :data:`IMAGE_RESIZES`)."""

    rel: str
    sha256: str
    size: int
    store: ImageStore = field(repr=False)
    resize: str = DEFAULT_IMAGE_RESIZE
    _tensor: torch.Tensor | None = field(default=None, repr=False)

    def tensor(self) -> torch.Tensor:
        """(3, S, S) float32 RGB 0..255, decoded and resized once."""
        if self._tensor is None:
            self._tensor = resize_image(self.store.image(self.rel), self.size, self.resize)
        return self._tensor

    def original(self) -> np.ndarray:
        """(H, W, 3) uint8 at the original resolution (figures)."""
        return self.store.image(self.rel)


@dataclass
class EpisodeData:
    """Inputs and target of one episode: K shots at model size S, original query size (H, W)."""

    episode: Episode
    query: EpisodeImage
    supports: list[EpisodeImage]
    support_masks: torch.Tensor  # (K, S, S) uint8 in {0, 1, 255}
    query_mask: torch.Tensor  # (S, S) uint8 in {0, 1, 255}: the query target at model size (oracle prior)
    scored: ScoredTarget  # the query's target as the metric scores it (at (H, W), or (E, E) resized)
    store: ImageStore | None = field(repr=False, default=None)  # where support_labels are read from
    support_label_files: list[str] = field(repr=False, default_factory=list)  # the supports' label files

    @property
    def query_target(self) -> np.ndarray:
        """(H, W) uint8 in {0, 1, 255}: what the metric scores (or (E, E), resized); a new array."""
        return self.scored.target()

    @property
    def support_labels(self) -> list[np.ndarray]:
        """The supports' (H_k, W_k) targets at label size (figures), read now."""
        if self.store is None:
            return []
        return [self.store.target(rel, self.episode.cls) for rel in self.support_label_files]


def load_episode(
    store: ImageStore,
    images: dict[str, list[str]],
    ep: Episode,
    size: int,
    evaluation: Evaluation | None = None,
    image_resize: str = DEFAULT_IMAGE_RESIZE,
    masks: bool = True,
) -> EpisodeData:
    """Load one episode. ``images`` is the manifest's id -> [image, label] table; ``size`` is S;
    ``evaluation`` (the manifest's, :attr:`benchmark.episodes.manifest.Manifest.evaluation`) sets
    ``query_target``; ``image_resize`` is how the images are resized to S (the method's,
    :func:`method_image_resize`; labels always with nearest). With ``masks=False`` (a method that
    does not read its masks' values, :func:`method_reads_masks`) the masks at S are zero-filled
    broadcast views of the right shape: nothing is read or unpacked for them."""
    check_image_resize(image_resize)

    def image(image_id: str) -> EpisodeImage:
        rel = images[image_id][0]
        return EpisodeImage(rel, store.sha256(rel), size, store, image_resize)

    query_label = images[ep.query][1]
    support_labels = [images[s][1] for s in ep.supports]
    if masks:
        support_masks = torch.from_numpy(np.stack([store.mask(rel, ep.cls, size) for rel in support_labels]))
        query_mask = torch.from_numpy(store.mask(query_label, ep.cls, size))
    else:
        support_masks = torch.zeros(1, 1, 1, dtype=torch.uint8).expand(len(support_labels), size, size)
        query_mask = torch.zeros(1, 1, dtype=torch.uint8).expand(size, size)
    return EpisodeData(
        episode=ep,
        query=image(ep.query),
        supports=[image(s) for s in ep.supports],
        support_masks=support_masks,
        query_mask=query_mask,
        scored=store.scored(query_label, ep.cls, evaluation),
        store=store,
        support_label_files=support_labels,
    )
