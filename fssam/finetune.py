"""Fine-tuned weights: what training changes (SAM 2's mask decoder, memory encoder and memory
attention), saved on their own and applied on top of the base weights they were trained from.

A fine-tuned checkpoint (``fssam-finetuned/1``) holds only the trainable modules' state dicts plus
the architecture it was trained on, so it is small (about 46 MB for SAM 2-S) and works with any
base, pretrained or random-init (tests, demos). :func:`apply_finetuned` loads it strictly and refuses
a checkpoint of another SAM 2 version, size or image size. The authors' full layout
(``{'epoch', 'state_dict'}`` with ``sam2.*`` / ``dino.*``) is written by
:func:`fssam.checkpoint.to_authors_state_dict` (``fssbench train export``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fssam.config import FSSAMConfig
from fssam.errors import FSSAMError
from fssam.hashing import file_sha256
from fssam.sam2_adapter import (
    MaskMemory,
    SAM2Features,
    effective_precision,
    mask_to_memory,
    read_checkpoint,
    sam2_feature_identity,
    sam2_trainable_modules,
    weights_id,
)
from fssam.stages import SharedStages, run_stage

FORMAT = "fssam-finetuned/1"
ARCH_FIELDS = ("sam2_version", "sam2_size", "image_size")


class TrainableSAM2(nn.Module):
    """Base of the models built on SAM 2 (FSSAM, naive SAM 2): what fine-tuning trains.

    A subclass sets ``sam2`` (the official ``SAM2Base``) and ``config`` (its :class:`FSSAMConfig`)
    in ``__init__``; everything here reads only those two and ``nn.Module``'s own methods.
    """

    sam2: nn.Module
    config: FSSAMConfig

    def trainable_modules(self) -> dict[str, nn.Module]:
        """SAM 2's mask decoder, memory encoder and memory attention (the optimizer's groups)."""
        return sam2_trainable_modules(self.sam2)

    def freeze(self) -> None:
        """Eval mode everywhere, no parameter trainable (inference default)."""
        self.requires_grad_(False)
        self.eval()

    def train_mode(self) -> list[nn.Parameter]:
        """Enable fine-tuning: exactly the trainable modules get gradients and train mode (dropout).

        Returns the trainable parameters. Everything else (image encoder, prompt encoder,
        ``obj_ptr_proj``, ``mask_downsample``, DINOv2) stays frozen and in eval mode.
        """
        self.freeze()
        params = []
        for module in self.trainable_modules().values():
            module.train()
            module.requires_grad_(True)
            params.extend(module.parameters())
        return params

    def finetuned_hashes(self) -> dict[str, str]:
        sha = getattr(self.sam2, "fss_finetuned_sha256", None)
        return {"finetuned": sha} if sha else {}

    def sam2_stage_params(self) -> dict[str, Any]:
        """What a SAM 2 stage (a memory) depends on besides its inputs: architecture, weights
        (fine-tuned ones included), effective precision, bf16 rounding. Part of every shared-stage key."""
        sam, cfg = self.sam2, self.config
        return {
            "sam2": sam2_feature_identity(sam),
            "weights": weights_id(sam, cfg.seed),
            **self.finetuned_hashes(),
            "precision": effective_precision(sam.device, cfg.precision),
            "round_memory_to_bf16": cfg.round_memory_to_bf16,
        }

    def mask_memory(
        self, stage: str, feats: SAM2Features, mask: Any, stages: SharedStages | None, **params: Any
    ) -> MaskMemory:
        """``mask_to_memory`` of (N, 1, S, S) masks on ``feats``, shared across variants as ``stage``
        (``params``: what the mask depends on besides the batch's inputs, e.g. the prior type)."""
        return run_stage(
            stages,
            stage,
            self.sam2_stage_params() | params,
            lambda: mask_to_memory(self.sam2, feats, mask, self.config.round_memory_to_bf16),
        )


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def module_states(modules: Mapping[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """module name -> a detached CPU copy of its state dict."""
    return {
        name: {k: v.detach().clone().cpu() for k, v in m.state_dict().items()} for name, m in modules.items()
    }


def trainable_state(sam: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """SAM 2's trainable modules (:func:`sam2_trainable_modules`) -> a detached copy of each state dict."""
    return module_states(sam2_trainable_modules(sam))


def save_finetuned(
    sam: nn.Module, path: Path, method: str, config: FSSAMConfig, meta: dict[str, Any] | None = None
) -> str:
    """Write the trainable modules of ``sam`` (atomically); returns the file's SHA-256."""
    save_atomic(
        {
            "format": FORMAT,
            "method": method,
            "arch": {k: getattr(config, k) for k in ARCH_FIELDS},
            "modules": trainable_state(sam),
            "meta": dict(meta or {}),
        },
        Path(path),
    )
    return file_sha256(Path(path))


def read_finetuned(path: Path) -> dict[str, Any]:
    ckpt = read_checkpoint(Path(path))
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FSSAMError(
            f"{path}: not a fine-tuned checkpoint ({FORMAT}, written by `fssbench train`); for the "
            "authors' checkpoints use fssam_checkpoint, for Meta's SAM 2 files sam2_checkpoint"
        )
    return ckpt


def apply_finetuned(sam: nn.Module, path: Path, config: FSSAMConfig) -> nn.Module:
    """Load a fine-tuned checkpoint into ``sam`` in place (strictly); tag it with the file's hash."""
    ckpt = read_finetuned(Path(path))
    arch = {k: getattr(config, k) for k in ARCH_FIELDS}
    if ckpt["arch"] != arch:
        raise FSSAMError(
            f"{path}: trained on SAM 2 {ckpt['arch']['sam2_version']}-{ckpt['arch']['sam2_size']} at "
            f"{ckpt['arch']['image_size']} px, but this model is {arch['sam2_version']}-{arch['sam2_size']} "
            f"at {arch['image_size']} px; set the model settings the checkpoint was trained with"
        )
    modules = sam2_trainable_modules(sam)
    if set(ckpt["modules"]) != set(modules):
        raise FSSAMError(f"{path}: holds modules {sorted(ckpt['modules'])}, expected {sorted(modules)}")
    for name, module in modules.items():
        try:
            module.load_state_dict(ckpt["modules"][name], strict=True)
        except RuntimeError as e:
            raise FSSAMError(f"{path}: {name} does not fit: {str(e).splitlines()[0][:300]}") from None
    sam.fss_finetuned_sha256 = file_sha256(Path(path))
    return sam
