"""Episodes, bottom up: the typed manifest every reader uses (:mod:`benchmark.episodes.manifest`),
the protocol registry (:mod:`benchmark.episodes.registry`), the protocols, one file each
(:mod:`benchmark.episodes.protocols`: ``fssam``, ``fssam-exact`` and ``hsnet``, the last two
replaying the authors' test loops), and the building of manifests for a request
(:mod:`benchmark.episodes.manifests`).

A new protocol is one file (a :class:`~benchmark.episodes.registry.Protocol` subclass) plus one
:func:`~benchmark.episodes.registry.register_protocol` call; the built-in ones are registered here.
"""

from benchmark.episodes.protocols.fssam import Fssam
from benchmark.episodes.protocols.fssam_exact import FssamExact
from benchmark.episodes.protocols.hsnet import Hsnet
from benchmark.episodes.registry import Protocol, get_protocol, protocol_names, register_protocol

register_protocol(Fssam())
register_protocol(FssamExact())
register_protocol(Hsnet())

__all__ = ["Protocol", "get_protocol", "protocol_names", "register_protocol"]
