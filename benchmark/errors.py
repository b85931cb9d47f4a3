"""The exceptions that the CLI turns into a one-line message and exit status 2."""

from __future__ import annotations

from fssam.errors import FSSAMError


class FssBenchError(Exception):
    """A user-facing error of the harness: bad input, missing file, inconsistent data.

    The message must be one line that names the offending file or field and says how to fix it.
    """


USER_ERRORS: tuple[type[Exception], ...] = (FssBenchError, FSSAMError)
"""What a command reports as one line (exit 2) instead of a traceback: the harness's errors and the
method layer's (``fssam.errors.FSSAMError``, raised by FSSAM, the baselines and their checkpoints)."""
