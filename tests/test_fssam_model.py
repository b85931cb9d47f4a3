"""FSSAM on tiny random-init models (SAM 2-T at 256 px, DINOv2-S at 224 px), CPU, fp32."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from baselines.naive_sam2 import NaiveSAM2
from fssam import FSSAM, FSSAMConfig
from fssam.errors import FSSAMError
from fssam.ops import cosine_map, weighted_gap
from fssam.scma import Calibration, MemoryLayout, calibration_bias, memory_attention, rope_cross_attention
from fssam.train import dice_loss, make_optimizer, train_step

S = 256


def tiny_config(**kw) -> FSSAMConfig:
    return FSSAMConfig(
        sam2_size="t", image_size=S, dinov2="vits14", dinov2_input_size=224, random_init=True, **kw
    )


@pytest.fixture(scope="module")
def model() -> FSSAM:
    return FSSAM(tiny_config())


@pytest.fixture(scope="module")
def episode():
    g = torch.Generator().manual_seed(0)
    query = torch.rand(2, 3, S, S, generator=g) * 255
    supports = torch.rand(2, 3, 3, S, S, generator=g) * 255
    masks = (torch.rand(2, 3, S, S, generator=g) > 0.6).long()
    masks[:, :, :4] = 255  # ignore band
    qmask = (torch.rand(2, S, S, generator=g) > 0.5).long()
    return query, supports, masks, qmask


def variant(model: FSSAM, **switches) -> FSSAM:
    """The same weights under other switches (a new FSSAM sharing the modules)."""
    return FSSAM(dataclasses.replace(model.config, **switches), sam2=model.sam2, dino=model.dino)


def test_shapes_dtypes_and_determinism(model, episode):
    query, supports, masks, _ = episode
    q = model.encode_images(query)
    s = model.encode_images(supports.flatten(0, 1))
    assert [tuple(x.shape) for x in q.sam2.levels] == [(2, 32, 64, 64), (2, 64, 32, 32), (2, 256, 16, 16)]
    assert q.dino.shape == (2, 384, 16, 16) and len(s) == 6
    logits, inter = model.predict(q, s, masks, return_intermediates=True)
    assert logits.shape == (2, S, S) and logits.dtype == torch.float32
    assert inter["prior_fg"].shape == inter["prior_disc"].shape == (2, 1, S, S)
    assert inter["support_memory"].shape == (2, 3, 64, 16, 16) and inter["memory"].shape == (2, 64, 16, 16)
    assert len(inter["imr_disc_priors"]) == 4 and inter["imr_disc_priors"][-1].shape == (2, 1, S, S)
    assert inter["multimask_logits"].shape == (2, 3, 64, 64) and inter["ious"].shape == (2, 3)
    again = model(query, supports, masks)
    assert torch.equal(logits, again)  # deterministic, and forward == encode + predict


def test_scma_bias_range_and_exact_zero_region():
    g = torch.Generator().manual_seed(1)
    b, nh, k, side, d, nq = 2, 1, 2, 4, 8, 16
    n = side * side
    q = torch.randn(b, nh, nq, d, generator=g)
    k_sup = torch.randn(b, nh, k, n, d, generator=g)
    k_q = torch.randn(b, nh, n, d, generator=g)
    masks = (torch.rand(b, k, side, side, generator=g) > 0.5).float()
    bias = calibration_bias(q, k_sup, k_q, masks, scale=10.0)
    assert bias.shape == (b, nh, nq, n) and bias.min() >= -10 and bias.max() <= 0
    # independent recomputation with loops
    for bi in range(b):
        c = torch.zeros(n)
        for s in range(k):
            proto = weighted_gap(
                k_sup[bi, 0, s].T.reshape(1, d, side, side), masks[bi, s].reshape(1, 1, side, side)
            )
            cos = cosine_map(k_q[bi, 0].T.reshape(1, d, side, side), proto).flatten()
            c += (cos - cos.min()) / (cos.max() - cos.min() + 1e-7)
        c /= k
        for i in range(nq):
            a = torch.stack([q[bi, 0, i] @ k_q[bi, 0, j] / d**0.5 for j in range(n)])
            a_hat = (a - a.min()) / (a.max() - a.min() + 1e-7)
            total = a_hat + c
            expected = torch.where(total >= 1, torch.zeros(n), 10 * (total - 1))
            assert torch.allclose(bias[bi, 0, i], expected, atol=1e-5)
            assert (bias[bi, 0, i][total >= 1 + 1e-5] == 0).all()  # exactly zero there
    assert (bias == 0).any() and (bias < 0).any()


def test_scma_off_equals_sam2_cross_attention(model):
    layer = model.sam2.memory_attention.layers[0]
    attn = layer.cross_attn_image
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 256, 256, generator=g)  # 16x16 query tokens
    mem = torch.randn(2, 2 * 256 + 8, 64, generator=g)  # two spatial memories + 2 pointers
    ours = rope_cross_attention(attn, q, mem, mem, num_k_exclude_rope=8)
    theirs = attn(q, mem.clone(), mem, num_k_exclude_rope=8)
    assert torch.allclose(ours, theirs, atol=1e-6)
    # the whole memory-attention stack, too
    curr, curr_pos = torch.randn(256, 2, 256, generator=g), torch.randn(256, 2, 256, generator=g)
    memory, memory_pos = mem.transpose(0, 1), torch.randn(2 * 256 + 8, 2, 64, generator=g)
    ours = memory_attention(model.sam2.memory_attention, curr, curr_pos, memory, memory_pos, 8)
    theirs = model.sam2.memory_attention(curr, memory, curr_pos, memory_pos.clone(), num_obj_ptr_tokens=8)
    assert torch.allclose(ours, theirs, atol=1e-5)
    # with calibration the output changes
    layout = MemoryLayout(shots=1, tokens_per_memory=256, ptr_tokens=4, has_query=True)
    cal = Calibration((torch.rand(2, 1, 16, 16, generator=g) > 0.5).float())
    calibrated = rope_cross_attention(attn, q, mem, mem, 8, layout=layout, calibration=cal)
    assert not torch.allclose(calibrated, rope_cross_attention(attn, q, mem, mem, 8), atol=1e-4)


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_k_identical_shots_equal_one_shot_in_intended_mode(model, episode):
    query, supports, masks, _ = episode
    one = model(query, supports[:, :1], masks[:, :1])
    averaged = variant(model, kshot_pointers="average")
    three = averaged(query, supports[:, :1].repeat(1, 3, 1, 1, 1), masks[:, :1].repeat(1, 3, 1, 1))
    assert torch.allclose(one, three, atol=1e-3), (one - three).abs().max()
    # the description's default keeps 4(K+1) pointer tokens: three copies of one pointer weigh more
    kept = model(query, supports[:, :1].repeat(1, 3, 1, 1, 1), masks[:, :1].repeat(1, 3, 1, 1))
    assert not torch.allclose(kept, one, atol=1e-4)
    released = variant(model, kshot_mode="released")
    assert torch.equal(released(query, supports[:, :1], masks[:, :1]), one)  # same for one shot
    r3 = released(query, supports[:, :1].repeat(1, 3, 1, 1, 1), masks[:, :1].repeat(1, 3, 1, 1))
    assert not torch.allclose(r3, one, atol=1e-3)  # the released 5-shot path is not shot-invariant


def imr_by_hand(inter: dict, masks: torch.Tensor, version: str) -> tuple[list, list]:
    """The spec's IMR (section 4) in float64 from a prediction's intermediates: W_t and D_{t+1}.

    Masks and priors (B, ., 256, 256) reach the 16 x 16 memory grid by bilinear, align_corners=True
    resizing: output pixel i samples input position i * 255 / 15 = 17 i exactly, i.e. ``[::17]``.
    """
    q_fg, d = inter["fg_memory"].double(), inter["disc_memory"].double()  # (B, C, 16, 16)
    sup = inter["support_memory"].double()  # (B, K, C, 16, 16)
    m = (masks == 1).double()[..., ::17, ::17]  # (B, K, 16, 16); 255 counts as background
    p_fg = inter["prior_fg"].double()[:, 0, ::17, ::17]
    p_d = inter["prior_disc"].double()[:, 0, ::17, ::17]

    def wgap(feat, mask):  # (B, C, h, w), (B, h, w) -> (B, C): sum F m / (sum m + 0.0005)
        return (feat * mask[:, None]).sum((2, 3)) / (mask.sum((1, 2))[:, None] + 0.0005)

    def cos(proto):  # cos(Q_fg[:, p], proto) -> (B, h, w)
        dot = (q_fg * proto[:, :, None, None]).sum(1)
        return dot / (q_fg.norm(dim=1) * proto.norm(dim=1)[:, None, None] + 1e-7)

    def mm(x):  # MinMax over the pixels of each sample
        lo, hi = x.amin((1, 2), keepdim=True), x.amax((1, 2), keepdim=True)
        return (x - lo) / (hi - lo + 1e-7)

    a = torch.stack([mm(cos(wgap(sup[:, k], m[:, k]))) for k in range(sup.shape[1])]).mean(0)
    weights, memories = [], []
    for _ in range(3):
        w = torch.relu(mm(cos(wgap(d, p_d))) + a - 1)
        w = mm(w) if version == "v2" else w
        d = w[:, None] * q_fg + (1 - w[:, None]) * d
        p_d = mm(w * p_fg + (1 - w) * p_d)
        weights.append(w)
        memories.append(d)
    return weights, memories


def test_switches_produce_what_the_spec_says(model, episode):
    from fssam.sam2_adapter import (
        MaskMemory,
        decode,
        flatten_levels,
        mask_to_memory,
        memory_tokens,
        split_shots,
    )

    query, supports, masks, qmask = episode
    q, s = model.encode_images(query), model.encode_images(supports.flatten(0, 1))
    base, inter = model.predict(q, s, masks, return_intermediates=True)
    _, no_imr = variant(model, imr_iters=0).predict(q, s, masks, return_intermediates=True)
    assert torch.equal(no_imr["memory"], no_imr["disc_memory"])
    assert not torch.equal(inter["memory"], inter["disc_memory"])
    assert not torch.allclose(variant(model, scma=False).predict(q, s, masks), base, atol=1e-4)
    _, fg = variant(model, prior="fg").predict(q, s, masks, return_intermediates=True)
    assert torch.equal(fg["memory"], fg["fg_memory"]) and "disc_memory" not in fg
    oracle = variant(model, prior="oracle")
    _, o = oracle.predict(q, s, masks, query_mask=qmask, return_intermediates=True)
    assert torch.equal(o["prior_fg"][:, 0], (qmask == 1).float())
    with pytest.raises(FSSAMError, match="query_mask"):
        oracle.predict(q, s, masks)
    none_logits, none_inter = variant(model, prior="none").predict(q, s, masks, return_intermediates=True)
    assert none_inter["memory"] is None and none_logits.shape == (2, S, S)
    # imr_version: v1 (default) W_t = ReLU(B_t + A - 1); v2 MinMaxes it (spec section 4), by hand
    v2_logits, v2 = variant(model, imr_version="v2").predict(q, s, masks, return_intermediates=True)
    for version, got in (("v1", inter), ("v2", v2)):
        weights, memories = imr_by_hand(got, masks, version)
        for t in range(3):
            assert torch.allclose(got["imr_weights"][t][:, 0].double(), weights[t], atol=1e-4), (version, t)
            assert torch.allclose(got["imr_disc_memories"][t + 1].double(), memories[t], atol=1e-4)
        assert torch.equal(got["memory"], got["imr_disc_memories"][3])  # Mem_Q = D_T
    assert all(w.amax((1, 2, 3)).min() > 0.999 for w in v2["imr_weights"])  # v2 weights reach 1
    assert inter["imr_weights"][0].max() < 0.999  # v1's do not here, so the switch matters
    assert not torch.allclose(v2_logits, base, atol=1e-5)
    # scale 0 makes every bias 0, i.e. SCMA == plain attention (1 shot: no K-shot averaging involved)
    s1, m1 = s.select([0, 3]), masks[:, :1]
    zero = variant(model, scma_scale=0.0).predict(q, s1, m1)
    assert torch.allclose(zero, variant(model, scma=False).predict(q, s1, m1), atol=1e-5)
    # with K shots, intended SCMA at scale 0 is sam2's own attention over ONE support memory, the
    # position-wise mean of the K shots' tokens (keys and values are linear in them, and RoPE
    # treats each block alike), then Mem_Q and all K + 1 pointers (spec section 5, "as written")
    zero_k, zi = variant(model, scma_scale=0.0).predict(q, s, masks, return_intermediates=True)
    sam, (b, k) = model.sam2, masks.shape[:2]
    s_mem = mask_to_memory(sam, s.sam2, (masks == 1).float().reshape(b * k, 1, S, S))
    disc = mask_to_memory(sam, q.sam2, zi["prior_disc"])
    memories = [*split_shots(s_mem, b, k), MaskMemory(zi["memory"], disc.pos, disc.obj_ptr)]
    memory, memory_pos, n_ptr = memory_tokens(sam, memories)
    n = 16 * 16
    assert memory.shape[0] == (k + 1) * n + n_ptr and n_ptr == 4 * (k + 1)

    def mean_support(x):  # (M, B, 64): the K support blocks -> their mean, the rest unchanged
        return torch.cat([x[: k * n].reshape(k, n, *x.shape[1:]).mean(0), x[k * n :]])

    feats, pos, sizes = flatten_levels(sam, q.sam2)
    with torch.no_grad():
        pix = sam.memory_attention(
            curr=[feats[-1]],
            curr_pos=[pos[-1]],
            memory=mean_support(memory),
            memory_pos=mean_support(memory_pos),
            num_obj_ptr_tokens=n_ptr,
        )
        expected = decode(sam, pix.permute(1, 2, 0).reshape(b, sam.hidden_dim, *sizes[-1]), q.sam2).logits
    assert torch.allclose(zero_k, expected, atol=1e-4), (zero_k - expected).abs().max()
    # ... which is not plain attention over the K separate support memories (scma off)
    assert not torch.allclose(zero_k, variant(model, scma=False).predict(q, s, masks), atol=1e-3)


def test_scma_off_is_sams_own_memory_attention_over_the_same_memories(model, episode):
    """scma=False == sam2's MemoryAttention.forward (the official module, not our re-implementation)
    over [support memories ; refined pseudo-query memory ; pointers], then the decoder."""
    from fssam.sam2_adapter import (
        MaskMemory,
        decode,
        flatten_levels,
        mask_to_memory,
        memory_tokens,
        split_shots,
    )

    query, supports, masks, _ = episode
    plain = variant(model, scma=False)
    q, s = plain.encode_images(query), plain.encode_images(supports.flatten(0, 1))
    logits, inter = plain.predict(q, s, masks, return_intermediates=True)
    sam, (b, k) = plain.sam2, masks.shape[:2]
    s_mem = mask_to_memory(sam, s.sam2, (masks == 1).float().reshape(b * k, 1, S, S))
    disc = mask_to_memory(sam, q.sam2, inter["prior_disc"])
    memories = [*split_shots(s_mem, b, k), MaskMemory(inter["memory"], disc.pos, disc.obj_ptr)]
    memory, memory_pos, n_ptr = memory_tokens(sam, memories)
    feats, pos, sizes = flatten_levels(sam, q.sam2)
    with torch.no_grad():
        pix = sam.memory_attention(
            curr=[feats[-1]],
            curr_pos=[pos[-1]],
            memory=memory,
            memory_pos=memory_pos,
            num_obj_ptr_tokens=n_ptr,
        )
        h, w = sizes[-1]
        expected = decode(sam, pix.permute(1, 2, 0).reshape(b, sam.hidden_dim, h, w), q.sam2).logits
    assert torch.allclose(logits, expected, atol=1e-5)
    # and the prior=none, scma=False model is exactly the naive SAM 2 baseline on the same weights
    none = variant(model, prior="none", scma=False).predict(q, s, masks)
    assert torch.allclose(none, NaiveSAM2(model.config, sam2=model.sam2).predict(q, s, masks), atol=1e-6)


def test_oracle_prior_feeds_the_query_ground_truth_into_the_memory(model, episode):
    from fssam.sam2_adapter import mask_to_memory

    query, supports, masks, qmask = episode
    oracle = variant(model, prior="oracle")
    q, s = oracle.encode_images(query), oracle.encode_images(supports.flatten(0, 1))
    _, inter = oracle.predict(q, s, masks, query_mask=qmask, return_intermediates=True)
    gt = (qmask == 1).float()[:, None]
    assert torch.equal(inter["prior_disc"], gt) and torch.equal(inter["prior_fg"], gt)
    assert torch.equal(inter["memory"], mask_to_memory(oracle.sam2, q.sam2, gt).features)
    # ignore pixels (255) of the query mask are not foreground
    ignored = qmask.clone()
    ignored[:, :8] = 255
    _, inter2 = oracle.predict(q, s, masks, query_mask=ignored, return_intermediates=True)
    assert inter2["prior_fg"][:, 0, :8].sum() == 0


def test_config_validation():
    with pytest.raises(FSSAMError, match="prior"):
        tiny_config(prior="dino")
    with pytest.raises(FSSAMError, match="imr_iters"):
        tiny_config(imr_iters=-1)
    with pytest.raises(FSSAMError, match="unknown FSSAM setting"):
        FSSAMConfig.from_dict({"imr_iter": 3})
    with pytest.raises(FSSAMError, match="random_init=True"):
        FSSAM(FSSAMConfig(sam2_size="t", image_size=S))


def test_naive_baseline_memory_matches_sam2_conditioning(model, episode):
    query, supports, masks, _ = episode
    naive = NaiveSAM2(model.config, sam2=model.sam2)
    q, s = naive.encode_images(query), naive.encode_images(supports[:, :2].flatten(0, 1))
    memory, memory_pos, n_ptr = naive.support_memory(s, masks[:, :2])
    # sam2's own memory construction for two conditioning frames and a query frame
    sam = model.sam2
    from fssam.sam2_adapter import flatten_levels, mask_to_memory

    s_mask = (masks[:, :2] == 1).float()
    outputs = {}
    for i in range(2):
        mem = mask_to_memory(sam, s.select([i, 2 + i]).sam2, s_mask[:, i : i + 1])  # shot i of both episodes
        outputs[i] = {"maskmem_features": mem.features, "maskmem_pos_enc": [mem.pos], "obj_ptr": mem.obj_ptr}
    feats, pos, sizes = flatten_levels(sam, q.sam2)
    expected = sam._prepare_memory_conditioned_features(
        frame_idx=2,
        is_init_cond_frame=False,
        current_vision_feats=feats[-1:],
        current_vision_pos_embeds=pos[-1:],
        feat_sizes=sizes[-1:],
        output_dict={"cond_frame_outputs": outputs, "non_cond_frame_outputs": {}},
        num_frames=3,
    )
    ours = memory_attention(sam.memory_attention, feats[-1], pos[-1], memory, memory_pos, n_ptr)
    assert torch.allclose(ours.permute(1, 2, 0).reshape(2, 256, 16, 16), expected, atol=1e-5)
    assert naive(query, supports, masks).shape == (2, S, S)


def test_training_exposes_exactly_the_trainable_modules(episode):
    model = FSSAM(tiny_config(imr_iters=1))
    query, supports, masks, qmask = episode
    opt = make_optimizer(model)
    trainable = {id(p) for m in model.trainable_modules().values() for p in m.parameters()}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable
    assert [g["name"] for g in opt.param_groups] == ["sam_mask_decoder", "memory_encoder", "memory_attention"]
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) in trainable), name
    assert (
        not model.dino.training
        and not model.sam2.image_encoder.training
        and model.sam2.memory_attention.training
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = train_step(
        model,
        {
            "query": query[:1],
            "supports": supports[:1, :1],
            "support_masks": masks[:1, :1],
            "query_mask": qmask[:1],
        },
        opt,
    )
    assert 0 <= loss <= 1
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(
        n.startswith(("sam2.sam_mask_decoder", "sam2.memory_encoder", "sam2.memory_attention"))
        for n in changed
    )
    assert any(n.startswith("sam2.memory_encoder") for n in changed)
    assert any(n.startswith("sam2.memory_attention") for n in changed)


def test_dice_loss_hand_computed():
    logits = torch.tensor([[[0.0, 100.0], [-100.0, 0.0]]])  # p = .5, 1, 0, .5
    target = torch.tensor([[[1, 1], [255, 0]]])  # t = 1, 1, 0, 0
    # 1 - 2 (0.5 + 1) / ((0.25 + 1 + 0 + 0.25) + 2) = 1 - 3 / 3.5
    assert torch.allclose(dice_loss(logits, target), torch.tensor(1 - 3 / 3.5), atol=1e-6)


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_bench_model_command_reports_both_timings(capsys):
    from benchmark.cli import main

    assert (
        main(
            ["bench-model", "--sam2-size", "t", "--dinov2", "vits14", "--image-size", "256", "--repeats", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "RANDOM-INIT WEIGHTS" in out and "predict on precomputed features" in out and "ratio" in out


def test_sam2_1_configs_run(episode):
    query, supports, masks, _ = episode
    m = FSSAM(tiny_config(sam2_version="2.1", prior="fg"))
    assert m.sam2.add_tpos_enc_to_obj_ptrs and m.sam2.no_obj_embed_spatial is not None
    out = m(query[:1], supports[:1, :2], masks[:1, :2])
    assert out.shape == (1, S, S) and torch.isfinite(out).all()


def test_average_supports_keeps_or_averages_the_pointer_tokens():
    from fssam.scma import MemoryLayout, average_supports

    # K=2 shots of N=3 tokens, a query block, pointers of T=2 tokens each for S1, S2, Q; d=1, values by hand
    layout = MemoryLayout(shots=2, tokens_per_memory=3, ptr_tokens=2, has_query=True)
    s1, s2, q = [1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [7.0, 8.0, 9.0]
    p1, p2, pq = [10.0, 20.0], [30.0, 40.0], [50.0, 60.0]
    x = torch.tensor(s1 + s2 + q + p1 + p2 + pq).reshape(1, 1, -1, 1)
    kept = average_supports(x, layout).flatten().tolist()
    assert kept == [2.0, 3.0, 4.0] + q + p1 + p2 + pq  # 4(K+1) -> here T(K+1) pointer tokens kept
    averaged = average_supports(x, layout, pointers=True).flatten().tolist()
    assert averaged == [2.0, 3.0, 4.0] + q + [20.0, 30.0] + pq
