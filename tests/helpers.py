"""Helpers shared by the tests that drive ``fssbench run`` in real subprocesses."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "sam2_size": "t",
    "image_size": 256,
    "dinov2": "vits14",
    "dinov2_input_size": 224,
    "random_init": True,
}
"""Tiny random-init models (SAM 2.0-T at 256 px, DINOv2-S at 224 px): a study's `model:` block for tests."""

TINY_128 = {**TINY, "image_size": 128, "dinov2_input_size": 112}
"""Smaller still (128 px, DINOv2 at 112 px): what the training tests train."""


def run_command(study: Path, work: Path, uri: str) -> list[str]:
    """The ``fssbench run`` command line of a study (quiet), as a subprocess argument list."""
    return [
        sys.executable,
        "-m",
        "benchmark.cli",
        "-q",
        "run",
        str(study),
        "--work-dir",
        str(work),
        "--tracking-uri",
        uri,
    ]


def interruptible() -> None:
    """``preexec_fn`` of a child the test stops with SIGINT (Ctrl-C): the default disposition, so
    Python turns it into KeyboardInterrupt. A test run started in the background by a
    non-interactive shell (``pytest ... &``, CI runners) inherits SIGINT *ignored*, which Python
    keeps, and the child would run to its end."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_journal(work: Path, episodes: int, timeout: float = 240) -> Path:
    """Wait until a cell journal under ``work`` holds ``episodes`` rows (after its header line)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list((work / "cells").glob("*/episodes.jsonl")) if work.exists() else []
        if found and len(found[0].read_text().splitlines()) >= episodes + 1:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no cell journal under {work} reached {episodes} episodes in {timeout} s")


def floor_search(root: Path, **extra) -> dict:
    """A model-free search: the ``all_foreground`` reference method (logit +1 everywhere), so a
    pixel is foreground exactly when ``sigmoid(1) >= threshold``."""
    return {
        "name": "floor-search",
        "study": {
            "name": "floor-study",
            "data": {"pascal": str(root)},
            "folds": [0],
            "shots": [1],
            "variants": {"floor": {"method": "all_foreground", "image_size": 32}},
        },
        "episodes": 8,
        "space": {"threshold": {"type": "float", "low": 0.3, "high": 0.95}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "report_every": 4,
        "trials": 4,
        **extra,
    }
