"""Read a large JSON object one top-level value at a time, its big arrays one element at a time.

A COCO ``instances_train2014.json`` is 450 MB of text and several GB as Python objects; preparing
it needs only a few fields of each annotation while the whole split is indexed. :func:`stream_object`
walks the top-level object with the standard decoder (``json.JSONDecoder.raw_decode``) on a
bounded window of the file, yielding each element of the named arrays with its byte span, so a
reader can keep the span and read the element back later (:func:`read_spans`).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_NUMBER_CHARS = frozenset("0123456789.eE+-")
CHUNK = 1 << 20


class _Window:
    """A sliding window over a UTF-8 file: ``buf[pos:]`` is unread text starting at byte ``byte``."""

    def __init__(self, f: IO[bytes], on_read: Callable[[int], None] | None):
        self.f, self.on_read = f, on_read
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.byte, self.eof = "", 0, 0, False

    def fill(self) -> bool:
        """Read one more chunk (dropping what was consumed); False at the end of the file."""
        data = self.f.read(CHUNK)
        if self.on_read is not None and data:
            self.on_read(len(data))
        self.eof = not data
        self.buf = self.buf[self.pos :] + self.decoder.decode(data, final=self.eof)
        self.pos = 0
        return not self.eof

    def advance(self, end: int) -> None:
        self.byte += len(self.buf[self.pos : end].encode("utf-8"))
        self.pos = end

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of the file)."""
        while True:
            self.advance(_WHITESPACE.match(self.buf, self.pos).end())  # type: ignore[union-attr]
            if self.pos < len(self.buf) or not self.fill():
                return self.buf[self.pos : self.pos + 1]

    def expect(self, chars: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            raise json.JSONDecodeError(f"expected one of {chars!r}", self.buf, self.pos)
        self.advance(self.pos + 1)
        return c

    def value(self) -> tuple[Any, int, int]:
        """The next JSON value and its byte span ``(start, length)``."""
        self.peek()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
                cut = end == len(self.buf) or (  # a number at the window's end may go on
                    isinstance(obj, (int, float)) and self.buf[end] in _NUMBER_CHARS
                )
                if self.eof or not cut:
                    break
            except json.JSONDecodeError:
                if self.eof:
                    raise
            self.fill()
        start = self.byte
        self.advance(end)
        return obj, start, self.byte - start


def stream_object(
    path: Path,
    arrays: Mapping[str, Callable[[Any, int, int], None]],
    on_read: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Walk the top-level JSON object of ``path``: each element of a member named in ``arrays`` (a
    JSON array) goes to ``arrays[name](element, start, length)`` (its byte span), in order, and is
    not kept; the other members are returned, and each streamed one as its element count.
    ``on_read(n)`` is told of every ``n`` bytes read.

    Raises ``json.JSONDecodeError`` (a ``ValueError``) for text that is not such an object.
    """
    members: dict[str, Any] = {}
    with open(path, "rb") as f:
        w = _Window(f, on_read)
        w.expect("{")
        if w.peek() == "}":
            w.advance(w.pos + 1)
        else:
            while True:
                key, _, _ = w.value()
                if not isinstance(key, str):
                    raise json.JSONDecodeError("expected a member name", w.buf, w.pos)
                w.expect(":")
                if key in arrays:
                    members[key] = _stream_array(w, arrays[key])
                else:
                    members[key] = w.value()[0]
                if w.expect(",}") == "}":
                    break
        if w.peek():
            raise json.JSONDecodeError("extra data after the object", w.buf, w.pos)
    return members


def _stream_array(w: _Window, on_element: Callable[[Any, int, int], None]) -> int:
    """Hand each element of the array at the window's position to ``on_element``; their count."""
    w.expect("[")
    if w.peek() == "]":
        w.advance(w.pos + 1)
        return 0
    n = 0
    while True:
        on_element(*w.value())
        n += 1
        if w.expect(",]") == "]":
            return n


def read_spans(path: Path, spans: Sequence[tuple[int, int]]) -> list[Any]:
    """The JSON values at the byte ``spans`` ``(start, length)`` of ``path``, in order."""
    out = []
    with open(path, "rb") as f:
        for start, length in spans:
            f.seek(start)
            out.append(json.loads(f.read(length)))
    return out
