"""Devices: ``auto`` -> CUDA when available, else CPU; a CUDA request on a machine without it fails
at validation, naming the field that asked for it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from benchmark.errors import FssBenchError

FEATURE_DTYPE_NAMES = ("fp32", "fp16", "bf16")
"""Storage dtypes of cached frozen features (``cache.dtype`` in a study; torch dtypes in benchmark.evaluation.features)."""


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


def _legacy(read: Callable[[], Any]) -> Any:
    """A legacy precision switch (``allow_tf32``, the float32 matmul precision), or None where torch
    refuses to read it (after a mix of the legacy and the ``fp32_precision`` APIs)."""
    try:
        return read()
    except RuntimeError:
        return None


def _fp32_precision(*chain: Any, legacy: str | None) -> str | None:
    """A backend's effective ``fp32_precision`` ("ieee", "tf32", "bf16"): the first of ``chain`` (the
    backend, then those it inherits from) that sets one (not "none"), else ``legacy`` (what the
    legacy switches say)."""
    for backend in chain:
        value = getattr(backend, "fp32_precision", None)
        if value not in (None, "none"):
            return value
    return legacy


def _tf32(flag: bool | None) -> str | None:
    return None if flag is None else "tf32" if flag else "ieee"


def cuda_numeric_settings() -> dict[str, Any]:
    """torch's process-wide switches that change what CUDA kernels compute: TF32 for matmuls and
    cuDNN convolutions (the legacy flags and the effective ``fp32_precision``), the float32 matmul
    precision, reduced-precision reductions in half/bf16 matmuls, which scaled-dot-product-attention
    kernels may run, and the deterministic settings (``torch.use_deterministic_algorithms``, cuDNN
    autotuning and determinism)."""
    import torch

    cuda, cudnn = torch.backends.cuda, torch.backends.cudnn
    matmul_tf32 = _legacy(lambda: cuda.matmul.allow_tf32)
    cudnn_tf32 = _legacy(lambda: cudnn.allow_tf32)
    return {
        "matmul_allow_tf32": matmul_tf32,
        "cudnn_allow_tf32": cudnn_tf32,
        "float32_matmul_precision": _legacy(torch.get_float32_matmul_precision),
        "matmul_fp32_precision": _fp32_precision(cuda.matmul, torch.backends, legacy=_tf32(matmul_tf32)),
        "conv_fp32_precision": _fp32_precision(
            getattr(cudnn, "conv", None), cudnn, torch.backends, legacy=_tf32(cudnn_tf32)
        ),
        "matmul_bf16_reduced_reduction": cuda.matmul.allow_bf16_reduced_precision_reduction,
        "matmul_fp16_reduced_reduction": cuda.matmul.allow_fp16_reduced_precision_reduction,
        "sdp_kernels": {
            "flash": cuda.flash_sdp_enabled(),
            "mem_efficient": cuda.mem_efficient_sdp_enabled(),
            "math": cuda.math_sdp_enabled(),
            "cudnn": cuda.cudnn_sdp_enabled(),
        },
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": cudnn.benchmark,
        "cudnn_deterministic": cudnn.deterministic,
    }


def cpu_numeric_settings() -> dict[str, Any]:
    """The switches that change CPU results, only those away from full precision: the float32
    matmul precision ("high" lets oneDNN multiply float32 in TF32, "medium" in bf16) and oneDNN's
    effective matmul and convolution ``fp32_precision``. Empty where none is changed."""
    import torch

    mkldnn = torch.backends.mkldnn
    matmul = _legacy(torch.get_float32_matmul_precision)
    found = {
        "float32_matmul_precision": matmul,
        "mkldnn_matmul_fp32_precision": _fp32_precision(
            getattr(mkldnn, "matmul", None),
            mkldnn,
            torch.backends,
            legacy={"highest": "ieee", "high": "tf32", "medium": "bf16"}.get(matmul or ""),
        ),
        "mkldnn_conv_fp32_precision": _fp32_precision(
            getattr(mkldnn, "conv", None), mkldnn, torch.backends, legacy="ieee"
        ),
    }
    return {k: v for k, v in found.items() if v not in ("highest", "ieee", None)}


def device_identity(device) -> dict[str, Any]:
    """What of a ``torch.device`` can change a cell's numbers (part of the cell key), read now (so
    ``--deterministic`` must be applied first).

    CPU: ``{"type": "cpu"}`` plus :func:`cpu_numeric_settings` when any is changed (batched CPU
    logits equal unbatched ones, tested). CUDA: the type, the GPU model, the cuDNN version and
    :func:`cuda_numeric_settings`.
    """
    import torch

    if device.type == "cpu":
        return {"type": "cpu", **cpu_numeric_settings()}
    if device.type != "cuda":
        return {"type": device.type}
    return {
        "type": "cuda",
        "gpu": torch.cuda.get_device_name(device),
        "cudnn": torch.backends.cudnn.version(),
        **cuda_numeric_settings(),
    }


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
