"""FSSAM's prior and IMR equations on hand-built tensors (spec sections 2 and 4)."""

import numpy as np
import pytest
import torch

from fssam.imr import iterative_memory_refinement, refine_step, support_similarity
from fssam.ops import cosine_map, minmax, weighted_gap
from fssam.priors import pseudo_prompt_priors, shot_priors

FG_VEC = torch.tensor([1.0, 0.0, 0.0])
BG_VEC = torch.tensor([0.0, 1.0, 0.0])


def two_region_map(left, right, h=4, w=4):
    """(1, C, h, w) features: ``left`` vector in columns < w/2, ``right`` elsewhere."""
    f = torch.empty(1, left.numel(), h, w)
    f[..., : w // 2] = left[:, None, None]
    f[..., w // 2 :] = right[:, None, None]
    return f


def test_weighted_gap_hand_computed():
    feat = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1,1,2,2)
    mask = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    # (1*1 + 2*0.5) / (1.5 + 0.0005)
    assert torch.allclose(weighted_gap(feat, mask), torch.tensor([[2.0 / 1.5005]]), atol=1e-6)


def test_cosine_and_minmax_hand_computed():
    feat = two_region_map(FG_VEC, BG_VEC)
    cos = cosine_map(feat, FG_VEC[None])
    assert (
        torch.allclose(cos[0, 0, :, :2], torch.ones(4, 2), atol=1e-6)
        and (cos[0, 0, :, 2:].abs() < 1e-6).all()
    )
    x = torch.tensor([[1.0, 3.0, 5.0]])
    assert torch.allclose(minmax(x), torch.tensor([[0.0, 2 / (4 + 1e-7), 4 / (4 + 1e-7)]]))


def test_priors_in_unit_range_and_disc_zero_where_background_dominates():
    torch.manual_seed(0)
    # support: FG vector on the left half (mask 1), BG vector on the right half (mask 0)
    s_feat = two_region_map(FG_VEC, BG_VEC)
    s_mask = torch.zeros(1, 1, 4, 4)
    s_mask[..., :2] = 1
    # query: BG on the left half, FG on the right half, plus noise
    q_feat = two_region_map(BG_VEC, FG_VEC) + 0.05 * torch.randn(1, 3, 4, 4)
    fg, disc = shot_priors(q_feat, s_feat, s_mask, out_size=4)
    for p in (fg, disc):
        assert p.shape == (1, 1, 4, 4) and p.min() >= 0 and p.max() <= 1
    assert (disc[..., :2] == 0).all()  # background similarity dominates on the left: ReLU gives 0
    assert disc[..., 2:].min() > 0.5 and fg[..., 2:].min() > fg[..., :2].max()


def test_k_identical_shots_equal_one_shot_and_random_priors_in_range():
    torch.manual_seed(1)
    q = torch.randn(2, 8, 5, 5)
    s = torch.randn(2, 1, 8, 5, 5)
    m = (torch.rand(2, 1, 20, 20) > 0.5).float()
    fg1, d1 = pseudo_prompt_priors(q, s, m, out_size=20)
    fg3, d3 = pseudo_prompt_priors(q, s.repeat(1, 3, 1, 1, 1), m.repeat(1, 3, 1, 1), out_size=20)
    assert torch.allclose(fg1, fg3, atol=1e-7) and torch.allclose(d1, d3, atol=1e-7)
    for p in (fg1, d1):
        assert p.shape == (2, 1, 20, 20) and p.min() >= 0 and p.max() <= 1


def test_refine_step_with_zero_and_one_weights():
    torch.manual_seed(2)
    q_fg, d = torch.randn(1, 64, 4, 4), torch.randn(1, 64, 4, 4)
    p_fg, p_d = torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4)
    mem0, prior0 = refine_step(torch.zeros(1, 1, 4, 4), q_fg, d, p_fg, p_d)
    assert torch.equal(mem0, d) and torch.allclose(prior0, minmax(p_d))
    mem1, prior1 = refine_step(torch.ones(1, 1, 4, 4), q_fg, d, p_fg, p_d)
    assert torch.equal(mem1, q_fg) and torch.allclose(prior1, minmax(p_fg))


def imr_by_hand(q_fg, d0, s, m, p_fg, p_d, iters, version):
    """The IMR equations of the spec (section 4) in float64 numpy, pixel by pixel, written from the text.

    q_fg, d0: (C, h, w); s: (K, C, h, w); m: (K, h, w); p_fg, p_d: (h, w), all at the memory grid.
    Returns the weights W_0..W_{T-1} and the Disc memories D_0..D_T.
    """
    c, h, w = q_fg.shape
    pixels = [(i, j) for i in range(h) for j in range(w)]

    def wgap(feat, mask):  # sum_p F[:,p] m[p] / (sum_p m[p] + 0.0005)
        return sum(feat[:, i, j] * mask[i, j] for i, j in pixels) / (mask.sum() + 0.0005)

    def cos_to(proto):  # cos(Q_fg[:,p], proto) = Q_fg[:,p].proto / (|Q_fg[:,p]| |proto| + 1e-7)
        out = np.zeros((h, w))
        for i, j in pixels:
            v = q_fg[:, i, j]
            out[i, j] = v @ proto / (np.sqrt(v @ v) * np.sqrt(proto @ proto) + 1e-7)
        return out

    def mm(x):  # MinMax over pixels
        return (x - x.min()) / (x.max() - x.min() + 1e-7)

    a = sum(mm(cos_to(wgap(s[k], m[k]))) for k in range(len(s))) / len(s)
    weights, memories, d = [], [d0], d0
    for _ in range(iters):
        b = mm(cos_to(wgap(d, p_d)))
        wt = np.maximum(b + a - 1.0, 0.0)
        if version == "v2":
            wt = mm(wt)
        d = wt * q_fg + (1 - wt) * d
        p_d = mm(wt * p_fg + (1 - wt) * p_d)
        weights.append(wt)
        memories.append(d)
    return weights, memories


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_imr_matches_the_equations_computed_by_hand(version):
    """Masks and priors at 15 x 15 go to the 8 x 8 memory grid with bilinear, align_corners=True:
    output pixel i samples input position i * 14 / 7 = 2i exactly, i.e. every other pixel."""
    g = torch.Generator().manual_seed(3)
    q_fg, d = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    s = torch.randn(2, 2, 4, 8, 8, generator=g)
    q_fg[:, :, :4] += 2 * s[:, 0, :, :4]  # the top rows look like support 0
    m = (torch.rand(2, 2, 15, 15, generator=g) > 0.5).float()
    p_fg, p_d = torch.rand(2, 1, 15, 15, generator=g), torch.rand(2, 1, 15, 15, generator=g)
    assert torch.equal(iterative_memory_refinement(q_fg, d, s, m, p_fg, p_d, iters=0).memory, d)
    res = iterative_memory_refinement(q_fg, d, s, m, p_fg, p_d, iters=3, version=version)
    assert len(res.disc_memories) == 4 and len(res.weights) == 3 and res.memory is res.disc_memories[-1]
    for bi in range(2):
        weights, memories = imr_by_hand(
            *(x[bi].double().numpy() for x in (q_fg, d, s)),
            m[bi, :, ::2, ::2].double().numpy(),
            p_fg[bi, 0, ::2, ::2].double().numpy(),
            p_d[bi, 0, ::2, ::2].double().numpy(),
            iters=3,
            version=version,
        )
        for t in range(3):
            assert np.allclose(res.weights[t][bi, 0].numpy(), weights[t], atol=1e-5)
            assert np.allclose(res.disc_memories[t + 1][bi].numpy(), memories[t + 1], atol=1e-5)
        # the case is not trivial: some pixels are filled from Q_fg, others are left alone
        assert (weights[0] > 0.05).any() and (weights[0] == 0).any()
        if version == "v2":  # MinMax'd weights span [0, 1)
            assert all(w.min() == 0 and w.max() > 0.999 for w in weights)


def test_imr_fills_foreground_only_where_both_similarities_are_high():
    # memories: Q_fg has the FG vector on the left half; the Disc memory is all background vector;
    # the support memory is FG vector under its mask. Expected: W > 0 only on the left half.
    fg_mem = two_region_map(FG_VEC, BG_VEC)
    disc_mem = two_region_map(FG_VEC, BG_VEC) * 0 + BG_VEC[None, :, None, None]
    disc_mem[..., 0, 0] = FG_VEC  # one FG pixel in the Disc memory, where its prior is high
    support = two_region_map(FG_VEC, BG_VEC)[:, None]
    s_mask = torch.zeros(1, 1, 4, 4)
    s_mask[..., :2] = 1
    p_fg = torch.zeros(1, 1, 4, 4)
    p_fg[..., :2] = 1
    p_d = torch.zeros(1, 1, 4, 4)
    p_d[..., 0, 0] = 1
    a = support_similarity(fg_mem, support, s_mask)
    assert torch.allclose(a[..., :2], torch.ones(1, 1, 4, 2), atol=1e-5) and (a[..., 2:] < 1e-5).all()
    res = iterative_memory_refinement(fg_mem, disc_mem, support, s_mask, p_fg, p_d, iters=1)
    w = res.weights[0]
    assert (w[..., 2:] == 0).all() and (w[..., :2] > 0.99).all()
    assert torch.allclose(res.memory[..., :2], fg_mem[..., :2], atol=1e-4)  # FG features filled in
    assert torch.equal(res.memory[..., 2:], disc_mem[..., 2:])  # background untouched
