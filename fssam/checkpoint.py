"""Import of the authors' trained FSSAM checkpoints.

The authors' ``train.py`` saves ``{'epoch', 'state_dict', 'optimizer'}``; ``state_dict`` holds
``sam2.*`` (their vendored SAM 2.0 ``SAM2VideoPredictor``, whose parameters are SAM2Base's) and
``dino.*`` (the torch.hub DINOv2 in Meta's layout), with a ``module.`` prefix when saved from DDP.
``sam2.*`` maps one-to-one onto the official ``SAM2Base``; ``dino.*`` goes through the DINOv2 Meta ->
timm conversion (including Meta's position-embedding resampling). Both are loaded strictly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from fssam.config import FSSAMConfig
from fssam.dinov2 import dinov2_from_meta_state_dict, export_meta_state_dict
from fssam.errors import FSSAMError
from fssam.hashing import file_sha256
from fssam.sam2_adapter import (
    build_sam2_model,
    load_state_dict_strict,
    parse_sam2_config,
    read_checkpoint,
)


def authors_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The model state dict inside an authors' checkpoint file, ``module.`` prefixes removed."""
    ckpt = read_checkpoint(Path(path))
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise FSSAMError(f"{path}: not an FSSAM checkpoint (expected a dict with 'state_dict')")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}


def split_authors_state_dict(
    sd: dict[str, Tensor], source: str
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(SAM 2 state dict, DINOv2 state dict in Meta's layout) from ``sam2.*`` / ``dino.*`` keys."""
    sam2 = {k[len("sam2.") :]: v for k, v in sd.items() if k.startswith("sam2.")}
    dino = {k[len("dino.") :]: v for k, v in sd.items() if k.startswith("dino.")}
    other = sorted(k for k in sd if not k.startswith(("sam2.", "dino.")))
    if other:
        raise FSSAMError(f"{source}: unexpected keys outside sam2.* and dino.*: {', '.join(other[:5])}")
    if not sam2:
        raise FSSAMError(f"{source}: no sam2.* keys; is this an FSSAM checkpoint?")
    return sam2, dino


def load_authors_checkpoint(
    cls: type, path: str | Path, sam2_config: str, image_size: int, dinov2: str, **switches: Any
):
    """Build ``cls`` (FSSAM) with the checkpoint's architecture and load its weights strictly."""
    path = Path(path)
    version, size = parse_sam2_config(sam2_config)
    for reserved in ("sam2_version", "sam2_size", "image_size", "dinov2", "random_init", "sam2_checkpoint"):
        if reserved in switches:
            raise FSSAMError(f"{reserved} is set by from_authors_checkpoint's arguments, not a switch")
    config = FSSAMConfig(
        sam2_version=version, sam2_size=size, image_size=image_size, dinov2=dinov2, **switches
    )
    sam2_sd, dino_sd = split_authors_state_dict(authors_state_dict(path), str(path))
    sha = file_sha256(path)
    sam = build_sam2_model(version, size, image_size, random_init=True, seed=0)  # architecture, then load
    load_state_dict_strict(sam, sam2_sd, f"{path} (sam2.*)", f"SAM 2 {version} size {size} ({sam2_config})")
    sam.fss_random_init, sam.fss_weights_sha256 = False, sha
    dino = None
    if config.needs_dinov2:
        if not dino_sd:
            raise FSSAMError(f"{path}: no dino.* keys, but prior={config.prior!r} needs DINOv2")
        dino = dinov2_from_meta_state_dict(dinov2, dino_sd, f"{path} (dino.*)", sha, config.dinov2_input_size)
    model = cls(config, sam2=sam, dino=dino)
    model.checkpoint_path = str(path)
    return model


def to_authors_state_dict(
    model, dino_meta: dict[str, Tensor] | None = None, ddp: bool = False
) -> dict[str, Tensor]:
    """This implementation's weights in the authors' key layout (``sam2.*``, ``dino.*`` in Meta's layout).

    ``dino_meta`` is the Meta-layout DINOv2 state dict (Meta's 37x37 position grid cannot be recovered
    from a model resampled to 40x40); without it, ``model.dino`` must be a 518-px (37x37) backbone.
    """
    sd = {f"sam2.{k}": v.detach().clone() for k, v in model.sam2.state_dict().items()}
    if model.dino is not None or dino_meta is not None:
        meta = dino_meta if dino_meta is not None else export_meta_state_dict(model.dino)
        sd.update({f"dino.{k}": v for k, v in meta.items()})
    return {f"module.{k}": v for k, v in sd.items()} if ddp else sd


def save_authors_checkpoint(
    model, path: str | Path, epoch: int = 0, dino_meta: dict[str, Tensor] | None = None
) -> None:
    """Write ``model`` (FSSAM) as the authors' ``train.py`` does: ``{'epoch', 'state_dict'}`` with
    ``sam2.*`` and ``dino.*`` (Meta's layout) keys, atomically, so their ``test.py`` (and
    :func:`load_authors_checkpoint`) read it."""
    from fssam.finetune import save_atomic

    save_atomic({"epoch": int(epoch), "state_dict": to_authors_state_dict(model, dino_meta)}, Path(path))


def save_meta_sam2_checkpoint(sam, path: str | Path) -> None:
    """Write SAM 2 weights in Meta's layout (``{'model': state_dict}``), what ``sam2_checkpoint`` and
    ``build_sam2`` read: the export of a fine-tuned naive SAM 2."""
    from fssam.finetune import save_atomic

    save_atomic({"model": {k: v.detach().clone().cpu() for k, v in sam.state_dict().items()}}, Path(path))
