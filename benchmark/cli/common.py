"""Pieces every command module shares: argparse value types, the help formatter, a command's parser,
and the options several commands declare (``--tracking-uri``, ``--work-dir``, ``--device``).

Imports nothing heavy: ``fssbench --help`` and parse errors answer without torch or MLflow.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (the error names the option, exit status 2, before any work)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


class HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help shows its default (options whose default is None or off say it in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def add_command(parent: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """The parser of command ``name`` under ``parent``: ``help`` is both its line in the parent's
    list and its own description."""
    return parent.add_parser(name, help=help, description=help, formatter_class=HelpWithDefaults)


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    """The ``--tracking-uri`` option every command that reads or writes MLflow runs has."""
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )


def add_work_dir(parser: argparse.ArgumentParser, help: str, default: str | None = "fssbench-runs") -> None:
    """The ``--work-dir`` option (checked to name a folder before any work); ``help`` says what the
    command keeps there."""
    parser.add_argument("--work-dir", default=default, help=help)


def add_device(parser: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """The ``--device`` option (auto, cpu, cuda, cuda:1); ``help`` says what it applies to."""
    parser.add_argument("--device", default=default, help=help)
