"""The method layer's one user-facing exception (it never imports the harness).

``benchmark`` turns it, like its own ``FSSAMError``, into a one-line message and exit status 2.
"""

from __future__ import annotations


class FSSAMError(ValueError):
    """Bad model settings, a checkpoint that does not fit, missing inputs.

    The message is one line that names the offending setting or file and says how to fix it.
    """
