"""Pieces every command module shares: argparse value types, the help formatter, a command's parser,
and the options several commands declare (``--tracking-uri``, ``--work-dir``, ``--device``).

Imports nothing heavy: ``fssbench --help`` and parse errors answer without torch or MLflow.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def number(
    kind: type[int] | type[float], low: float, above: bool = False, words: str | None = None
) -> Callable[[str], Any]:
    """An argparse type: ``kind`` (int or float) ``>= low`` (``> low`` when ``above``). The error
    names the option (exit status 2, before any work): ``expected an integer >= 0, got -1``, or in
    ``words`` (``a positive integer``) when given."""
    name = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words or name}, got {text!r}") from None
        if not value >= low:  # NaN included
            raise argparse.ArgumentTypeError(f"expected {words or f'{name} >= {low:g}'}, got {text}")
        if above and value == low:
            raise argparse.ArgumentTypeError(f"expected {words or f'{name} > {low:g}'}, got {text}")
        return value

    return parse


positive_int = number(int, 1, words="a positive integer")
non_negative_int = number(int, 0)
non_negative_float = number(float, 0)
positive_float = number(float, 0, above=True)


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
