"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations


class FssBenchError(Exception):
    """A user-facing error: bad input, missing file, inconsistent data.

    The message must be one line that names the offending file or field and says how to fix it.
    """
