"""DINOv2 prior backbone for FSSAM's Pseudo Prompt Generator (method doc, section 2).

FSSAM loads ``torch.hub.load('facebookresearch/dinov2', 'dinov2_vitb14')``, feeds it 560x560 images
(bilinear resize with ``align_corners=True``, then ``(x - 255*mean) / (255*std)``) and uses the last block's
output after the final LayerNorm, patch tokens only, as a (768, 40, 40) feature map.

This module rebuilds that backbone on timm's DINOv2 architectures (``vit_*_patch14_dinov2``) and loads Meta's
released checkpoint files (``dinov2_vit{s,b,l,g}14_pretrain.pth``) so that the features equal Meta's reference
model for the same weights. The one place where timm and Meta differ numerically is the resampling of the
position embedding from the 37x37 pre-training grid (518 px) to the 40x40 grid (560 px):

* Meta (``DinoVisionTransformer.interpolate_pos_encoding``, models without registers, hub defaults
  ``interpolate_offset=0.1``, ``interpolate_antialias=False``): in float32,
  ``F.interpolate(patch_pos, scale_factor=((g + 0.1) / 37, (g + 0.1) / 37), mode="bicubic", antialias=False)``.
  PyTorch makes the output ``floor(37 * (g + 0.1) / 37) = g`` wide, but samples the source at
  ``(dst + 0.5) * 37 / (g + 0.1) - 0.5``, i.e. with the *given* scale factor, not ``37 / g``; the class token
  embedding is kept as is; the result is cast back to the token dtype. When the grid already is 37x37 (and the
  image is square) Meta returns the embedding unchanged.
* timm (``resample_abs_pos_embed``): ``F.interpolate(size=(g, g), mode="bicubic", antialias=True)``, which
  samples at ``(dst + 0.5) * 37 / g - 0.5`` with the anti-aliased bicubic kernel (a = -0.5 instead of -0.75).

The two differ by far more than float rounding, so this module does its own resampling once, at load time,
into a timm model created for ``img_size=input_size`` (560) without ``dynamic_img_size``; the forward pass then
needs no resampling and rejects any other internal size.

timm vs Meta architecture (checked against dinov2/hub/backbones.py and dinov2/models/vision_transformer.py):

* Embedding dim / depth / heads / patch 14 / qkv, proj and FFN biases / LayerNorm eps 1e-6 / exact GELU /
  LayerScale on both residual branches / class token with a position embedding / no registers: identical.
* LayerScale init: timm ``init_values=1e-5``, Meta's hub ``init_values=1.0``. Irrelevant for loaded weights;
  for random init this module passes ``init_values=1.0`` like Meta's hub.
* ViT-g FFN: Meta ``SwiGLUFFNFused`` with ``hidden = (int(4 * D * 2 / 3) + 7) // 8 * 8`` (4096 for D=1536),
  ``w12`` packed (x1, x2) -> ``silu(x1) * x2`` -> ``w3``. timm ``SwiGLUPacked`` (``GluMlp``, gate first) with
  ``fc1`` = ``w12`` and ``fc2`` = ``w3``: the same computation. timm derives the width from
  ``mlp_ratio=2.66667 * 2``, which gives 8192 = 2 * 4096 only for D=1536; this module computes the width with
  Meta's rule so that reduced test configurations map too.
* Attention: timm uses ``F.scaled_dot_product_attention``, Meta explicit softmax or xFormers: same maths,
  float-rounding differences only.
* Meta's checkpoint has ``mask_token`` (unused at inference); timm has none: it is dropped.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fssam.errors import FSSAMError
from fssam.hashing import file_sha256

__all__ = [
    "DINOV2_ARCHS",
    "DINOv2Arch",
    "DINOv2Backbone",
    "DINOv2Error",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATE_OFFSET",
    "META_PRETRAIN_GRID",
    "PATCH_SIZE",
    "build_dinov2",
    "convert_meta_state_dict",
    "meta_swiglu_hidden",
    "resample_pos_embed_meta",
]

PATCH_SIZE = 14
META_PRETRAIN_GRID = 37  # Meta's checkpoints: img_size=518 -> 37x37 patches (+1 class token)
INTERPOLATE_OFFSET = 0.1  # Meta hub default for the models without registers
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FSSAM_INPUT_SIZE = 560


class DINOv2Error(FSSAMError, ValueError):
    """A DINOv2 build/load error (one-line message naming the file and the arch). Also a ValueError."""


@dataclass(frozen=True)
class DINOv2Arch:
    """Facts about one DINOv2 model without registers (from Meta's dinov2/hub/backbones.py)."""

    name: str  # "vitb14"
    timm_name: str  # "vit_base_patch14_dinov2"
    hub_name: str  # "dinov2_vitb14" (FSSAM's --ver_dino)
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str  # "mlp" or "swiglu" (Meta's SwiGLUFFNFused)
    checkpoint_file: str  # Meta's released file name

    @property
    def checkpoint_url(self) -> str:
        return f"https://dl.fbaipublicfiles.com/dinov2/{self.hub_name}/{self.checkpoint_file}"


def _arch(name: str, timm_name: str, dim: int, depth: int, heads: int, ffn: str) -> DINOv2Arch:
    hub = f"dinov2_{name}"
    return DINOv2Arch(name, timm_name, hub, dim, depth, heads, ffn, f"{hub}_pretrain.pth")


DINOV2_ARCHS: dict[str, DINOv2Arch] = {
    "vits14": _arch("vits14", "vit_small_patch14_dinov2", 384, 12, 6, "mlp"),
    "vitb14": _arch("vitb14", "vit_base_patch14_dinov2", 768, 12, 12, "mlp"),
    "vitl14": _arch("vitl14", "vit_large_patch14_dinov2", 1024, 24, 16, "mlp"),
    "vitg14": _arch("vitg14", "vit_giant_patch14_dinov2", 1536, 40, 24, "swiglu"),
}


def _resolve_arch(arch: str) -> DINOv2Arch:
    key = str(arch).strip().lower()
    key = key.removeprefix("dinov2_")
    if key not in DINOV2_ARCHS:
        raise DINOv2Error(
            f"unknown DINOv2 arch {arch!r}: choose one of {sorted(DINOV2_ARCHS)} (or dinov2_<arch>); "
            "models with registers are not supported"
        )
    return DINOV2_ARCHS[key]


def meta_swiglu_hidden(embed_dim: int, mlp_ratio: float = 4.0) -> int:
    """Hidden width of Meta's ``SwiGLUFFNFused`` (``w3`` input; ``w12`` has twice as many outputs)."""
    hidden = int(embed_dim * mlp_ratio)
    return (int(hidden * 2 / 3) + 7) // 8 * 8


# ------------------------------------------------------------------------------------------ pos embed


def resample_pos_embed_meta(pos_embed: Tensor, new_grid: int) -> Tensor:
    """Resample a Meta position embedding to a ``new_grid`` x ``new_grid`` patch grid, the way Meta does.

    Args:
        pos_embed: (1, 1 + M*M, C): class token embedding followed by the M x M patch grid (M = 37 for Meta's
            released checkpoints).
        new_grid: target grid g (40 for 560 px input).

    Returns:
        (1, 1 + g*g, C) in the dtype of ``pos_embed``. As in Meta's ``interpolate_pos_encoding`` (no registers,
        ``interpolate_offset=0.1``, ``interpolate_antialias=False``): if g == M it is returned unchanged;
        otherwise the grid is resized in float32 with ``F.interpolate(scale_factor=((g + 0.1) / M,) * 2,
        mode="bicubic", antialias=False)``, which yields g x g; the class token embedding is kept.
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise DINOv2Error(f"pos_embed must have shape (1, 1+M*M, C), got {tuple(pos_embed.shape)}")
    n_patch = pos_embed.shape[1] - 1
    m = int(math.sqrt(n_patch))
    if m * m != n_patch or m < 1:
        raise DINOv2Error(
            f"pos_embed has {n_patch} patch positions, not a square grid: {tuple(pos_embed.shape)}"
        )
    new_grid = int(new_grid)
    if new_grid < 1:
        raise DINOv2Error(f"new_grid must be positive, got {new_grid}")
    if new_grid == m:
        return pos_embed  # Meta: `if npatch == N and w == h: return self.pos_embed`
    previous_dtype = pos_embed.dtype
    pe = pos_embed.float()
    cls_pe = pe[:, :1]
    dim = pe.shape[-1]
    grid = pe[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
    s = float(new_grid + INTERPOLATE_OFFSET) / m
    grid = F.interpolate(grid, scale_factor=(s, s), mode="bicubic", antialias=False)
    if tuple(grid.shape[-2:]) != (new_grid, new_grid):  # Meta asserts this too
        raise DINOv2Error(
            f"pos_embed resampling gave {tuple(grid.shape[-2:])}, expected {(new_grid, new_grid)}"
        )
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim)
    return torch.cat([cls_pe, grid], dim=1).to(previous_dtype)


# ------------------------------------------------------------------------------------------ conversion

_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")  # Meta's block_chunks>0 layout: blocks.<chunk>.<i>.
_W12 = re.compile(r"^(blocks\.\d+\.mlp\.)w12\.(weight|bias)$")
_W3 = re.compile(r"^(blocks\.\d+\.mlp\.)w3\.(weight|bias)$")


def _vit_of(model: Any) -> nn.Module:
    vit = getattr(model, "vit", model)
    if not hasattr(vit, "patch_embed") or not hasattr(vit, "pos_embed"):
        raise TypeError(f"expected a timm VisionTransformer or DINOv2Backbone, got {type(model).__name__}")
    return vit


def convert_meta_state_dict(state_dict: Mapping[str, Tensor], model: Any) -> dict[str, Tensor]:
    """Convert a Meta DINOv2 state dict (no registers) to the layout of ``model`` (timm ViT or DINOv2Backbone).

    * ``mask_token`` is dropped (timm has none; it is unused at inference).
    * ViT-g SwiGLU: ``blocks.{i}.mlp.w12.*`` -> ``blocks.{i}.mlp.fc1.*``, ``blocks.{i}.mlp.w3.*`` ->
      ``blocks.{i}.mlp.fc2.*`` (timm's packed SwiGLU, gate half first, is Meta's ``silu(x1) * x2``).
    * Meta's chunked layout ``blocks.{chunk}.{i}.`` (``block_chunks > 0``) becomes ``blocks.{i}.``.
    * ``pos_embed`` (1, 1+37*37, C) is resampled with :func:`resample_pos_embed_meta` to the model's grid.
    * Floating tensors are cast to float32. The input mapping is not modified.

    A checkpoint with register tokens (``*_reg4``) is rejected: those use a different resampling rule.
    """
    vit = _vit_of(model)
    if "register_tokens" in state_dict:
        raise DINOv2Error(
            "checkpoint has register_tokens (a DINOv2 *_reg4 model); only the models without registers "
            "(dinov2_vit{s,b,l,g}14_pretrain.pth) are supported"
        )
    gh, gw = tuple(vit.patch_embed.grid_size)
    if gh != gw:
        raise DINOv2Error(f"model patch grid must be square, got {(gh, gw)}")
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key == "mask_token":
            continue
        if not isinstance(value, Tensor):
            raise DINOv2Error(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        k = _CHUNKED_BLOCK.sub(r"blocks.\1.", key)
        k = _W12.sub(r"\1fc1.\2", k)
        k = _W3.sub(r"\1fc2.\2", k)
        v = value.float() if value.is_floating_point() else value
        if k == "pos_embed":
            v = resample_pos_embed_meta(v, gh)
        if k in out:
            raise DINOv2Error(f"checkpoint has two entries for {k!r} after conversion")
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------ backbone


class DINOv2Backbone(nn.Module):
    """Frozen DINOv2 feature extractor (FSSAM's prior backbone) on a timm ViT.

    Attributes:
        arch: "vits14" | "vitb14" | "vitl14" | "vitg14".
        input_size: side of the square network input (560 in FSSAM).
        grid: input_size // 14 (40 at 560).
        embed_dim: feature channels C (768 for vitb14).
        random_init: True when the weights are random (never silently).
        weights_sha256: sha256 of the checkpoint file bytes, None for random init.
        checkpoint: path of the checkpoint file, None for random init.
        vit: the timm VisionTransformer (img_size=input_size, position embedding already on the grid).
    """

    def __init__(
        self,
        vit: nn.Module,
        arch: str,
        input_size: int,
        random_init: bool,
        weights_sha256: str | None,
        checkpoint: Path | None = None,
    ) -> None:
        super().__init__()
        self.vit = vit
        self.arch = arch
        self.input_size = int(input_size)
        self.grid = self.input_size // PATCH_SIZE
        self.embed_dim = int(vit.embed_dim)
        self.random_init = bool(random_init)
        self.weights_sha256 = weights_sha256
        self.checkpoint = checkpoint
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DINOv2Backbone:
        """The backbone is frozen: it stays in eval mode whatever ``mode`` is."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.vit.cls_token.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vit.cls_token.dtype

    def preprocess(self, images: Tensor | np.ndarray) -> Tensor:
        """FSSAM's DINOv2 input pipeline.

        Args:
            images: (B, 3, H, W) RGB in 0..255 (float or integer, tensor or array), any H, W.

        Returns:
            (B, 3, input_size, input_size) float on the module's device: bilinear resize with
            ``align_corners=True``, then ``(x - 255*mean) / (255*std)`` with ImageNet mean/std.
        """
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[1] != 3:
            raise DINOv2Error(f"DINOv2 expects images of shape (B, 3, H, W), got {tuple(x.shape)}")
        x = x.to(device=self.device, dtype=self.dtype)
        size = (self.input_size, self.input_size)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        mean = self.pixel_mean.to(x.dtype)
        std = self.pixel_std.to(x.dtype)
        return (x - mean) / std

    def forward_preprocessed(self, x: Tensor) -> Tensor:
        """(B, 3, input_size, input_size) normalised input -> (B, C, grid, grid) last-layer normed patch tokens."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise DINOv2Error(
                f"DINOv2 {self.arch} was built for {self.input_size}x{self.input_size} input "
                f"(position embedding resampled to {self.grid}x{self.grid} at load time), got {tuple(x.shape)}; "
                f"rebuild with input_size={x.shape[-1]} or use forward() which resizes"
            )
        with torch.no_grad():
            tokens = self.vit.forward_features(x)  # (B, 1 + grid*grid, C), after the final norm
            patch = tokens[:, self.vit.num_prefix_tokens :]
            b = patch.shape[0]
            return patch.reshape(b, self.grid, self.grid, self.embed_dim).permute(0, 3, 1, 2).contiguous()

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) float RGB in 0..255 at any size -> (B, C, grid, grid).

        The features are the last block's output after the final LayerNorm, patch tokens only (class token
        dropped), as Meta's ``get_intermediate_layers(x, n=1, reshape=True, norm=True)[0]`` on the
        preprocessed images. No gradients are computed (the backbone is frozen).
        """
        return self.forward_preprocessed(self.preprocess(images))

    def extra_repr(self) -> str:
        src = "random_init" if self.random_init else f"sha256={str(self.weights_sha256)[:12]}"
        return f"arch={self.arch}, input_size={self.input_size}, grid={self.grid}, {src}"


# ------------------------------------------------------------------------------------------ builder


def _create_vit(
    spec: DINOv2Arch,
    input_size: int,
    depth: int | None,
    embed_dim: int | None,
    num_heads: int | None,
    device: str | torch.device | None = None,
) -> nn.Module:
    dim = int(embed_dim or spec.embed_dim)
    heads = int(num_heads or spec.num_heads)
    if dim % heads:
        raise DINOv2Error(f"embed_dim {dim} is not divisible by num_heads {heads}")
    kwargs: dict[str, Any] = dict(
        pretrained=False,
        img_size=input_size,
        num_classes=0,
        depth=int(depth or spec.depth),
        embed_dim=dim,
        num_heads=heads,
        init_values=1.0,  # Meta hub; timm's default is 1e-5 (only matters for random init)
        dynamic_img_size=False,  # pos embed is resampled once, Meta's way, at load time
    )
    if spec.ffn == "swiglu":
        hidden = meta_swiglu_hidden(dim)
        # timm's Block uses int(dim * mlp_ratio) for the packed fc1 width (= 2 * hidden); +0.5 guards rounding
        kwargs["mlp_ratio"] = (2 * hidden + 0.5) / dim
    if device is not None:
        kwargs["device"] = device
    vit = timm.create_model(spec.timm_name, **kwargs)
    if spec.ffn == "swiglu":
        fc1 = vit.blocks[0].mlp.fc1.weight.shape[0] if len(vit.blocks) else 2 * meta_swiglu_hidden(dim)
        if fc1 != 2 * meta_swiglu_hidden(dim):
            raise DINOv2Error(f"timm SwiGLU width {fc1} != Meta's 2*{meta_swiglu_hidden(dim)}")
    return vit


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc)
    marker = "WeightsUnpickler error:"  # torch.load(weights_only=True): the useful part is after the preamble
    if marker in text:
        detail = [ln.strip() for ln in text.split(marker, 1)[1].splitlines() if ln.strip()]
        return f"not a weights-only torch file or corrupt: {detail[0][:limit] if detail else '?'}"
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return f"{type(exc).__name__}: {line[:limit]}"


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return f"[{shown}{more}]"


def _check_against_model(sd: Mapping[str, Tensor], vit: nn.Module, path: Path, arch: str) -> None:
    expected = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    # model order for missing / mismatched keys, file order for unexpected ones
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs {expected[k]}"
        for k in expected
        if k in sd and tuple(sd[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches {_few(mismatched, 3)}")
        raise DINOv2Error(
            f"DINOv2 checkpoint {path} does not match arch {arch}: {'; '.join(parts)} "
            f"(is it Meta's dinov2_{arch}_pretrain.pth?)"
        )


def build_dinov2(
    arch: str = "vitb14",
    checkpoint: str | Path | None = None,
    random_init: bool = False,
    input_size: int = FSSAM_INPUT_SIZE,
    seed: int | None = None,
    *,
    depth: int | None = None,
    embed_dim: int | None = None,
    num_heads: int | None = None,
) -> DINOv2Backbone:
    """Build FSSAM's frozen DINOv2 backbone, from Meta's checkpoint file or (explicitly) random weights.

    Args:
        arch: "vits14", "vitb14" (FSSAM's default), "vitl14" or "vitg14" ("dinov2_" prefix accepted).
        checkpoint: Meta's ``dinov2_<arch>_pretrain.pth`` (plain state dict). Loaded with
            ``weights_only=True``, converted (:func:`convert_meta_state_dict`) and loaded strictly.
        random_init: build with random weights instead (must be asked for; never a silent fallback).
        input_size: square network input side, a multiple of 14 (560 -> 40x40 features).
        seed: with ``random_init``, makes the weights deterministic (the global RNG is left untouched).
        depth, embed_dim, num_heads: overrides for reduced test configurations (default: Meta's).

    Returns:
        A :class:`DINOv2Backbone` in eval mode, all parameters with ``requires_grad=False``, on the CPU.
    """
    spec = _resolve_arch(arch)
    if isinstance(input_size, bool) or int(input_size) != input_size or input_size <= 0:
        raise DINOv2Error(f"input_size must be a positive integer, got {input_size!r}")
    input_size = int(input_size)
    if input_size % PATCH_SIZE:
        raise DINOv2Error(f"input_size {input_size} is not a multiple of the patch size {PATCH_SIZE}")
    if checkpoint is None and not random_init:
        raise DINOv2Error(
            f"no DINOv2 weights for {spec.name}: pass checkpoint=<path to Meta's {spec.checkpoint_file}> "
            f"(from {spec.checkpoint_url}) or random_init=True"
        )
    if checkpoint is not None and random_init:
        raise DINOv2Error("pass either checkpoint=... or random_init=True, not both")

    if random_init:
        rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with rng:
            if seed is not None:
                torch.manual_seed(int(seed))
            vit = _create_vit(spec, input_size, depth, embed_dim, num_heads)
        return DINOv2Backbone(vit, spec.name, input_size, random_init=True, weights_sha256=None)

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise DINOv2Error(
            f"DINOv2 checkpoint not found: {path} (expected Meta's {spec.checkpoint_file} from {spec.checkpoint_url})"
        )
    try:
        sha = file_sha256(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / truncated / not a torch file / unreadable
        raise DINOv2Error(
            f"cannot read DINOv2 checkpoint {path} for arch {spec.name} ({_first_line(exc)}); "
            f"re-download Meta's {spec.checkpoint_file}"
        ) from exc
    if not isinstance(state, Mapping) or not state:
        raise DINOv2Error(
            f"DINOv2 checkpoint {path} is not a state dict (got {type(state).__name__}); "
            f"expected Meta's {spec.checkpoint_file}"
        )
    if "pos_embed" not in state and isinstance(state.get("model"), Mapping):
        raise DINOv2Error(
            f"DINOv2 checkpoint {path} is a training checkpoint (top-level 'model'), not Meta's released "
            f"{spec.checkpoint_file}"
        )

    return dinov2_from_meta_state_dict(
        spec.name, state, path, sha, input_size, depth=depth, embed_dim=embed_dim, num_heads=num_heads
    )


def dinov2_from_meta_state_dict(
    arch: str,
    state: Mapping[str, Tensor],
    source: str | Path,
    weights_sha256: str | None,
    input_size: int = FSSAM_INPUT_SIZE,
    *,
    depth: int | None = None,
    embed_dim: int | None = None,
    num_heads: int | None = None,
) -> DINOv2Backbone:
    """A backbone from a state dict in Meta's layout (a ``*_pretrain.pth`` or the ``dino.*`` part of an
    FSSAM checkpoint), converted and loaded strictly. ``source`` names the file in error messages."""
    spec = _resolve_arch(arch)
    path = Path(source)
    vit = _create_vit(spec, input_size, depth, embed_dim, num_heads, device="meta")  # no init cost
    try:
        converted = convert_meta_state_dict(state, vit)
    except DINOv2Error as exc:
        raise DINOv2Error(f"DINOv2 checkpoint {path} for arch {spec.name}: {exc}") from exc
    _check_against_model(converted, vit, path, spec.name)
    try:
        vit.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as exc:
        raise DINOv2Error(f"DINOv2 checkpoint {path} for arch {spec.name}: {_first_line(exc, 300)}") from exc
    leftover = [n for n, t in [*vit.named_parameters(), *vit.named_buffers()] if t.is_meta]
    if leftover:
        raise DINOv2Error(f"DINOv2 checkpoint {path} left tensors unset: {_few(leftover)}")
    return DINOv2Backbone(
        vit, spec.name, input_size, random_init=False, weights_sha256=weights_sha256, checkpoint=path
    )


def export_meta_state_dict(backbone: DINOv2Backbone) -> dict[str, Tensor]:
    """The inverse of :func:`convert_meta_state_dict` for a backbone built at Meta's 37x37 grid (518 px).

    Gives a state dict in Meta's released layout (``mask_token`` added as zeros, SwiGLU ``fc1/fc2``
    renamed to ``w12/w3``), e.g. to write test checkpoints in Meta's or FSSAM's format.
    """
    vit = _vit_of(backbone)
    if tuple(vit.patch_embed.grid_size) != (META_PRETRAIN_GRID, META_PRETRAIN_GRID):
        raise DINOv2Error(f"export needs a {META_PRETRAIN_GRID}x{META_PRETRAIN_GRID} grid model (input 518)")
    swiglu = DINOV2_ARCHS[backbone.arch].ffn == "swiglu"
    out: dict[str, Tensor] = {"mask_token": torch.zeros(1, vit.embed_dim)}
    for key, value in vit.state_dict().items():
        if swiglu:
            key = re.sub(r"^(blocks\.\d+\.mlp\.)fc1\.", r"\1w12.", key)
            key = re.sub(r"^(blocks\.\d+\.mlp\.)fc2\.", r"\1w3.", key)
        out[key] = value.detach().clone()
    return out
