"""The one place that talks to the official ``sam2`` package (PyPI ``sam2==1.1.0``).

FSSAM, the naive SAM 2 baseline and every ablation call these functions; nothing in sam2 is
vendored or patched. What FSSAM changes in SAM 2's behaviour is done here by calling sam2's modules
in a different order (spec sections 3, 6 and 13):

* :func:`build_sam2_model`: SAM 2.0 (default, as in the paper) or 2.1 configs, sizes t/s/b+/l, any
  image size (the RoPE ``feat_sizes`` follow it), strict checkpoint loading with the file's sha256,
  random initialisation only when asked for explicitly;
* :func:`encode_image`: ``forward_image`` + ``_prepare_backbone_features`` (frozen features);
* :func:`mask_to_memory`: SAM 2's mask-as-output conditioning path and its memory encoder;
* :func:`decode`: the SAM mask decoder with no prompts and multimask output, WITHOUT the
  ``NO_OBJ_SCORE`` override that upstream applies when the object score is negative.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fssam.config import SAM2_SIZES, SAM2_VERSIONS
from fssam.errors import FSSAMError
from fssam.hashing import file_sha256

_CKPT_NAMES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sam2_config_name(version: str, size: str) -> str:
    """Hydra config name inside the sam2 package for a version and size."""
    if version not in SAM2_VERSIONS:
        raise FSSAMError(f"sam2 version must be one of {SAM2_VERSIONS}, got {version!r}")
    if size not in SAM2_SIZES:
        raise FSSAMError(f"sam2 size must be one of {SAM2_SIZES}, got {size!r}")
    if version == "2.0":
        return f"configs/sam2/sam2_hiera_{size}.yaml"
    return f"configs/sam2.1/sam2.1_hiera_{size}.yaml"


def sam2_checkpoint_name(version: str, size: str) -> str:
    """Meta's checkpoint file name, e.g. ``sam2_hiera_small.pt`` (2.0) or ``sam2.1_hiera_small.pt``."""
    prefix = "sam2" if version == "2.0" else "sam2.1"
    return f"{prefix}_hiera_{_CKPT_NAMES[size]}.pt"


def parse_sam2_config(name: str) -> tuple[str, str]:
    """``"sam2_hiera_s"`` / ``"sam2.1_hiera_b+.yaml"`` (the authors' config names) -> (version, size)."""
    m = re.fullmatch(r"(?:.*/)?sam2(\.1)?_hiera_(t|s|b\+|l)(?:\.yaml)?", name)
    if not m:
        raise FSSAMError(f"unknown SAM 2 config {name!r}; expected e.g. sam2_hiera_s or sam2.1_hiera_b+")
    return ("2.1" if m.group(1) else "2.0"), m.group(2)


def _key_summary(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return f"{shown}{f' (+{len(keys) - n} more)' if len(keys) > n else ''}"


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict, source: str, what: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the missing/unexpected keys."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    shape = sorted(k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing keys: {_key_summary(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_key_summary(unexpected)}")
        if shape:
            parts.append(f"shape mismatch: {_key_summary(shape)}")
        raise FSSAMError(f"{source} does not fit {what} ({'; '.join(parts)}); check the version/size/config")
    module.load_state_dict(state_dict, strict=True)


def read_checkpoint(path: Path) -> dict:
    """``torch.load`` a checkpoint file (weights only) with a one-line error for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FSSAMError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/pickled-object files
        raise FSSAMError(
            f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None


def sam2_overrides(image_size: int) -> list[str]:
    """Hydra overrides that run SAM 2 at ``image_size`` (RoPE grids follow the stride-16 feature size)."""
    if image_size % 64:
        raise FSSAMError(
            f"image_size must be a multiple of 64 (SAM 2 needs stride-64 inputs), got {image_size}"
        )
    g = image_size // 16
    return [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{g},{g}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{g},{g}]",
    ]


def build_sam2_model(
    version: str = "2.0",
    size: str = "s",
    image_size: int = 512,
    checkpoint: str | Path | None = None,
    random_init: bool = False,
    seed: int | None = None,
    device: str | torch.device = "cpu",
):
    """Build an official ``SAM2Base`` and load Meta's checkpoint strictly.

    Returns the model (eval mode) with attributes ``fss_random_init`` (bool), ``fss_weights_sha256``
    (sha256 of the checkpoint file, None for random init), ``fss_version`` and ``fss_size``.
    ``checkpoint=None`` is an error unless ``random_init=True``.
    """
    from sam2.build_sam import build_sam2

    config = sam2_config_name(version, size)
    if checkpoint is None and not random_init:
        raise FSSAMError(
            f"no SAM 2 checkpoint given: pass the path of {sam2_checkpoint_name(version, size)} "
            "(sam2_checkpoint=...), or random_init=True for a randomly initialised model (tests, demos)"
        )
    if checkpoint is not None and random_init:
        raise FSSAMError("give either a SAM 2 checkpoint or random_init=True, not both")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = build_sam2(
            config, None, device="cpu", mode="eval", hydra_overrides_extra=sam2_overrides(image_size)
        )
    sha = None
    if checkpoint is not None:
        ckpt = read_checkpoint(Path(checkpoint))
        sd = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(sd, dict):
            raise FSSAMError(
                f"{checkpoint}: not a SAM 2 checkpoint (expected a dict with a 'model' state dict)"
            )
        load_state_dict_strict(model, sd, str(checkpoint), f"SAM 2 {version} size {size}")
        sha = file_sha256(Path(checkpoint))
    model.fss_random_init = bool(random_init)
    model.fss_weights_sha256 = sha
    model.fss_version, model.fss_size = version, size
    return model.to(device).eval()


def sam2_from_config(config) -> torch.nn.Module:
    """:func:`build_sam2_model` for the SAM 2 fields of an ``FSSAMConfig`` (version, size, image size,
    checkpoint, ``random_init``, seed)."""
    return build_sam2_model(
        config.sam2_version,
        config.sam2_size,
        config.image_size,
        checkpoint=config.sam2_checkpoint,
        random_init=config.random_init,
        seed=config.seed,
    )


def module_sha256(*modules: torch.nn.Module) -> str:
    """SHA-256 of the named tensors (parameters and buffers) of modules: the identity of their weights."""
    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            t = t.detach().to("cpu").contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def image_encoder_sha256(sam) -> str:
    """Hash of what ``encode_image`` depends on: the image encoder and the decoder's conv_s0/conv_s1.

    Fine-tuning FSSAM leaves these unchanged, so a pretrained SAM 2 and the authors' fine-tuned
    checkpoints share cached features.
    """
    if not hasattr(sam, "_fss_encoder_sha256"):
        mods = [sam.image_encoder]
        if sam.use_high_res_features_in_sam:
            mods += [sam.sam_mask_decoder.conv_s0, sam.sam_mask_decoder.conv_s1]
        sam._fss_encoder_sha256 = module_sha256(*mods)
    return sam._fss_encoder_sha256


PREPROCESSING_VERSION = "fssam-pre/1"  # bump when the images' preprocessing for the encoders changes


def sam2_feature_identity(sam) -> dict[str, object]:
    """What :func:`encode_image`'s output depends on (the feature-cache key of SAM 2 features)."""
    return {
        "encoder": f"sam2-{sam.fss_version}-{sam.fss_size}",
        "weights": image_encoder_sha256(sam),
        "image_size": sam.image_size,
        "preprocessing": PREPROCESSING_VERSION,
    }


def weights_id(sam, seed: int) -> str:
    """sha256 of the SAM 2 checkpoint file, or ``random-init:seed<S>:torch<version>``."""
    return getattr(sam, "fss_weights_sha256", None) or f"random-init:seed{seed}:torch{torch.__version__}"


def effective_precision(device: torch.device | str, precision: str) -> str:
    """The precision a model really runs in: "bf16" (autocast) on CUDA for "auto"/"bf16", else "fp32"."""
    return "bf16" if torch.device(device).type == "cuda" and precision in ("auto", "bf16") else "fp32"


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on CUDA for precision "auto"/"bf16"; nothing elsewhere ("bf16" off CUDA is an error)."""
    if precision == "bf16" and device.type != "cuda":
        raise FSSAMError("precision='bf16' needs a CUDA device; use 'auto' or 'fp32' on CPU")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------------
# Features


@dataclass
class SAM2Features:
    """Frozen SAM 2 image features of a batch of B images at image size S (stride 4, 8, 16).

    ``levels`` are (B, 32, S/4, S/4) and (B, 64, S/8, S/8) (already through the mask decoder's
    ``conv_s0``/``conv_s1``, as ``forward_image`` does) and (B, 256, S/16, S/16). Position encodings
    are a function of the shapes only and are recomputed on demand, so they are not stored.
    """

    levels: list[torch.Tensor]

    @property
    def top(self) -> torch.Tensor:
        """(B, 256, S/16, S/16) stride-16 features (the memory-attention and decoder input)."""
        return self.levels[-1]

    @property
    def high_res(self) -> list[torch.Tensor]:
        """The stride-4 and stride-8 maps the decoder upsamples with."""
        return self.levels[:-1]

    def select(self, index: torch.Tensor | slice) -> SAM2Features:
        return SAM2Features([x[index] for x in self.levels])

    @staticmethod
    def cat(items: list[SAM2Features]) -> SAM2Features:
        return SAM2Features([torch.cat([it.levels[i] for it in items]) for i in range(len(items[0].levels))])


def sam2_preprocess(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, 3, H, W) float RGB 0..255 -> (B, 3, S, S) ``x/255`` normalised with ImageNet mean/std.

    Images not already at S x S are resized bilinearly (align_corners=False).
    """
    x = images.float() / 255.0
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def encode_image(sam, images: torch.Tensor) -> SAM2Features:
    """Frozen image features: ``forward_image`` then the last ``num_feature_levels`` FPN levels.

    Args:
        images: (B, 3, H, W) float RGB in 0..255.
    """
    backbone_out = sam.forward_image(sam2_preprocess(images, sam.image_size))
    levels = backbone_out["backbone_fpn"][-sam.num_feature_levels :]
    return SAM2Features([x.float() for x in levels])


class SAM2ImageEncoder:
    """SAM 2's frozen image encoder as a cacheable encoder (the harness's ``FrozenEncoder``).

    ``encode``: (N, 3, S, S) float RGB 0..255 -> ``{"sam2.0": (N, 32, S/4, S/4), "sam2.1": (N, 64,
    S/8, S/8), "sam2.2": (N, 256, S/16, S/16)}`` (fp32). ``identity()`` names everything the output
    depends on: architecture, image size, image-encoder weights, preprocessing and precision.
    """

    def __init__(self, sam, precision: str = "auto"):
        self.sam, self.precision = sam, precision

    def identity(self) -> dict[str, object]:
        return sam2_feature_identity(self.sam) | {
            "precision": effective_precision(self.sam.device, self.precision)
        }

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images.to(self.sam.device)
        with autocast_context(images.device, self.precision):
            feats = encode_image(self.sam, images)
        return {f"sam2.{i}": x for i, x in enumerate(feats.levels)}


def flatten_levels(
    sam, feats: SAM2Features, positions: str = "all"
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]]]:
    """sam2's (HW, B, C) layout of the features and their sine position encodings, plus the sizes.

    ``positions``: "all" levels, only the "top" (stride-16) level that memory attention uses (a
    one-item list), or "none". The stride-4 encoding is a (B, 256, S/4, S/4) tensor that sam2
    repeats per image (about 17 ms at 512 px on a CPU core pair), so callers skip what they drop.
    """
    pe = sam.image_encoder.neck.position_encoding
    vision_feats = [x.flatten(2).permute(2, 0, 1) for x in feats.levels]
    levels = {"all": feats.levels, "top": feats.levels[-1:], "none": []}[positions]
    vision_pos = [pe(x).to(x.dtype).flatten(2).permute(2, 0, 1) for x in levels]
    sizes = [(x.shape[-2], x.shape[-1]) for x in feats.levels]
    return vision_feats, vision_pos, sizes


# --------------------------------------------------------------------------------------------------
# Memories


@dataclass
class MaskMemory:
    """A memory bank entry: (B, 64, h, w) features, (B, 64, h, w) position encoding, (B, 256) pointer."""

    features: torch.Tensor
    pos: torch.Tensor
    obj_ptr: torch.Tensor


def mask_to_memory(sam, feats: SAM2Features, mask: torch.Tensor, round_to_bf16: bool = True) -> MaskMemory:
    """Encode an image and a (soft) mask into a SAM 2 memory, like a conditioning frame (spec section 3).

    ``_use_mask_as_output`` turns the mask into +-10 logits (and an object pointer through the SAM
    decoder on the mask-downsampled prompt); ``_encode_new_memory`` applies sigmoid, scale 20 and
    bias -10 and runs the memory encoder.

    Args:
        mask: (B, 1, S, S) in [0, 1] (a GT mask or a prior).
        round_to_bf16: store the memory features in bfloat16 precision, as sam2/FSSAM do.
    """
    vision_feats, _, sizes = flatten_levels(sam, feats, positions="none")
    _, high_res_masks, _, _, _, obj_ptr, obj_scores = sam._use_mask_as_output(
        feats.top, feats.high_res, mask.float()
    )
    mem, mem_pos = sam._encode_new_memory(
        vision_feats, sizes, high_res_masks, obj_scores, is_mask_from_pts=False
    )
    if round_to_bf16:
        mem = mem.to(torch.bfloat16).float()
    return MaskMemory(features=mem, pos=mem_pos[-1], obj_ptr=obj_ptr)


def object_pointer_pos(sam, n_pointers: int, batch: int, device: torch.device) -> torch.Tensor:
    """(n_pointers, B, mem_dim) temporal position encodings of object pointers that all sit at t=0.

    SAM 2.0 configs (FSSAM) add none (zeros). SAM 2.1 configs project a sine encoding of the
    temporal distance, which is 0 here because every memory is a conditioning frame.
    """
    if not sam.add_tpos_enc_to_obj_ptrs:
        return torch.zeros(n_pointers, batch, sam.mem_dim, device=device)
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    tpos_dim = sam.hidden_dim if sam.proj_tpos_enc_in_obj_ptrs else sam.mem_dim
    pos = sam.obj_ptr_tpos_proj(get_1d_sine_pe(torch.zeros(n_pointers, device=device), dim=tpos_dim))
    return pos.unsqueeze(1).expand(-1, batch, sam.mem_dim)


def pointer_tokens(sam, obj_ptrs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Object pointers (each (B, 256)) -> (P*256/64, B, 64) tokens and their zero/t=0 positions."""
    ptrs = torch.stack(obj_ptrs, dim=0)  # (P, B, C)
    n, b, c = ptrs.shape
    pos = object_pointer_pos(sam, n, b, ptrs.device)
    if sam.mem_dim < c:
        split = c // sam.mem_dim
        ptrs = ptrs.reshape(n, b, split, sam.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        pos = pos.repeat_interleave(split, dim=0)
    return ptrs, pos


def spatial_memory_tokens(sam, memories: list[MaskMemory]) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial memories -> (n*h*w, B, 64) tokens and positions (+ the t_pos=0 temporal encoding)."""
    tpos = sam.maskmem_tpos_enc[sam.num_maskmem - 1]
    toks = [m.features.flatten(2).permute(2, 0, 1) for m in memories]
    pos = [m.pos.flatten(2).permute(2, 0, 1) + tpos for m in memories]
    return torch.cat(toks, dim=0), torch.cat(pos, dim=0)


def split_shots(memory: MaskMemory, batch: int, shots: int) -> list[MaskMemory]:
    """Memories of B*K support images (b-major) -> K memories of batch B, one per shot."""
    return [
        MaskMemory(
            *(
                x.reshape(batch, shots, *x.shape[1:])[:, i]
                for x in (memory.features, memory.pos, memory.obj_ptr)
            )
        )
        for i in range(shots)
    ]


def memory_tokens(sam, memories: list[MaskMemory]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The memory bank of conditioning-frame memories: [spatial tokens of each ; pointer tokens of each].

    Returns (M, B, 64) tokens, their positions, and the number of (trailing) pointer tokens.
    """
    tokens, pos = spatial_memory_tokens(sam, memories)
    ptrs, ptrs_pos = pointer_tokens(sam, [m.obj_ptr for m in memories])
    return torch.cat([tokens, ptrs]), torch.cat([pos, ptrs_pos]), ptrs.shape[0]


# --------------------------------------------------------------------------------------------------
# Decoding


@dataclass
class Decoded:
    logits: torch.Tensor  # (B, S, S) best mask, upsampled to the image size
    multimask_logits: torch.Tensor  # (B, M, S/4, S/4)
    ious: torch.Tensor  # (B, M)
    object_score_logits: torch.Tensor  # (B, 1)


def decode(sam, pix_feat: torch.Tensor, feats: SAM2Features, multimask: bool = True) -> Decoded:
    """SAM mask decoder on memory-conditioned features, no prompts (a padding point, ``no_mask_embed``).

    Same as sam2's ``_forward_sam_heads`` except that masks are never replaced by ``NO_OBJ_SCORE``
    when the object score is negative (FSSAM comments that line out, spec section 6). With
    ``multimask`` the mask with the highest predicted IoU is kept.

    Args:
        pix_feat: (B, 256, S/16, S/16).
    """
    b = pix_feat.shape[0]
    coords = torch.zeros(b, 1, 2, device=pix_feat.device)
    labels = -torch.ones(b, 1, dtype=torch.int32, device=pix_feat.device)
    sparse, dense = sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    low_res, ious, _, obj_scores = sam.sam_mask_decoder(
        image_embeddings=pix_feat,
        image_pe=sam.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        repeat_image=False,
        high_res_features=feats.high_res,
    )
    low_res = low_res.float()
    best = torch.argmax(ious, dim=-1) if multimask else torch.zeros(b, dtype=torch.long, device=ious.device)
    chosen = low_res[torch.arange(b, device=low_res.device), best].unsqueeze(1)
    high = F.interpolate(chosen, size=(sam.image_size, sam.image_size), mode="bilinear", align_corners=False)
    return Decoded(logits=high[:, 0], multimask_logits=low_res, ious=ious, object_score_logits=obj_scores)


def sam2_trainable_modules(sam) -> dict[str, torch.nn.Module]:
    """The modules FSSAM fine-tunes (its optimizer groups): mask decoder, memory encoder, memory attention."""
    return {
        "sam_mask_decoder": sam.sam_mask_decoder,
        "memory_encoder": sam.memory_encoder,
        "memory_attention": sam.memory_attention,
    }
