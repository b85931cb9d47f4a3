"""Caches of the episode loader that are bounded by bytes and shared by the cells of a process.

Every cell of a study reads the same labels and images: decoding a 500 x 375 PNG costs about a
millisecond, what is derived from it (an episode's scored target, its masks at model size) less,
but each of them once per episode-variant adds up. :class:`BytesLRU` keeps such arrays within a
byte budget (the process-wide ones: :func:`shared_label_cache`, :func:`shared_raw_labels`,
:func:`shared_image_cache`), so memory stays bounded however large the dataset. Values are read-only by contract: arrays are
returned with ``writeable=False``, tensors are copied by their users (``torch.stack``).
"""

from __future__ import annotations

import itertools
import os
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch

from benchmark.errors import FssBenchError

LABEL_CACHE_BYTES = 512 << 20
"""The default byte budget of the process-wide label cache (decoded labels and what is derived
from them); ``FSSBENCH_LABEL_CACHE_GB`` in the environment sets another (:func:`label_cache_bytes`)."""


RAW_LABEL_BYTES = 64 << 20
"""The budget of the process-wide cache of decoded labels (:func:`shared_raw_labels`): they are
only read to derive the compact entries of the label cache, so a few hundred recent ones suffice."""


IMAGE_CACHE_BYTES = 512 << 20
"""The default budget of the process-wide cache of decoded images (:func:`shared_image_cache`);
``FSSBENCH_IMAGE_CACHE_GB`` sets another (0 turns it off)."""


def image_cache_bytes() -> int:
    """The decoded-image cache's budget: ``FSSBENCH_IMAGE_CACHE_GB`` (GiB) if set, else
    :data:`IMAGE_CACHE_BYTES`."""
    return _budget("FSSBENCH_IMAGE_CACHE_GB", IMAGE_CACHE_BYTES)


def label_cache_bytes() -> int:
    """The process-wide label cache's budget: ``FSSBENCH_LABEL_CACHE_GB`` (GiB, a non-negative
    number) if set, else :data:`LABEL_CACHE_BYTES`. The compact entries of a COCO-20i fold and of
    PASCAL-5i fit in the default."""
    return _budget("FSSBENCH_LABEL_CACHE_GB", LABEL_CACHE_BYTES)


def _budget(name: str, default: int) -> int:
    """Bytes from the environment variable ``name`` in GiB (a number >= 0), ``default`` when unset."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        gb = float(raw)
        if not gb >= 0:
            raise ValueError
    except ValueError:
        raise FssBenchError(f"{name}={raw!r}: expected a number of GiB >= 0") from None
    return int(gb * 2**30)


def nbytes(value: Any) -> int:
    """Bytes held by a cached value: an array, a tensor, or a tuple/list of them (plus 100 per entry)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes) + 100
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size() + 100
    if isinstance(value, tuple | list):
        return sum(nbytes(v) for v in value) + 100
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, f)) for f in value.__dataclass_fields__) + 100
    return 100


def _frozen(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    return value


class BytesLRU:
    """A thread-safe mapping that keeps the most recently used values within ``max_bytes``.

    ``get_or_make(key, make)`` returns the cached value or makes it (outside the lock: two loader
    threads decode in parallel); a value larger than the whole budget is returned but not kept.
    ``evict="random"`` drops a random entry instead of the least recently used one when over budget:
    cells run one after another over the same episodes, so where their working set exceeds the
    budget an LRU evicts every entry before the next cell reaches it (no hit at all), while random
    eviction keeps about budget / working set of them.
    ``made`` counts the values made, ``hits`` the values found.
    """

    def __init__(self, max_bytes: int = LABEL_CACHE_BYTES, evict: str = "oldest"):
        if evict not in ("oldest", "random"):
            raise ValueError(f"BytesLRU: evict must be 'oldest' or 'random', got {evict!r}")
        self.max_bytes = int(max_bytes)
        self.evict = evict
        self._rng = random.Random(0)
        self.used = 0
        self.made = self.hits = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found[0]
        value = _frozen(make())
        size = nbytes(value)
        with self._lock:
            self.made += 1
            if size > self.max_bytes or key in self._items:
                return value
            self._items[key] = (value, size)
            self.used += size
            while self.used > self.max_bytes:
                if self.evict == "oldest":
                    _, (_, old) = self._items.popitem(last=False)
                else:
                    victim = next(itertools.islice(self._items, self._rng.randrange(len(self._items)), None))
                    _, old = self._items.pop(victim)
                self.used -= old
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.used = 0


_SHARED: dict[str, BytesLRU] = {}
_SHARED_LOCK = threading.Lock()


def _shared(name: str, make: Callable[[], BytesLRU]) -> BytesLRU:
    """The process-wide cache ``name``, made by ``make`` on first use."""
    with _SHARED_LOCK:
        if name not in _SHARED:
            _SHARED[name] = make()
        return _SHARED[name]


def shared_label_cache() -> BytesLRU:
    """The process-wide label cache that every cell's :class:`benchmark.evaluation.loader.ImageStore`
    uses (keys name the data root, the file and its size and modification time), made on first use
    with :func:`label_cache_bytes`."""
    return _shared("labels", lambda: BytesLRU(label_cache_bytes()))


def shared_raw_labels() -> BytesLRU:
    """The process-wide cache of decoded labels (:data:`RAW_LABEL_BYTES`), beside the label cache."""
    return _shared("raw_labels", lambda: BytesLRU(RAW_LABEL_BYTES))


def shared_image_cache() -> BytesLRU:
    """The process-wide cache of decoded images (:func:`image_cache_bytes`): an image that several
    episodes, cells or encoders need is decoded once while it stays in the budget."""
    # random eviction: a COCO fold's images exceed the budget
    return _shared("images", lambda: BytesLRU(image_cache_bytes(), evict="random"))


def clear_shared() -> None:
    """Empty the process-wide caches of labels and images (tests; a long-lived process that wants
    its memory back)."""
    shared_label_cache().clear()
    shared_raw_labels().clear()
    shared_image_cache().clear()
