"""What happens around every command: path options checked before any work, user errors as one
line and exit status 2, an interrupt as exit status 130, and note warnings as one line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmark.errors import USER_ERRORS, FssBenchError


def check_path_options(args: argparse.Namespace) -> None:
    """Before any work, nothing created: the tracking store given by ``--tracking-uri`` or
    ``MLFLOW_TRACKING_URI`` is one fssbench can use, and ``--work-dir``/``--cache-dir`` name folders
    (or nothing yet) with no file on their path."""
    from benchmark.records.tracking import check_tracking_uri

    uri = getattr(args, "tracking_uri", None)
    if uri:
        check_tracking_uri(uri, "--tracking-uri")
    elif hasattr(args, "tracking_uri") and os.environ.get("MLFLOW_TRACKING_URI"):
        check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI")
    for name in ("work_dir", "cache_dir"):
        value = getattr(args, name, None)
        if not value:
            continue
        option, path = "--" + name.replace("_", "-"), Path(value)
        for p in (path, *path.parents):
            if p.exists():
                if not p.is_dir():
                    what = "is a file" if p == path else f"has a file on its path ({p})"
                    raise FssBenchError(f"{option} {value} {what}; name a folder (it is created if missing)")
                break


NOTE_WARNINGS = ("ValPoolWarning",)
"""Warnings that are notes to the user (a validation class left out): one plain line each."""


def notes_as_one_line() -> None:
    """Show the warnings of :data:`NOTE_WARNINGS` as ``fssbench: note: ...`` (one line, no file and
    source line), whichever command raises them; any other warning as Python shows it."""
    import warnings

    shown = warnings.showwarning
    if getattr(shown, "fssbench_notes", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if category.__name__ in NOTE_WARNINGS:
            print(f"fssbench: note: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    show.fssbench_notes = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def run_command(args: argparse.Namespace) -> int:
    """The exit status of the command ``args`` selects (``args.fn``), after :func:`check_path_options`:
    its own, 2 for a user error (one ``fssbench: error:`` line), 130 for an interrupt it lets through."""
    try:
        check_path_options(args)
        return args.fn(args)
    except USER_ERRORS as e:
        print(f"fssbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fssbench: interrupted; nothing partial was kept", file=sys.stderr)
        return 130
