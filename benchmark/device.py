"""Devices: ``auto`` -> CUDA when available, else CPU; a CUDA request on a machine without it fails
at validation, naming the field that asked for it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from benchmark.errors import FssBenchError

FEATURE_DTYPE_NAMES = ("fp32", "fp16", "bf16")
"""Storage dtypes of cached frozen features (``cache.dtype`` in a study; torch dtypes in benchmark.features)."""


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


def set_deterministic() -> None:
    """Deterministic kernels where torch has them (``--deterministic``): no cuDNN autotuning, no TF32,
    ``torch.use_deterministic_algorithms`` (warn-only for ops without a deterministic version)."""
    import os

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def compile_method(method, **options: Any) -> int:
    """``torch.compile`` a method's hot modules in place, so that what runs per image and per episode
    runs compiled: SAM 2's image encoder, memory encoder and mask decoder (``nn.Module.compile``, as
    each is called as a module), the memory-attention loop that fssam/scma.py drives layer by layer
    (:func:`fssam.scma.compile_memory_attention`; ``MemoryAttention.forward`` itself never runs),
    and the DINOv2 backbone. State-dict keys and weight hashes do not change. ``options`` go to
    ``torch.compile`` (``backend=...``, ``mode=...``). Returns how many modules were compiled now
    (pooled modules shared with another variant are compiled once)."""
    from fssam.scma import compile_memory_attention

    sam, dino = getattr(method, "sam2", None), getattr(method, "dino", None)
    todo: list[tuple[Any, Callable[[], None]]] = []
    if sam is not None:
        for m in (sam.image_encoder, sam.memory_encoder, sam.sam_mask_decoder):
            todo.append((m, functools.partial(m.compile, **options)))
        attn = sam.memory_attention
        todo.append((attn, functools.partial(compile_memory_attention, attn, **options)))
    if dino is not None:
        todo.append((dino, functools.partial(dino.compile, **options)))
    done = 0
    for m, compile_it in todo:
        if not getattr(m, "_fss_compiled", False):
            compile_it()
            m._fss_compiled = True
            done += 1
    return done
