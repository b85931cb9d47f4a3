"""Episode protocols, by the name a study file or ``fssbench episodes --protocol`` gives them.

A protocol is one object (a frozen dataclass subclassing :class:`Protocol`) holding everything that
differs between protocols: its default seed and episode count, the kinds it draws, where its
episodes are scored, its draw, its options (fields of the dataclass, e.g. fssam-exact's
``draw_workers`` and ``lists``) with their validation, and the tail its options add to a study's
manifest file name. The registry holds each protocol with its default options; :meth:`Protocol.configure`
gives a copy with a user's options. To add one: subclass :class:`Protocol` in a file and call
:func:`register_protocol` (the built-in ones are registered in ``benchmark/episodes/__init__.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from benchmark.data.lists import ImageRecord
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes.manifest import Episode, Evaluation
from benchmark.errors import FssBenchError

RESOLUTIONS = ("original", "resized")
"""Where episodes are scored: at the label's own size (PFENet family) or on a square the image and
label are resized to (HSNet: 400 px, label with nearest)."""
KINDS = ("test", "val")
RESIZED_SIZE = 400
"""The side of the resized square when none is given (HSNet's)."""


@dataclass(frozen=True)
class DrawInput:
    """What a protocol's draw gets: the prepared root, the cell group, the seed and count, the kind,
    the COCO class split, the classes episodes are drawn for, the split's ``records`` and the usable
    ``pool`` among them (for ``kind: val``: images without a novel-class pixel), and ``where``: the
    list the pool comes from, for error messages."""

    ds: PreparedDataset
    fold: int
    shot: int
    seed: int
    episodes: int
    kind: str
    coco_split: str
    classes: list[int]
    records: list[ImageRecord]
    pool: list[ImageRecord]
    where: str


@dataclass(frozen=True)
class Drawn:
    """A draw's episodes and the parameters the manifest records as ``draw`` (None: records none)."""

    episodes: list[Episode]
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class Protocol:
    """One episode protocol. Subclasses set the class variables and implement :meth:`draw`; their
    dataclass fields are the protocol's options (defaults: the authors')."""

    name: ClassVar[str]
    description: ClassVar[str]
    default_seed: ClassVar[int]
    default_episodes: ClassVar[int] = 1000
    kinds: ClassVar[tuple[str, ...]] = KINDS
    """The kinds of manifest the protocol draws (a protocol that replays a test loop: ``("test",)``)."""
    default_resolution: ClassVar[str] = "original"
    user_options: ClassVar[Mapping[str, str]] = {}
    """The options as a study file and the command line name them -> the dataclass field they set
    (the one place a user-facing name maps to its meaning)."""

    def configure(self, options: Mapping[str, Any]) -> Protocol:
        """A copy with ``options`` (user-facing names, :attr:`user_options`) set, then validated."""
        unknown = set(options) - set(self.user_options)
        if unknown:
            raise FssBenchError(
                f"{', '.join(sorted(unknown))}: applies to another protocol (protocol is {self.name})"
            )
        configured = dataclasses.replace(self, **{self.user_options[k]: v for k, v in options.items()})
        configured.check_options()
        return configured

    def check_options(self) -> None:
        """Raise FssBenchError for an invalid option value (none by default)."""

    def check_request(self, kind: str, dataset: str) -> None:
        """Raise FssBenchError when the protocol cannot draw ``kind`` episodes of ``dataset``."""
        if kind not in self.kinds:
            raise FssBenchError(
                f"protocol {self.name} draws {' or '.join(self.kinds)} episodes only, not {kind}"
            )

    def ignores_255(self, dataset: str) -> bool:
        """Whether 255 pixels are excluded from scoring (PASCAL's boundary label)."""
        return True

    def evaluation(self, dataset: str, resolution: str | None = None, size: int | None = None) -> Evaluation:
        """Where ``dataset``'s episodes are scored: :attr:`default_resolution` unless ``resolution``
        says otherwise, resized squares of ``size`` (default 400) px."""
        resolution = resolution or self.default_resolution
        if resolution not in RESOLUTIONS:
            raise FssBenchError(f"evaluation resolution must be one of {RESOLUTIONS}, got {resolution!r}")
        ignore = self.ignores_255(dataset)
        if resolution == "original":
            if size is not None:
                raise FssBenchError("an evaluation size applies to resolution resized only")
            return Evaluation("original", None, ignore)
        size = RESIZED_SIZE if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise FssBenchError(f"evaluation size must be a positive integer, got {size!r}")
        return Evaluation("resized", size, ignore)

    def file_tail(self) -> str:
        """What the options add to a study's manifest file name ('' for none)."""
        return ""

    def draw(self, request: DrawInput) -> Drawn:
        """The episodes of ``request`` (pure: a function of the request and the options)."""
        raise NotImplementedError


_REGISTRY: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Make ``protocol`` (with its default options) known by ``protocol.name``."""
    if protocol.name in _REGISTRY and _REGISTRY[protocol.name] != protocol:
        raise ValueError(f"protocol {protocol.name!r} is already registered")
    _REGISTRY[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> Protocol:
    """The registered protocol ``name``, with its default options."""
    if name not in _REGISTRY:
        raise FssBenchError(f"unknown protocol {name!r}; expected one of {protocol_names()}")
    return _REGISTRY[name]


def protocol_names() -> list[str]:
    """The registered protocols' names, sorted."""
    return sorted(_REGISTRY)
