"""fssam.dinov2 against an independent plain-torch re-implementation of Meta's DINOv2 forward.

The reference below follows facebookresearch/dinov2 (models/vision_transformer.py ``prepare_tokens_with_masks``,
``interpolate_pos_encoding`` with ``interpolate_offset=0.1`` / ``antialias=False``, ``get_intermediate_layers``
with ``norm=True, reshape=True``; layers/block.py, attention.py, layer_scale.py, mlp.py, swiglu_ffn.py) and takes
Meta-layout state dicts. It shares no code with fssam.dinov2. No pretrained weights are available offline, so
every check uses random Meta-layout state dicts saved as .pth files.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from fssam.dinov2 import (
    DINOV2_ARCHS,
    DINOv2Backbone,
    build_dinov2,
    convert_meta_state_dict,
    resample_pos_embed_meta,
)
from fssam.errors import FSSAMError

TOL = 1e-4

# ------------------------------------------------------------------------------------------ reference


def meta_state_dict(
    dim: int, depth: int, heads: int, *, swiglu: bool = False, seed: int = 0, grid: int = 37
) -> dict[str, torch.Tensor]:
    """A random state dict in Meta's released layout (dinov2_vit*14_pretrain.pth)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 0.02, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std + mean

    sd = {
        "cls_token": rnd(1, 1, dim, std=0.5),
        "pos_embed": rnd(1, 1 + grid * grid, dim, std=0.5),
        "mask_token": rnd(1, dim),
        "patch_embed.proj.weight": rnd(dim, 3, 14, 14, std=0.03),
        "patch_embed.proj.bias": rnd(dim, std=0.1),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd[p + "norm1.weight"] = rnd(dim, std=0.1, mean=1.0)
        sd[p + "norm1.bias"] = rnd(dim, std=0.1)
        sd[p + "attn.qkv.weight"] = rnd(3 * dim, dim, std=0.08)
        sd[p + "attn.qkv.bias"] = rnd(3 * dim, std=0.05)
        sd[p + "attn.proj.weight"] = rnd(dim, dim, std=0.05)
        sd[p + "attn.proj.bias"] = rnd(dim, std=0.05)
        sd[p + "ls1.gamma"] = rnd(dim, std=0.2, mean=0.5)
        sd[p + "norm2.weight"] = rnd(dim, std=0.1, mean=1.0)
        sd[p + "norm2.bias"] = rnd(dim, std=0.1)
        if swiglu:
            hidden = (int(dim * 4 * 2 / 3) + 7) // 8 * 8  # SwiGLUFFNFused
            sd[p + "mlp.w12.weight"] = rnd(2 * hidden, dim, std=0.08)
            sd[p + "mlp.w12.bias"] = rnd(2 * hidden, std=0.05)
            sd[p + "mlp.w3.weight"] = rnd(dim, hidden, std=0.05)
            sd[p + "mlp.w3.bias"] = rnd(dim, std=0.05)
        else:
            sd[p + "mlp.fc1.weight"] = rnd(4 * dim, dim, std=0.05)
            sd[p + "mlp.fc1.bias"] = rnd(4 * dim, std=0.05)
            sd[p + "mlp.fc2.weight"] = rnd(dim, 4 * dim, std=0.05)
            sd[p + "mlp.fc2.bias"] = rnd(dim, std=0.05)
        sd[p + "ls2.gamma"] = rnd(dim, std=0.2, mean=0.5)
    sd["norm.weight"] = rnd(dim, std=0.1, mean=1.0)
    sd["norm.bias"] = rnd(dim, std=0.1)
    return sd


def fssam_preprocess(images: torch.Tensor, size: int = 560) -> torch.Tensor:
    """FSSAM (method doc section 2): bilinear align_corners=True resize, then (x - 255 mean) / (255 std)."""
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean * 255) / (std * 255)


def meta_interpolate_pos_encoding(
    pos_embed: torch.Tensor, x_tokens: torch.Tensor, w: int, h: int
) -> torch.Tensor:
    """Meta's DinoVisionTransformer.interpolate_pos_encoding (no registers, offset 0.1, no antialias)."""
    previous_dtype = x_tokens.dtype
    npatch = x_tokens.shape[1] - 1
    n = pos_embed.shape[1] - 1
    if npatch == n and w == h:
        return pos_embed
    pos_embed = pos_embed.float()
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = x_tokens.shape[-1]
    w0, h0 = w // 14, h // 14
    m = int(math.sqrt(n))
    sx, sy = float(w0 + 0.1) / m, float(h0 + 0.1) / m
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, m, m, dim).permute(0, 3, 1, 2),
        scale_factor=(sx, sy),
        mode="bicubic",
        antialias=False,
    )
    assert (w0, h0) == tuple(patch_pos_embed.shape[-2:])
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1).to(previous_dtype)


def meta_reference_features(
    sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, norm: bool = True
) -> torch.Tensor:
    """Meta's get_intermediate_layers(x, n=1, reshape=True, norm=True)[0] on an already normalised x;
    ``norm=False``: the last block's output before the final LayerNorm (``x_prenorm``), same layout."""
    b, _, w, h = x.shape
    dim = sd["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})

    def ln(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(t, (dim,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-6)

    def lin(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(t, sd[name + ".weight"], sd[name + ".bias"])

    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat((sd["cls_token"].expand(b, -1, -1), t), dim=1)
    t = t + meta_interpolate_pos_encoding(sd["pos_embed"], t, w, h)
    n = t.shape[1]
    for i in range(depth):
        p = f"blocks.{i}."
        y = ln(t, p + "norm1")
        qkv = lin(y, p + "attn.qkv").reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (dim // heads) ** -0.5, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        y = lin((attn @ v).transpose(1, 2).reshape(b, n, dim), p + "attn.proj")
        t = t + y * sd[p + "ls1.gamma"]
        y = ln(t, p + "norm2")
        if p + "mlp.w12.weight" in sd:
            x1, x2 = lin(y, p + "mlp.w12").chunk(2, dim=-1)
            y = lin(F.silu(x1) * x2, p + "mlp.w3")
        else:
            y = lin(F.gelu(lin(y, p + "mlp.fc1")), p + "mlp.fc2")
        t = t + y * sd[p + "ls2.gamma"]
    t = (ln(t, "norm") if norm else t)[:, 1:]
    return t.reshape(b, w // 14, h // 14, -1).permute(0, 3, 1, 2).contiguous()


def numpy_bicubic_scale_factor(grid: np.ndarray, out: int, scale_factor: float) -> np.ndarray:
    """Hand-written separable bicubic (A=-0.75, border clamp, align_corners=False) sampling at
    src = (dst + 0.5) / scale_factor - 0.5, i.e. PyTorch's rule when a scale factor is given. grid: (C, M, M)."""
    a = -0.75

    def weights(t: float) -> list[float]:
        def c1(d: float) -> float:  # |d| <= 1
            return ((a + 2) * d - (a + 3)) * d * d + 1

        def c2(d: float) -> float:  # 1 < |d| < 2
            return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

        return [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)]

    m = grid.shape[-1]
    mat = np.zeros((out, m))
    for d in range(out):
        src = (d + 0.5) / scale_factor - 0.5
        i0 = math.floor(src)
        for k, wk in zip(range(i0 - 1, i0 + 3), weights(src - i0), strict=True):
            mat[d, min(max(k, 0), m - 1)] += wk
    return np.einsum("ym,cmn,xn->cyx", mat, grid.astype(np.float64), mat)


# ------------------------------------------------------------------------------------------ fixtures


def save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(sd, path)
    return path


def images(b: int = 2, h: int = 300, w: int = 420, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.fixture(scope="module")
def vits_small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """ViT-S/14 dims, depth 2."""
    sd = meta_state_dict(384, 2, 6, seed=0)
    return save(sd, tmp_path_factory.mktemp("ckpt") / "dinov2_vits14_d2.pth"), sd


# ------------------------------------------------------------------------------------------ 1. equivalence


def test_vits14_full_depth_matches_meta_reference(tmp_path: Path) -> None:
    sd = meta_state_dict(384, 12, 6, seed=3)
    path = save(sd, tmp_path / "dinov2_vits14_pretrain.pth")
    model = build_dinov2("vits14", checkpoint=path)
    imgs = images(1)
    got = model(imgs)
    ref = meta_reference_features(sd, fssam_preprocess(imgs), heads=6)
    assert got.shape == (1, 384, 40, 40)
    assert (got - ref).abs().max().item() <= TOL
    assert ref.std().item() > 0.1  # a non-degenerate comparison


def test_reduced_depth_batch_matches_meta_reference(vits_small_ckpt) -> None:
    path, sd = vits_small_ckpt
    model = build_dinov2("vits14", checkpoint=path, depth=2)
    imgs = images(2, 300, 420)
    got = model(imgs)
    ref = meta_reference_features(sd, fssam_preprocess(imgs), heads=6)
    assert got.shape == ref.shape == (2, 384, 40, 40)
    assert (got - ref).abs().max().item() <= TOL
    # batch elements are independent
    one = model(imgs[1:])
    assert (one[0] - got[1]).abs().max().item() <= TOL


def test_giant_swiglu_mapping_matches_meta_reference(tmp_path: Path) -> None:
    # ViT-g layout (SwiGLU w12/w3), reduced: dim 64 -> Meta hidden (int(256*2/3)+7)//8*8 = 176, 4 heads, 2 blocks
    sd = meta_state_dict(64, 2, 4, swiglu=True, seed=5)
    assert sd["blocks.0.mlp.w12.weight"].shape == (352, 64)
    path = save(sd, tmp_path / "dinov2_vitg14_small.pth")
    model = build_dinov2("vitg14", checkpoint=path, depth=2, embed_dim=64, num_heads=4)
    assert model.embed_dim == 64
    imgs = images(2, 420, 300)
    got = model(imgs)
    ref = meta_reference_features(sd, fssam_preprocess(imgs), heads=4)
    assert (got - ref).abs().max().item() <= TOL
    # swapping the two halves of w12 (gate on the wrong half) must be caught by the same comparison
    bad = dict(sd)
    for i in range(2):
        for s in ("weight", "bias"):
            k = f"blocks.{i}.mlp.w12.{s}"
            a, c = sd[k].chunk(2, dim=0)
            bad[k] = torch.cat([c, a], dim=0)
    ref_bad = meta_reference_features(bad, fssam_preprocess(imgs), heads=4)
    assert (got - ref_bad).abs().max().item() > 1e-2


def test_full_giant_width_follows_meta_rule() -> None:
    # timm's default mlp_ratio=2.66667*2 and Meta's (int(6144*2/3)+7)//8*8 = 4096 agree at D=1536
    from fssam.dinov2 import _create_vit, meta_swiglu_hidden

    assert meta_swiglu_hidden(1536) == 4096
    vit = _create_vit(DINOV2_ARCHS["vitg14"], 560, 1, None, None, device="meta")
    assert tuple(vit.blocks[0].mlp.fc1.weight.shape) == (8192, 1536)
    assert tuple(vit.blocks[0].mlp.fc2.weight.shape) == (1536, 4096)
    assert tuple(vit.pos_embed.shape) == (1, 1601, 1536)


# ------------------------------------------------------------------------------------------ 2. resampling


def test_resample_matches_hand_written_bicubic_with_scale_factor() -> None:
    pe = torch.randn(1, 1 + 37 * 37, 8, generator=torch.Generator().manual_seed(0))
    out = resample_pos_embed_meta(pe, 40)
    assert out.shape == (1, 1601, 8)
    assert torch.equal(out[:, 0], pe[:, 0])
    grid = pe[0, 1:].reshape(37, 37, 8).permute(2, 0, 1).numpy()
    expect = numpy_bicubic_scale_factor(grid, 40, 40.1 / 37)
    got = out[0, 1:].reshape(40, 40, 8).permute(2, 0, 1).numpy()
    np.testing.assert_allclose(got, expect, atol=1e-4)  # PyTorch computes source coordinates in float32
    # ... and sampling at (dst+0.5)*37/40-0.5 (what size=(40,40) does) is a different function
    other = numpy_bicubic_scale_factor(grid, 40, 40 / 37)
    assert np.abs(other - got).max() > 1e-2


def test_resample_identity_at_pretrain_grid_and_dtype() -> None:
    pe = torch.randn(1, 1 + 37 * 37, 4)
    assert resample_pos_embed_meta(pe, 37) is pe  # Meta returns the embedding untouched
    half = pe.to(torch.bfloat16)
    out = resample_pos_embed_meta(half, 40)
    assert out.dtype == torch.bfloat16
    ref = resample_pos_embed_meta(half.float(), 40)  # computed in float32, cast at the end
    assert torch.equal(out, ref.to(torch.bfloat16))
    for g in (16, 32, 36, 38, 40, 64, 80):
        assert resample_pos_embed_meta(pe, g).shape == (1, 1 + g * g, 4)


def test_timm_resampling_would_not_match(vits_small_ckpt) -> None:
    path, sd = vits_small_ckpt
    model = build_dinov2("vits14", checkpoint=path, depth=2)
    imgs = images(1)
    ref = meta_reference_features(sd, fssam_preprocess(imgs), heads=6)
    ours = model(imgs)
    assert (ours - ref).abs().max().item() <= TOL

    meta_pe = resample_pos_embed_meta(sd["pos_embed"], 40)
    timm_pe = resample_abs_pos_embed(
        sd["pos_embed"], new_size=(40, 40), num_prefix_tokens=1
    )  # antialias=True
    size_pe = resample_abs_pos_embed(sd["pos_embed"], new_size=(40, 40), num_prefix_tokens=1, antialias=False)
    assert torch.equal(model.vit.pos_embed.data, meta_pe)
    assert (timm_pe - meta_pe).abs().max().item() > 1e-2
    assert (size_pe - meta_pe).abs().max().item() > 1e-2  # the +0.1 offset alone matters too

    for pe in (timm_pe, size_pe):
        with torch.no_grad():
            model.vit.pos_embed.copy_(pe)
        diff = (model(imgs) - ref).abs().max().item()
        assert diff > 1e-2, diff  # a regression to timm's resampling is caught by the reference test
    with torch.no_grad():
        model.vit.pos_embed.copy_(meta_pe)
    assert (model(imgs) - ref).abs().max().item() <= TOL


def test_convert_meta_state_dict_layout() -> None:
    sd = meta_state_dict(64, 2, 4, swiglu=True, seed=2)
    model = build_dinov2("vitg14", random_init=True, seed=0, depth=2, embed_dim=64, num_heads=4)
    before = {k: v.clone() for k, v in sd.items()}
    out = convert_meta_state_dict(sd, model)
    assert "mask_token" not in out
    assert not any(".w12." in k or ".w3." in k for k in out)
    assert torch.equal(out["blocks.1.mlp.fc1.weight"], sd["blocks.1.mlp.w12.weight"])
    assert torch.equal(out["blocks.0.mlp.fc2.bias"], sd["blocks.0.mlp.w3.bias"])
    assert out["pos_embed"].shape == (1, 1601, 64)
    assert set(out) == set(model.vit.state_dict())
    assert all(torch.equal(before[k], sd[k]) for k in sd)  # input untouched
    # Meta's chunked block layout (block_chunks > 0): blocks.<chunk>.<i>.
    chunked = {
        (k.replace("blocks.", "blocks.0.", 1) if k.startswith("blocks.") else k): v for k, v in sd.items()
    }
    out2 = convert_meta_state_dict(chunked, model.vit)
    assert set(out2) == set(out)
    with pytest.raises(FSSAMError, match="register"):
        convert_meta_state_dict({**sd, "register_tokens": torch.zeros(1, 4, 64)}, model)


# ------------------------------------------------------------------------------------------ 3. loading


def test_wrong_arch_file_names_keys(vits_small_ckpt, tmp_path: Path) -> None:
    path, sd = vits_small_ckpt
    # ViT-S file for a ViT-B model (reduced depth for speed): shape mismatches
    with pytest.raises(FSSAMError) as ei:
        build_dinov2("vitb14", checkpoint=path, depth=2)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg and "vitb14" in msg
    assert "shape mismatches [cls_token (1, 1, 384) vs (1, 1, 768)" in msg
    assert isinstance(ei.value, ValueError)
    # depth-2 file for a depth-3 model: missing keys; depth-2 file for a depth-1 model: unexpected keys
    with pytest.raises(FSSAMError, match=r"missing keys \[blocks\.2\.") as ei:
        build_dinov2("vits14", checkpoint=path, depth=3)
    assert str(path) in str(ei.value) and "vits14" in str(ei.value)
    with pytest.raises(FSSAMError, match=r"unexpected keys \[blocks\.1\."):
        build_dinov2("vits14", checkpoint=path, depth=1)
    # ViT-g (SwiGLU) file for an MLP model of the same width
    g = save(meta_state_dict(384, 1, 6, swiglu=True), tmp_path / "g.pth")
    with pytest.raises(FSSAMError, match=r"blocks\.0\.mlp\.fc1\.weight"):
        build_dinov2("vits14", checkpoint=g, depth=1)
    # a key missing from an otherwise fine file
    broken = dict(sd)
    del broken["norm.bias"]
    p = save(broken, tmp_path / "no_norm_bias.pth")
    with pytest.raises(FSSAMError, match=r"missing keys \[norm\.bias\]"):
        build_dinov2("vits14", checkpoint=p, depth=2)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "dinov2_vitb14_pretrain.pth"
    with pytest.raises(FSSAMError, match="not found") as ei:
        build_dinov2("vitb14", checkpoint=missing)
    assert str(missing) in str(ei.value)

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(FSSAMError) as ei:
        build_dinov2("vitb14", checkpoint=corrupt)
    assert str(corrupt) in str(ei.value) and "\n" not in str(ei.value)

    truncated = tmp_path / "truncated.pth"
    full = tmp_path / "full.pth"
    save(meta_state_dict(32, 1, 2), full)
    truncated.write_bytes(full.read_bytes()[:2000])
    with pytest.raises(FSSAMError, match="cannot read") as ei:
        build_dinov2("vits14", checkpoint=truncated)
    assert str(truncated) in str(ei.value)

    not_a_dict = save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(FSSAMError, match="not a state dict"):
        build_dinov2("vits14", checkpoint=not_a_dict)


def test_weights_are_never_silently_random(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"checkpoint.*random_init=True"):
        build_dinov2()
    with pytest.raises(FSSAMError, match="random_init=True"):
        build_dinov2("vits14", checkpoint=None, random_init=False)
    with pytest.raises(FSSAMError, match="not both"):
        build_dinov2("vits14", checkpoint=tmp_path / "x.pth", random_init=True)
    with pytest.raises(FSSAMError, match="unknown DINOv2 arch"):
        build_dinov2("vith14", random_init=True)
    with pytest.raises(FSSAMError, match="multiple of the patch size"):
        build_dinov2("vits14", random_init=True, input_size=500, depth=1)


# ------------------------------------------------------------------------------------------ 4. misc


def test_preprocess_constant_image() -> None:
    model = build_dinov2("vits14", random_init=True, seed=0, depth=1)
    img = torch.empty(1, 3, 37, 53)
    img[:, 0], img[:, 1], img[:, 2] = 200.0, 100.0, 17.0
    x = model.preprocess(img)
    assert x.shape == (1, 3, 560, 560) and x.dtype == torch.float32
    expect = [
        (200 - 0.485 * 255) / (0.229 * 255),
        (100 - 0.456 * 255) / (0.224 * 255),
        (17 - 0.406 * 255) / (0.225 * 255),
    ]
    for c in range(3):
        assert torch.allclose(x[0, c], torch.full((560, 560), expect[c]), atol=1e-5)
    # integer input and numpy arrays are accepted; align_corners=True keeps the corner pixels
    ramp = torch.arange(12, dtype=torch.uint8).reshape(1, 1, 3, 4).repeat(1, 3, 1, 1)
    y = model.preprocess(ramp.numpy())
    mean, std = 0.485 * 255, 0.229 * 255
    assert abs(y[0, 0, 0, 0].item() - (0 - mean) / std) < 1e-5
    assert abs(y[0, 0, -1, -1].item() - (11 - mean) / std) < 1e-5
    with pytest.raises(FSSAMError, match=r"\(B, 3, H, W\)"):
        model.preprocess(torch.zeros(3, 10, 10))


def test_shape_determinism_and_frozen_state() -> None:
    model = build_dinov2("vits14", random_init=True, seed=0)  # full ViT-S/14
    assert isinstance(model, DINOv2Backbone)
    assert (model.arch, model.input_size, model.grid, model.embed_dim) == ("vits14", 560, 40, 384)
    assert model.random_init and model.weights_sha256 is None
    assert len(model.vit.blocks) == 12
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not model.vit.training
    x = torch.rand(2, 3, 560, 560) * 255
    a, b = model(x), model(x)
    assert a.shape == (2, 384, 40, 40) and torch.equal(a, b)
    assert not a.requires_grad
    with pytest.raises(FSSAMError, match="560x560"):
        model.forward_preprocessed(torch.zeros(1, 3, 518, 518))


def test_random_init_seed_reproducible() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    m1 = build_dinov2("vits14", random_init=True, seed=7, depth=1)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    m2 = build_dinov2("vits14", random_init=True, seed=7, depth=1)
    m3 = build_dinov2("vits14", random_init=True, seed=8, depth=1)
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["vit.pos_embed"], s3["vit.pos_embed"])
    x = images(1, 100, 80)
    assert torch.equal(m1(x), m2(x))
    # Meta hub's LayerScale init (1.0), not timm's 1e-5
    assert torch.equal(m1.vit.blocks[0].ls1.gamma, torch.ones(384))


def test_weights_sha256_and_custom_input_size(vits_small_ckpt) -> None:
    path, sd = vits_small_ckpt
    model = build_dinov2("dinov2_vits14", checkpoint=path, depth=2, input_size=518)
    assert model.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not model.random_init and model.checkpoint == path
    assert (model.grid, model.arch) == (37, "vits14")
    # 518 px: Meta uses the 37x37 embedding as is
    assert torch.equal(model.vit.pos_embed.data, sd["pos_embed"])
    imgs = images(1, 200, 260)
    ref = meta_reference_features(sd, fssam_preprocess(imgs, 518), heads=6)
    assert (model(imgs) - ref).abs().max().item() <= TOL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_follows_module_device(vits_small_ckpt) -> None:
    path, sd = vits_small_ckpt
    model = build_dinov2("vits14", checkpoint=path, depth=2).cuda()
    imgs = images(1)
    got = model(imgs)  # CPU input is moved to the module's device
    assert got.device.type == "cuda"
    ref = meta_reference_features(sd, fssam_preprocess(imgs), heads=6)
    assert (got.cpu() - ref).abs().max().item() <= 1e-3
