"""Devices: ``auto`` -> CUDA when available, else CPU; a CUDA request on a machine without it fails
at validation, naming the field that asked for it."""

from __future__ import annotations

from benchmark.errors import FssBenchError


def resolve_device(name: str):
    """The ``torch.device`` for a study's ``device`` setting (auto, cpu, cuda, cuda:1, ...)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise FssBenchError(f"device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FssBenchError(
                f"device {name!r} asked for, but CUDA is not available on this machine; use device: auto or cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FssBenchError(
                f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def check_device(name: str, where: str) -> None:
    """Validate a device setting before any work; the error names ``where`` (a field or an option)."""
    if str(name) in ("auto", "cpu"):  # always valid; no torch import needed to know it
        return
    try:
        resolve_device(str(name))
    except FssBenchError as e:
        raise FssBenchError(f"{where}: {e}") from None
