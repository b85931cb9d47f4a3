"""The ``fssbench`` command line: one module per command (``add_parser`` declares its options,
``run`` does it), composed by :mod:`benchmark.cli.entry`.

Every command turns FssBenchError (bad input) into one line on stderr and exit status 2, and writes
its outputs atomically, so a failed or interrupted command leaves nothing half-written.
"""

from __future__ import annotations

from benchmark.cli.entry import build_parser, main

__all__ = ["build_parser", "main"]
