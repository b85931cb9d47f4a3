"""PerSAM and PerSAM-F (baselines/persam*.py) against persam-method.md: the modified decoder against a
second implementation written from §1.3, the priors on hand-built cases, PerSAM-F's fit against an
independent loop, and the whole method on tiny random-init SAMs through the harness."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines.persam_decoder import guided_decode, guided_transformer
from baselines.persam_f import fit_mixing_weights, mix_logits
from baselines.persam_prior import (
    attention_bias,
    cell_features,
    mask_box,
    point_prior,
    reference_cells,
    target_feature,
    upsampled_map,
)

# ------------------------------------------------------------------------ decoders with random weights


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():  # LayerNorms too, so that no weight is a trivial 1 or 0
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return module.eval()


@functools.cache
def sam1_decoder(seed: int = 0):
    from segment_anything.modeling import MaskDecoder, TwoWayTransformer

    torch.manual_seed(seed)
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    return _randomise(MaskDecoder(transformer_dim=256, transformer=transformer), seed)


@functools.cache
def sam2_decoder(seed: int = 0):
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    torch.manual_seed(seed)
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    decoder = MaskDecoder(
        transformer_dim=256,
        transformer=transformer,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=True,
    )
    return _randomise(decoder, seed)


def decoder_inputs(seed: int = 1, n_sparse: int = 3, grid: int = 64):
    """Random decoder inputs; ``grid`` = 64 is SAM's, smaller grids make cheaper tests."""
    g = torch.Generator().manual_seed(seed)
    return {
        "image_embeddings": torch.randn(1, 256, grid, grid, generator=g),
        "image_pe": torch.randn(1, 256, grid, grid, generator=g),
        "sparse": torch.randn(1, n_sparse, 256, generator=g),
        "dense": torch.randn(1, 256, grid, grid, generator=g),
        "hr": [
            torch.randn(1, 32, 4 * grid, 4 * grid, generator=g),
            torch.randn(1, 64, 2 * grid, 2 * grid, generator=g),
        ],
    }


# A second implementation of §1.3, written from the text: explicit per-head loops, explicit layer norms.


def ref_attention(mod, q, k, v, bias=None):
    """softmax(q_h k_h^T / sqrt(d)) (then softmax(. + bias)) v_h, head by head."""
    qp, kp, vp = (
        F.linear(x, lin.weight, lin.bias) for x, lin in ((q, mod.q_proj), (k, mod.k_proj), (v, mod.v_proj))
    )
    d = qp.shape[-1] // mod.num_heads
    heads = []
    for h in range(mod.num_heads):
        sl = slice(h * d, (h + 1) * d)
        a = torch.softmax(qp[..., sl] @ kp[..., sl].transpose(-1, -2) / math.sqrt(d), dim=-1)
        if bias is not None:
            a = torch.softmax(a + bias.reshape(1, 1, -1), dim=-1)
        heads.append(a @ vp[..., sl])
    return F.linear(torch.cat(heads, dim=-1), mod.out_proj.weight, mod.out_proj.bias)


def ln(norm, x):
    return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)


def ref_transformer(tr, image, pe, t0, t=None, a=None, alias="release"):
    """§1.3: Q0 = T0 + t, P = T0 + t (release) or T0 (intended); block 0 without PE or residual in
    self-attention; block 1 with Q1 = out0 + t; final q = out1 + P + t; a only in token->image."""
    shift = t if t is not None else torch.zeros(1, 1, t0.shape[-1])
    keys, kpe = image.flatten(2).transpose(1, 2), pe.flatten(2).transpose(1, 2)
    pos = t0 + shift if alias == "release" else t0
    queries = t0
    for i, blk in enumerate(tr.layers):
        queries = queries + shift
        if i == 0:
            queries = ln(blk.norm1, ref_attention(blk.self_attn, queries, queries, queries))
        else:
            qq = queries + pos
            queries = ln(blk.norm1, queries + ref_attention(blk.self_attn, qq, qq, queries))
        queries = ln(
            blk.norm2,
            queries + ref_attention(blk.cross_attn_token_to_image, queries + pos, keys + kpe, keys, a),
        )
        queries = ln(blk.norm3, queries + blk.mlp(queries))
        keys = ln(
            blk.norm4, keys + ref_attention(blk.cross_attn_image_to_token, keys + kpe, queries + pos, queries)
        )
    q = queries + pos + shift
    queries = ln(
        tr.norm_final_attn, queries + ref_attention(tr.final_attn_token_to_image, q, keys + kpe, keys)
    )
    return queries, keys


def target_and_bias(seed: int = 2, grid: int = 64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 1, 256, generator=g), torch.sigmoid(torch.randn(1, 1, 1, grid * grid, generator=g))


def _decoders(family: str, seed: int):
    return sam1_decoder(seed) if family == "sam1" else sam2_decoder(seed)


@pytest.mark.parametrize(
    ("family", "grid", "modes"),
    [("sam1", 64, (True,)), ("sam2", 64, (False,)), ("sam1", 16, (False,)), ("sam2", 16, (True,))],
)
def test_decoder_without_target_or_bias_is_the_official_decoder_exactly(family, grid, modes):
    """SAM 2's single-mask request goes through its dynamic multimask fallback, as officially."""
    dec = _decoders(family, 0)
    x = decoder_inputs(grid=grid)
    hr = x["hr"] if family == "sam2" else None
    for multimask in modes:
        with torch.no_grad():
            kw = {"repeat_image": False, "high_res_features": hr} if family == "sam2" else {}
            official = dec(x["image_embeddings"], x["image_pe"], x["sparse"], x["dense"], multimask, **kw)
            ours = guided_decode(
                dec,
                x["image_embeddings"],
                x["image_pe"],
                x["sparse"],
                x["dense"],
                multimask,
                high_res_features=hr,
            )
        assert torch.equal(ours[0], official[0]) and torch.equal(ours[1], official[1])
        assert ours[0].shape == (1, 3 if multimask else 1, 4 * grid, 4 * grid)
        if grid == 16:  # t = 0 adds exact zeros, in either alias mode
            for alias in ("release", "intended"):
                with torch.no_grad():
                    zero_t = guided_decode(
                        dec,
                        x["image_embeddings"],
                        x["image_pe"],
                        x["sparse"],
                        x["dense"],
                        multimask,
                        target=torch.zeros(1, 1, 256),
                        alias=alias,
                        high_res_features=hr,
                    )
                assert torch.equal(zero_t[0], official[0]) and torch.equal(zero_t[1], official[1])


def _check_algebra(family: str, alias: str, grid: int, combos: str) -> None:
    dec = _decoders(family, 3)
    x = decoder_inputs(4, grid=grid)
    t, a = target_and_bias(5, grid)
    t0, _ = _tokens(dec, x["sparse"])
    src = x["image_embeddings"] + x["dense"]
    pairs = {"ta": (t, a), "t": (t, None), "a": (None, a), "-": (None, None)}
    with torch.no_grad():
        for name in combos:
            tt, aa = pairs[name]
            q, k = guided_transformer(dec.transformer, src, x["image_pe"], t0, aa, tt, alias)
            rq, rk = ref_transformer(dec.transformer, src, x["image_pe"], t0, tt, aa, alias)
            assert torch.allclose(q, rq, atol=2e-5, rtol=1e-5), name
            assert torch.allclose(k, rk, atol=2e-5, rtol=1e-5), name


@pytest.mark.parametrize("family", ["sam1", "sam2"])
def test_guided_transformer_equals_a_second_implementation_on_sam_sized_embeddings(family):
    _check_algebra(family, "release", 64, ["ta"])


@pytest.mark.parametrize("family", ["sam1", "sam2"])
@pytest.mark.parametrize("alias", ["release", "intended"])
def test_guided_transformer_equals_a_second_implementation_with_each_modification_alone(family, alias):
    _check_algebra(family, alias, 16, ["ta", "t", "a", "-"])
    dec = _decoders(family, 3)
    x = decoder_inputs(4, grid=16)
    t, a = target_and_bias(5, 16)
    t0, _ = _tokens(dec, x["sparse"])
    src = x["image_embeddings"] + x["dense"]
    with torch.no_grad():  # the bias and the target change the result, and the two alias modes differ
        plain, _ = guided_transformer(dec.transformer, src, x["image_pe"], t0)
        guided, _ = guided_transformer(dec.transformer, src, x["image_pe"], t0, a, t, alias)
        other = "intended" if alias == "release" else "release"
        other_q, _ = guided_transformer(dec.transformer, src, x["image_pe"], t0, a, t, other)
    assert (guided - plain).abs().max() > 1e-3 and (guided - other_q).abs().max() > 1e-3


def _tokens(dec, sparse):
    own = [dec.iou_token.weight, dec.mask_tokens.weight]
    first = 1 if getattr(dec, "pred_obj_scores", False) else 0
    if first:
        own = [dec.obj_score_token.weight, *own]
    return torch.cat([torch.cat(own)[None], sparse], dim=1), first


def test_guided_decode_heads_read_the_modified_tokens():
    """SAM 1: masks and IoU of step 1 from the reference transformer's outputs through the heads."""
    dec = sam1_decoder(6)
    x = decoder_inputs(7, grid=16)
    t, a = target_and_bias(8, 16)
    with torch.no_grad():
        masks, iou = guided_decode(
            dec, x["image_embeddings"], x["image_pe"], x["sparse"], x["dense"], False, a, t
        )
        t0, _ = _tokens(dec, x["sparse"])
        hs, src = ref_transformer(
            dec.transformer, x["image_embeddings"] + x["dense"], x["image_pe"], t0, t, a
        )
        up = dec.output_upscaling(src.transpose(1, 2).reshape(1, 256, 16, 16))
        hyper = dec.output_hypernetworks_mlps[0](hs[:, 1])  # single-mask output: token 0 of the masks
        ref_mask = (hyper @ up.flatten(2)).reshape(1, 1, 64, 64)
        ref_iou = dec.iou_prediction_head(hs[:, 0])[:, :1]
    assert torch.allclose(masks, ref_mask, atol=1e-4, rtol=1e-4) and torch.allclose(iou, ref_iou, atol=1e-5)


# ---------------------------------------------------------------------------------------- priors


def test_reference_cells_follow_the_128_vs_255_rule_on_sampled_pixels():
    """S = 1024: cell (i, j) samples pixels rows 16i+7..16i+8, cols 16j+7..16j+8; in iff their mean
    R exceeds 123.675: with 255, 2 of 4 suffice (127.5); with 128, all 4 are needed (3 of 4: 96)."""
    m = torch.zeros(1024, 1024, dtype=torch.bool)

    def put(i, j, n):  # n of the 4 sampled pixels of cell (i, j)
        for r, c in [(7, 7), (7, 8), (8, 7), (8, 8)][:n]:
            m[16 * i + r, 16 * j + c] = True

    put(3, 5, 2), put(10, 10, 4), put(20, 30, 3), put(40, 2, 1)
    m[16 * 50, 16 * 50 : 16 * 50 + 7] = True  # pixels the bilinear sample never reads
    cells = lambda fg: sorted(map(tuple, reference_cells(m, fg).nonzero().tolist()))  # noqa: E731
    assert cells(255) == [(3, 5), (10, 10), (20, 30)]
    assert cells(128) == [(10, 10)]


def test_reference_cells_of_a_small_frame_go_through_the_pil_resize():
    """S = 512: the mask is PIL-bilinear resized to 1024 first; a 2x2 block at 512 covers the 4
    sampled pixels of one cell (plus the bilinear ramp), so it is a cell with either value."""
    m = torch.zeros(512, 512, dtype=torch.bool)
    m[8 * 5 + 3 : 8 * 5 + 5, 8 * 9 + 3 : 8 * 9 + 5] = True  # 1024-pixels 86..89: rows/cols 87, 88 inside
    for fg in (128, 255):
        assert reference_cells(m, fg).nonzero().tolist() == [[5, 9]]
    with pytest.raises(ValueError, match="mask_fg_value"):
        reference_cells(m, 200)


def test_target_features_mean_and_max_mean_and_the_empty_reference():
    embed = torch.arange(2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2)  # (C=2, 2, 2)
    cells = torch.tensor([[True, False], [False, True]])
    feats = cell_features([embed], [cells])  # cells (0, 0) and (1, 1): channel values (0, 4) and (3, 7)
    assert feats.tolist() == [[0.0, 4.0], [3.0, 7.0]]
    assert target_feature(feats).tolist() == [1.5, 5.5]
    assert target_feature(feats, "max-mean").tolist() == [(3 + 1.5) / 2, (7 + 5.5) / 2]
    empty = cell_features([embed], [torch.zeros(2, 2, dtype=torch.bool)])
    assert torch.isnan(target_feature(empty)).all() and torch.isnan(target_feature(empty, "max-mean")).all()


def test_point_prior_on_hand_built_maps_and_the_lowest_index_tie_rule():
    sim = torch.tensor([[0.1, 0.2, 0.3, 0.0], [0.5, 0.4, 0.9, 0.2], [-0.7, 0.1, 0.2, 0.3]])
    pos, neg = point_prior(sim)
    assert pos.tolist() == [2, 1] and neg.tolist() == [0, 2]  # (x, y)
    tie = torch.tensor([[0.0, 1.0, 0.5], [1.0, -2.0, 1.0], [-2.0, 0.0, 0.0]])
    pos, neg = point_prior(tie)
    assert pos.tolist() == [1, 0] and neg.tolist() == [1, 1]  # flat 1 before 3 and 5; flat 4 before 6


def test_a_border_maximum_is_a_structural_tie_resolved_to_the_lowest_index():
    s = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    s[0, 0, 0, 63] = 2.0  # top-right corner of the grid
    sim = upsampled_map(s, lambda x: F.interpolate(x, (1024, 1024), mode="bilinear"))
    top = (sim == sim.max()).nonzero()
    assert len(top) > 1  # bilinear clamping replicates the border value
    pos, _ = point_prior(sim)
    assert pos.tolist() == [top[0, 1].item(), top[0, 0].item()] and top[0, 0] == 0


def test_attention_bias_is_the_sigmoid_of_the_unbiased_z_score():
    sim = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    a = sim.numpy().astype(np.float64)
    expected = 1 / (1 + np.exp(-(a - a.mean()) / a.std(ddof=1)))  # a 64x64 frame: no resize
    got = attention_bias(sim)
    assert got.shape == (1, 1, 1, 4096)
    assert np.allclose(got.reshape(64, 64).numpy(), expected, atol=1e-6)
    assert torch.isnan(attention_bias(torch.ones(64, 64))).all()  # constant map: 0/0 as the release


def test_mask_box_is_the_inclusive_extent_and_none_when_empty():
    m = torch.zeros(6, 8, dtype=torch.bool)
    m[2, 3] = m[4, 6] = m[3, 1] = True
    assert mask_box(m).tolist() == [1.0, 2.0, 6.0, 4.0]
    assert mask_box(torch.zeros(3, 3, dtype=torch.bool)) is None


# ---------------------------------------------------------------------------------------- PerSAM-F


def test_mixing_weights_mix_the_three_logits():
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    w = torch.tensor([[0.2], [0.3]])  # omega = (0.5, 0.2, 0.3)
    assert torch.allclose(mix_logits(logits, w), torch.tensor([0.5 + 0.6 + 1.5, 1.0 + 0.8 + 1.8]))
    assert torch.allclose(
        mix_logits(logits[:, :, None, None].expand(3, 2, 2, 2), w)[:, 0, 0], mix_logits(logits, w)
    )


def _independent_fit(logits, targets, lr, iters, wd, eps):
    """The same AdamW; omega, dice and focal written out; the cosine rate in closed form."""
    w = torch.full((2, 1), 1 / 3, requires_grad=True)
    opt = torch.optim.AdamW([w], lr=lr, eps=eps, weight_decay=wd)
    losses = []
    for it in range(iters):
        for group in opt.param_groups:
            group["lr"] = lr * (1 + math.cos(math.pi * it / iters)) / 2
        loss = 0.0
        for x, gt in zip(logits, targets, strict=True):
            mixed = (1 - w[0, 0] - w[1, 0]) * x[0] + w[0, 0] * x[1] + w[1, 0] * x[2]
            p = 1 / (1 + torch.exp(-mixed))
            dice = 1 - (2 * (p * gt).sum() + 1) / (p.sum() + gt.sum() + 1)
            bce = -(gt * torch.log(p) + (1 - gt) * torch.log(1 - p))
            pt = torch.where(gt > 0, p, 1 - p)
            alpha = torch.where(gt > 0, 0.25, 0.75)
            loss = loss + dice + (alpha * bce * (1 - pt) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return w.detach(), losses


@pytest.mark.parametrize("shots", [1, 2])
def test_persam_f_fit_equals_an_independent_loop_and_the_loss_decreases(shots):
    g = torch.Generator().manual_seed(3)
    logits = [torch.randn(3, 60, generator=g) * torch.tensor([[1.0], [2.0], [3.0]]) for _ in range(shots)]
    targets = [(torch.rand(60, generator=g) > 0.6).float() for _ in range(shots)]
    fit = fit_mixing_weights(logits, targets, lr=0.05, iters=40, weight_decay=0.01, eps=1e-4)
    w, losses = _independent_fit(logits, targets, 0.05, 40, 0.01, 1e-4)
    assert torch.allclose(fit.weights, w, atol=1e-5) and np.allclose(fit.losses, losses, atol=1e-5)
    assert fit.losses[-1] < fit.losses[0] - 1e-3
    with torch.inference_mode():  # the harness predicts without gradients; the fit still trains
        again = fit_mixing_weights(logits, targets, lr=0.05, iters=40, weight_decay=0.01, eps=1e-4)
    assert torch.equal(again.weights, fit.weights)
    assert not torch.allclose(fit.weights, torch.full((2, 1), 1 / 3))


# ------------------------------------------------------------------------- the method on tiny SAMs


@pytest.fixture(scope="module")
def sams():
    from baselines.sam_backend import build_promptable

    return {
        "vit_test": build_promptable("vit_test", random_init=True, seed=0),
        "sam2-t": build_promptable("sam2-t", random_init=True, seed=0, input_size=256),
    }


def random_features(sam, n: int, seed: int = 0) -> dict:
    """Features of the backend's shapes (what the encoder caches), random."""
    g = torch.Generator().manual_seed(seed)
    e = sam.input_size // 16
    if sam.family == "sam1":
        return {"sam1.embed": torch.randn(n, 256, e, e, generator=g)}
    return {
        "sam2.embed": torch.randn(n, 256, e, e, generator=g),
        "sam2.hr0": torch.randn(n, 32, 4 * e, 4 * e, generator=g),
        "sam2.hr1": torch.randn(n, 64, 2 * e, 2 * e, generator=g),
    }


def persam(sams, arch: str, **kw):
    from baselines.persam import PerSAM
    from baselines.persam_config import PerSAMConfig

    return PerSAM(PerSAMConfig(sam=arch, random_init=True, image_size=64, iters=4, **kw), sam=sams[arch])


def box_masks(b: int, k: int, size: int = 64) -> torch.Tensor:
    m = torch.zeros(b, k, size, size, dtype=torch.uint8)
    for j in range(k):
        m[:, j, 8 + 2 * j : 40 + j, 12 : 50 - 2 * j] = 1
    m[:, :, 0, :] = 255  # ignore pixels are not foreground
    return m


@pytest.mark.parametrize("arch", ["vit_test", "sam2-t"])
def test_guided_predict_without_modifications_is_the_backend_decode(sams, arch):
    from baselines.persam_sam import guided_predict

    sam = sams[arch]
    feats = random_features(sam, 1, seed=3)
    coords, labels = torch.tensor([[[10.0, 20.0], [50.0, 3.0]]]), torch.tensor([[1, 0]])
    for multimask in (False, True):
        ours = guided_predict(sam, feats, (64, 64), coords, labels, multimask)
        official = sam.decode(feats, (64, 64), coords, labels, multimask_output=multimask)
        for a, b in (
            (ours.logits, official.logits),
            (ours.iou, official.iou),
            (ours.low_res, official.low_res),
        ):
            assert torch.equal(a, b)


def _check_episode(ep: dict, finetune: bool, grid: int) -> None:
    assert ep["fallback"] is None and ep["sim"].shape == (64, 64)  # these seeds give non-empty step masks
    assert len(ep["passes"]) == 3
    assert [p["best"] for p in ep["passes"][1:]] == [int(torch.argmax(p["iou"])) for p in ep["passes"][1:]]
    if finetune:
        assert ep["labels"].tolist() == [1] and len(ep["losses"]) == 4 and len(ep["boxes"]) == 2
        assert torch.allclose(ep["weights"].sum(), torch.tensor(1.0))
        assert ep["points"].tolist() == [point_prior(ep["sim"])[0].float().tolist()]
    else:
        assert ep["labels"].tolist() == [1, 0] and len(ep["boxes"]) == 1
        assert torch.equal(ep["attn_sim"], attention_bias(ep["sim"], grid))
        pos, neg = point_prior(ep["sim"])
        assert ep["points"].tolist() == [pos.float().tolist(), neg.float().tolist()]


@pytest.mark.parametrize(
    ("arch", "finetune", "shots"),
    [
        ("vit_test", False, (1, 5)),
        ("vit_test", True, (1,)),
        pytest.param("vit_test", True, (5,), marks=pytest.mark.slow),
        ("sam2-t", False, (1, 5)),
        ("sam2-t", True, (1, 5)),
    ],
)
def test_the_method_runs_one_and_five_shots_with_its_intermediates(sams, arch, finetune, shots):
    model, sam = persam(sams, arch, finetune=finetune), sams[arch]
    for k in shots:
        query, supports = random_features(sam, 1, seed=k), random_features(sam, k, seed=10 + k)
        logits, info = model.predict(query, supports, box_masks(1, k), return_intermediates=True)
        assert logits.shape == (1, 64, 64) and torch.isfinite(logits).all() and info["fallbacks"] == 0
        _check_episode(info["episodes"][0], finetune, sam.input_size // 16)


def _independent_union_map(sam, query, supports, masks):
    """The location map of §2.1-2.2 for the union of K shots, in float64: the mean embedding over
    all shots' reference cells, cosine with every query cell, x4, then SAM 2's postprocess
    (bilinear to the 64 px frame)."""
    e = supports["sam2.embed"].double()
    cells = [reference_cells(m == 1, 128, sam.input_size) for m in masks]
    feats = torch.cat([e[j].permute(1, 2, 0)[c] for j, c in enumerate(cells)])
    t = feats.mean(0)
    t = t / t.norm()
    q = query["sam2.embed"][0].double()
    s = (t[:, None, None] * (q / q.norm(dim=0, keepdim=True))).sum(0)[None, None]
    s = F.interpolate(s, scale_factor=4, mode="bilinear")
    return F.interpolate(s, (64, 64), mode="bilinear", align_corners=False)[0, 0].float()


def test_five_shots_pool_the_union_of_reference_cells(sams):
    sam = sams["sam2-t"]
    model = persam(sams, "sam2-t")
    query, supports = random_features(sam, 1, 1), random_features(sam, 5, 2)
    masks = box_masks(1, 5)
    _, info = model.predict(query, supports, masks, return_intermediates=True)
    assert torch.allclose(
        info["episodes"][0]["sim"], _independent_union_map(sam, query, supports, masks[0]), atol=1e-5
    )
    # five copies of one shot locate like that one shot; average-maps pools otherwise
    one = {k: v[:1] for k, v in supports.items()}
    five = {k: v.repeat(5, 1, 1, 1) for k, v in one.items()}
    _, a = model.predict(query, one, masks[:, :1], return_intermediates=True)
    _, b = model.predict(query, five, masks[:, :1].repeat(1, 5, 1, 1), return_intermediates=True)
    assert torch.allclose(a["episodes"][0]["sim"], b["episodes"][0]["sim"], atol=1e-6)
    _, c = persam(sams, "sam2-t", shot_pooling="average-maps").predict(
        query, supports, masks, return_intermediates=True
    )
    assert not torch.allclose(c["episodes"][0]["sim"], info["episodes"][0]["sim"], atol=1e-3)


def _tight_box(mask):
    ys, xs = np.nonzero(mask.numpy())
    return torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32)


def test_the_cascades_wire_the_spec_steps(sams):
    """§2.5-2.7 and §3.3 rewired by hand from the backend's passes: PerSAM's step 1 gets the
    unnormalised mean e as the target; each refinement keeps the first best IoU and the box of its mask."""
    from baselines.persam_sam import guided_predict

    sam = sams["sam2-t"]
    query, support, masks = random_features(sam, 1, 21), random_features(sam, 1, 22), box_masks(1, 1)
    logits, info = persam(sams, "sam2-t").predict(query, support, masks, return_intermediates=True)
    ep = info["episodes"][0]
    cells = reference_cells(masks[0, 0] == 1, 128, sam.input_size)
    e = support["sam2.embed"][0].permute(1, 2, 0)[cells].mean(0)
    coords, labels = ep["points"][None], ep["labels"][None]
    step1 = guided_predict(sam, query, (64, 64), coords, labels, False, ep["attn_sim"], e.reshape(1, 1, -1))
    r1 = sam.decode(query, (64, 64), coords, labels, mask_input=step1.low_res)
    b1 = int(np.argmax(r1.iou[0].numpy()))
    r2 = sam.decode(
        query, (64, 64), coords, labels, _tight_box(r1.logits[0, b1] > 0), r1.low_res[:, b1 : b1 + 1]
    )
    assert torch.equal(logits[0], r2.logits[0, int(np.argmax(r2.iou[0].numpy()))])

    logits, info = persam(sams, "sam2-t", finetune=True).predict(
        query, support, masks, return_intermediates=True
    )
    ep = info["episodes"][0]
    omega = ep["weights"]
    first = sam.decode(query, (64, 64), ep["points"][None], ep["labels"][None])
    mixed = (omega[:, None, None] * first.logits[0]).sum(0)
    low = (omega[:, None, None] * first.low_res[0]).sum(0)[None, None]
    r1 = sam.decode(query, (64, 64), ep["points"][None], ep["labels"][None], _tight_box(mixed > 0), low)
    b1 = int(np.argmax(r1.iou[0].numpy()))
    box = _tight_box(r1.logits[0, b1] > 0)
    r2 = sam.decode(query, (64, 64), ep["points"][None], ep["labels"][None], box, r1.low_res[:, b1 : b1 + 1])
    assert torch.allclose(logits[0], r2.logits[0, int(np.argmax(r2.iou[0].numpy()))], atol=1e-5)


@pytest.mark.parametrize("finetune", [False, True])
def test_an_empty_reference_predicts_nothing_and_is_counted(sams, finetune):
    sam = sams["sam2-t"]
    masks = torch.zeros(2, 1, 64, 64, dtype=torch.uint8)
    masks[0, 0, 20:40, 20:40] = 1
    masks[1, 0, 33, 40] = 1  # one pixel at 64 px: its bilinear bump stays below 123.675 (R = 128)
    query, supports = random_features(sam, 2, 5), random_features(sam, 2, 6)
    model = persam(sams, "sam2-t", finetune=finetune)
    logits, info = model.predict(query, supports, masks, return_intermediates=True)
    assert [e["fallback"] for e in info["episodes"]] == [None, "empty-reference"] and info["fallbacks"] == 1
    assert (
        torch.equal(info["prior_fg"][0, 0], info["episodes"][0]["sim"]) and (info["prior_fg"][1] == 0).all()
    )
    assert (logits[1] < 0).all() and (logits[1] == logits[1, 0, 0]).all()
    rescue = persam(sams, "sam2-t", finetune=finetune, empty_reference="any-pixel")
    _, rescued = rescue.predict(query, supports, masks, return_intermediates=True)
    assert rescued["episodes"][1]["fallback"] is None and rescued["episodes"][1]["reference_cells"] == [0]


@pytest.mark.parametrize(
    ("arch", "finetune", "shots"),
    [("sam2-t", False, 1), pytest.param("vit_test", True, 2, marks=pytest.mark.slow)],
)
def test_forward_on_images_equals_predict_on_their_features(sams, arch, finetune, shots):
    model = persam(sams, arch, finetune=finetune)
    g = torch.Generator().manual_seed(7)
    query = torch.rand(1, 3, 64, 64, generator=g) * 255
    supports = torch.rand(1, shots, 3, 64, 64, generator=g) * 255
    masks = box_masks(1, shots)
    enc = model.encoders["sam"]
    expected = model.predict(enc.encode(query), enc.encode(supports[0]), masks)
    assert torch.equal(model(query, supports, masks), expected)


# ---------------------------------------------------------------------------------- the harness


def test_a_tiny_study_of_persam_and_persam_f_cached_and_uncached(pascal_root, tmp_path):
    from benchmark.episodes import get_protocol
    from benchmark.episodes.manifest import save_manifest
    from benchmark.episodes.manifests import ManifestRequest, build_manifest
    from benchmark.evaluation.cell import CellSpec, evaluate_cell
    from benchmark.evaluation.feature_cache import FeatureCache
    from benchmark.methods import WeightPool, build_method, get_method
    from benchmark.specs.study import parse_study

    model = {"sam": "vit_test", "random_init": True, "image_size": 64, "iters": 3}
    study = parse_study(
        {
            "name": "p",
            "data": {"pascal": str(pascal_root)},
            "folds": [0],
            "shots": [1],
            "episodes": 1,
            "model": model,
            "variants": {"persam": {"method": "persam"}, "persam_f": {"method": "persam_f"}},
        }
    )
    a, b = (v.settings for v in study.variants)
    assert "iters" not in a and b["iters"] == 3 and "target_alias" not in b and a["mask_fg_value"] == 128
    manifest = build_manifest(get_protocol("fssam"), ManifestRequest(pascal_root, 0, 1, seed=5, episodes=1))
    save_manifest(manifest, tmp_path / "m.json")
    pool = WeightPool()
    m_a, m_b = (build_method(n, s, torch.device("cpu"), pool) for n, s in (("persam", a), ("persam_f", b)))
    assert m_a.sam is m_b.sam  # one SAM for both variants, and one encoder identity
    assert m_a.encoders["sam"].identity() == m_b.encoders["sam"].identity()
    assert get_method("persam_f").weight_sources(b) == {"sam": "random-init:vit_test:seed0"}

    def cell(name, settings, method, cache):
        spec = CellSpec(name, get_method(name).resolve(settings), tmp_path / "m.json", pascal_root, "cpu")
        return evaluate_cell(spec, cache, method=method).table

    cache = FeatureCache(tmp_path / "cache")
    cached_a = cell("persam", a, m_a, cache)
    misses = cache.stats.misses
    cached_b = cell("persam_f", b, m_b, cache)  # PerSAM's features serve PerSAM-F
    assert cache.stats.misses == misses and cache.stats.hits > 0
    assert cached_b.equals(cell("persam_f", b, m_b, FeatureCache(None)))
    assert len(cached_a) == 1 and (cached_a["U_fg"] > 0).all()


def test_config_names_bad_fields_and_matches_the_backend():
    from baselines.persam_config import SAM1_ARCHS, SAM2_ARCHS, PerSAMConfig
    from baselines.sam_backend import SAM_ARCHS

    assert set(SAM1_ARCHS + SAM2_ARCHS) == set(SAM_ARCHS)
    cfg = PerSAMConfig(sam="vit_test", random_init=True, finetune=True, mask_fg_value=255)
    assert PerSAMConfig.from_dict(cfg.to_dict()) == cfg
    for bad, message in [
        ({"sam": "vit_x"}, r"sam='vit_x' is not one of"),
        ({"mask_fg_value": 200}, r"mask_fg_value=200"),
        ({"shot_pooling": "vote"}, r"shot_pooling='vote'"),
        ({"empty_reference": "nan"}, r"empty_reference='nan'"),
        ({"target_alias": "fixed"}, r"target_alias='fixed'"),
        ({"iters": 0}, r"iters=0 must be an integer >= 1"),
        ({"lr": -1.0}, r"lr=-1.0 must be a number >= 0"),
        ({"sam": "vit_test"}, r"random_init only"),
        ({"iter": 3}, r"iter: unknown PerSAM setting"),
    ]:
        with pytest.raises(ValueError, match=message):
            PerSAMConfig.from_dict(bad)


def test_registry_entries_name_missing_weights_and_keep_their_own_switches():
    from benchmark.errors import FssBenchError
    from benchmark.methods import get_method

    persam_entry, persam_f_entry = get_method("persam"), get_method("persam_f")
    assert "target_alias" in persam_entry.defaults and "iters" not in persam_entry.defaults
    assert "iters" in persam_f_entry.defaults and "target_alias" not in persam_f_entry.defaults
    assert persam_entry.defaults["sam"] == "vit_h" and persam_entry.defaults["sam2_version"] == "2.1"
    with pytest.raises(FssBenchError, match=r"^sam_checkpoint: no SAM vit_h weights"):
        persam_entry.weight_sources(persam_entry.resolve({}))
    assert persam_entry.weight_sources(
        persam_entry.resolve({"sam_checkpoint": "/w/sam_vit_h_4b8939.pth"})
    ) == {"sam": "/w/sam_vit_h_4b8939.pth"}
    with pytest.raises(FssBenchError, match=r"method 'persam_f': shot_pooling='mean'"):
        persam_f_entry.resolve({"shot_pooling": "mean"})
    with pytest.raises(FssBenchError, match=r"iters: unknown switch for method 'persam'"):
        persam_entry.resolve({"iters": 10})
