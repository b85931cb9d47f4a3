"""Matcher (baselines/matcher*.py): the decision logic on hand-worked cases, the modified automatic
mask generator on a stub decoder, the whole method on tiny random weights (SAM 1 ``vit_test`` and
SAM 2 ``sam2-t``, DINOv2-S at 112 px) and one cell through the harness.

The tiny-model configuration shrinks the prompt counts so the CPU tests stay fast: a 2x2 dense
grid instead of 64x64 (one dense prompt), subsets of 1..2 points with 2 draws per size instead of 1..6 with 64, and
the iou/stability filters off (random SAM weights predict low IoUs: with the release's thresholds
no mask would survive and every episode would take the no-mask path)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch

from baselines.matcher import Matcher, amg_settings, episode_rng
from baselines.matcher_amg import (
    AMGSettings,
    MatcherMaskGenerator,
    dense_grid,
    record_count,
    select_outputs,
    stable_box_nms,
)
from baselines.matcher_config import MatcherConfig
from baselines.matcher_logic import (
    cell_fraction,
    colex_subsets,
    exact_emd,
    foreground_rows,
    instance_scores,
    metric_filter,
    patch_level_matching,
    points_box,
    reference_masks,
    sample_subsets,
    score_filter,
    topk_filter,
)
from baselines.sam_backend import build_promptable

# ------------------------------------------------------------------------- §2.1 reference masks


def test_reference_masks_pool_any_pixel_and_fall_back_to_the_centre_square():
    m = torch.zeros(2, 28, 28, dtype=torch.uint8)
    m[0, 0, 0] = 1  # one pixel of cell 0 of shot 0
    m[1, 20:28, 14:28] = 1  # shot 1: the bottom-right cell (14x14 cells on a 2x2 grid)
    m[1, 0:14, 0:14] = 255  # ignore is background
    rows = foreground_rows(reference_masks(m), grid=2)
    assert rows.tolist() == [0, 4 + 3]  # shot-major: shot 1's cell 3 is row 7
    empty = reference_masks(torch.zeros(1, 518, 518, dtype=torch.uint8))
    assert empty.sum() == 196 and empty[0, 252:266, 252:266].all()
    assert foreground_rows(empty, grid=37).tolist() == [18 * 37 + 18]  # exactly patch (18, 18)


# ------------------------------------------------------------------------------ §2.2 matching

SIM = torch.tensor(
    [
        [0.9, 0.1, 0.2, 0.0],
        [0.8, 0.7, 0.1, 0.0],
        [0.1, 0.2, 0.95, 0.1],  # a background support patch
        [0.0, 0.1, 0.6, 0.3],
    ]
)


def test_forward_and_reverse_hungarian_with_the_bidirectional_filter():
    """Worked by hand. Forward over R = {0, 1, 3}: 0->0 (0.9), 1->1 (0.7), 3->2 (0.6) = 2.2 beats
    every other assignment. Reverse for query cells (0, 1, 2) over all four support patches:
    0->0, 1->1, 2->2 (0.95, total 2.55); support patch 2 is not in R, so t = 2 is dropped."""
    m = patch_level_matching(SIM, torch.tensor([0, 1, 3]), grid=2, patch=14)
    assert m.forward_rows.tolist() == [0, 1, 2] and m.forward_cols.tolist() == [0, 1, 2]
    assert m.sigma.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert m.reverse.tolist() == [0, 1, 2] and m.keep.tolist() == [True, True, False]
    assert m.order.tolist() == [0, 1] and m.cells == [0, 1]
    assert m.points.tolist() == [[7, 7], [21, 7]]  # patch centres (x, y)


def test_when_no_reverse_match_returns_to_the_reference_all_are_kept():
    """R = {3}: forward 3->2; query cell 2's reverse match is support patch 2 (0.95), not in R."""
    m = patch_level_matching(SIM, torch.tensor([3]), grid=2, patch=14)
    assert m.reverse.tolist() == [2] and m.keep.tolist() == [True] and m.cells == [2]
    assert m.points.tolist() == [[7, 21]]  # cell 2 = (y 1, x 0)


def test_more_than_40_kept_matches_are_halved_and_ordered_as_a_python_set():
    """A diagonal-dominant 49x49 similarity: every support patch matches its own query cell both
    ways; 49 > 40 kept, so the 24 most similar cells are used. A set of 24 small ints (< its
    64-slot table) iterates in ascending order, whatever the insertion order."""
    g = torch.Generator().manual_seed(3)
    diag = torch.randperm(49, generator=g).float() / 100 + 0.5
    sim = torch.rand(49, 49, generator=g) * 0.1
    sim[range(49), range(49)] = diag
    m = patch_level_matching(sim, torch.arange(49), grid=7, patch=14)
    top = sorted(torch.argsort(diag, descending=True)[:24].tolist())
    assert m.keep.all() and len(m.order) == 24 and m.cells == top
    assert [int(x) for x in m.forward_cols[m.order]] == torch.argsort(diag, descending=True)[:24].tolist()


def test_the_point_order_is_cpython_set_order_not_sorted():
    """Cells 40 and 8 share a slot of an 8-slot set table: the first inserted keeps it."""
    sim = torch.zeros(2, 49)
    sim[0, 40], sim[1, 8] = 0.9, 0.8  # 40 first (higher similarity)
    m = patch_level_matching(sim, torch.tensor([0, 1]), grid=7, patch=14)
    assert m.cells == [40, 8]
    sim[0, 40], sim[1, 8] = 0.8, 0.9
    assert patch_level_matching(sim, torch.tensor([0, 1]), grid=7, patch=14).cells == [8, 40]


# ------------------------------------------------------------------------------- §2.3 sampler


def test_colex_subsets_worked_by_hand():
    assert colex_subsets(4, 2) == [[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3]]
    assert colex_subsets(4, 3) == [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]
    assert colex_subsets(3, 0) == [[]] and colex_subsets(2, 3) == [] and colex_subsets(3, 3) == [[0, 1, 2]]
    for n, i in itertools.product(range(9), range(7)):
        subs = colex_subsets(n, i)
        assert len(subs) == (math.comb(n, i) if i <= n else 0)
        assert sorted(map(tuple, subs)) == sorted(itertools.combinations(range(n), i))
        assert [s[::-1] for s in subs] == sorted(s[::-1] for s in subs)  # colexicographic


def test_sampler_draws_from_the_stream_above_8_points_and_enumerates_below():
    rng = random.Random(0)
    first = sample_subsets(10, 1, 6, 64, rng)
    small = sample_subsets(5, 4, 6, 64, rng)  # consumes nothing
    second = sample_subsets(12, 1, 3, 2, rng)
    ref = random.Random(0)  # the spec: 64 draws of random.sample(range(n), i) per size, in order
    assert first == [[ref.sample(range(10), i) for _ in range(64)] for i in range(1, 7)]
    assert small == [colex_subsets(5, 4), colex_subsets(5, 5)]
    assert second == [[ref.sample(range(12), i) for _ in range(2)] for i in range(1, 4)]
    assert rng.getstate() == ref.getstate()
    assert sample_subsets(3, 1, 6, 64, random.Random(0)) == [colex_subsets(3, i) for i in (1, 2, 3)]


def test_episode_streams_depend_on_seed_and_episode_only():
    a, b = episode_rng(0, 5), episode_rng(0, 5)
    assert a.random() == b.random()
    assert episode_rng(0, 5).random() != episode_rng(0, 6).random() != episode_rng(1, 5).random()


# -------------------------------------------------------------------------------- §2.5 scores


def test_exact_emd_on_tiny_transport_problems():
    assert exact_emd(np.array([[0.0, 1.0], [1.0, 0.0]]))[0] == pytest.approx(0.0)
    assert exact_emd(np.array([[0.2, 0.4]]))[0] == pytest.approx(0.3)
    # row 0 must ship 1/6 off its free column at cost 1; row 1 fills column 1, then 1/6 of column 2
    value, code = exact_emd(np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5]]))
    assert value == pytest.approx(0.25) and code == 1


def test_instance_scores_worked_by_hand():
    """2x2 grid of 2x2-pixel cells; R = {0, 3}. Mask A: one pixel of cell 0; B: cells 1 and 3;
    C: empty (every cell). Points: (0,0) in A, (3,3) and (2,0) in B."""
    cost = torch.tensor(
        [[0.0, 0.2, 0.4, 0.6], [9, 9, 9, 9], [9, 9, 9, 9], [0.5, 0.1, 0.3, 0.0]], dtype=torch.float32
    )
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = True
    masks[1, 0:2, 2:4] = masks[1, 2:4, 2:4] = True
    points = torch.tensor([[0, 0], [3, 3], [2, 0]])
    s = instance_scores(masks, cost, torch.tensor([0, 3]), points, 2, alpha=0.5, beta=2.0, exp=1.0)
    # A: b = [1] on cell 0: 0.5*0 + 0.5*0.5; B: [[0.2, 0.6], [0.1, 0.0]] diagonal 0.1;
    # C: 4 cells of 1/4: row 0 -> cells 0, 1 (0.05), row 3 -> cells 3, 2 (0.075)
    assert s.emd.tolist() == pytest.approx([0.25, 0.1, 0.125])
    assert s.emd_score.tolist() == pytest.approx([0.75, 0.9, 0.875])
    assert s.purity.tolist() == pytest.approx([1.0 + 1e-6, 1.0 + 1e-6, 1e-6])
    assert s.coverage.tolist() == pytest.approx([1 / 3 + 1e-6, 2 / 3 + 1e-6, 1e-6])
    expected = [0.5 * 0.75 + 2 * 1 * (1 / 3), 0.5 * 0.9 + 2 * 1 * (2 / 3), 0.5 * 0.875]
    assert s.score.tolist() == pytest.approx(expected, abs=1e-5) and s.emd_status == [1, 1, 1]


def test_cell_fraction_is_the_block_mean():
    m = torch.zeros(1, 28, 28)
    m[0, :7, :14] = 1
    assert cell_fraction(m, 2).tolist() == [[0.5, 0, 0, 0]]


# ------------------------------------------------------------------------- §2.6 filter/merge


def test_metric_filters_cap_the_threshold_at_the_best_survivor():
    purity = torch.tensor([0.01, 0.015, 0.005])
    assert metric_filter([(purity, 0.02)]).tolist() == [1]  # min(0.02, 0.015)
    assert metric_filter([(purity, 0.0)]).tolist() == [0, 1, 2]  # off
    coverage = torch.tensor([0.4, 0.9, 0.6])
    # coverage >= 0.5 first keeps 1, 2; purity among them: min(0.02, 0.015) keeps 1
    assert metric_filter([(coverage, 0.5), (purity, 0.02)]).tolist() == [1]
    assert metric_filter([(coverage, 0.5), (torch.tensor([0.1, 0.001, 0.002]), 0.02)]).tolist() == [2]


def test_score_filter_normalises_by_max_d_not_the_range():
    """d = [0.3, 0.1, 0.4, 0.13, 0.15], ranked 1, 3, 4, 0, 2; dn = (d - 0.1) / 0.4 = [0, 0.075,
    0.125, 0.5, 0.75] keeps the first two (by the range 0.3, d = 0.13 would give dn = 0.1: out)."""
    score = torch.tensor([0.7, 0.9, 0.6, 0.87, 0.85])
    assert score_filter(score, 0.33, 0.1, 9).tolist() == [1, 3]
    assert score_filter(score, 0.33, 0.1, 1).tolist() == [1]
    assert score_filter(score, 0.33, 0.2, 9).tolist() == [1, 3, 4]
    # all d >= 0.33: the best is still kept; ties keep the lower index first
    assert score_filter(torch.tensor([0.5, 0.6]), 0.33, 0.1, 9).tolist() == [1]
    assert score_filter(torch.tensor([0.9, 0.9, 0.9]), 0.33, 0.1, 2).tolist() == [0, 1]


def test_score_filter_by_the_range_is_the_min_max_normalisation():
    """The corrected setting (``score_norm: range``) on the same d = [0.3, 0.1, 0.4, 0.13, 0.15]:
    dn = (d - 0.1) / 0.3 = [0.667, 0, 1, 0.1, 0.167], ranked 1, 3, 4, ...: d = 0.13 is at dn = 0.1
    (just under with the 1e-6, out above it) and only the best stays at dn_max 0.1 minus a hair."""
    score = torch.tensor([0.7, 0.9, 0.6, 0.87, 0.85])
    assert score_filter(score, 0.33, 0.0999, 9, norm="range").tolist() == [1]
    assert score_filter(score, 0.33, 0.17, 9, norm="range").tolist() == [1, 3, 4]
    assert score_filter(score, 0.33, 0.17, 9, norm="max").tolist() == [1, 3, 4]  # 0.125 < 0.17 too
    assert score_filter(score, 0.33, 0.1, 9, norm="max").tolist() == [1, 3]  # the release: d=0.13 in


def test_topk_branch_divides_by_the_max_and_keeps_above_the_threshold():
    score = torch.tensor([0.5, 0.8, 0.4, 0.8])
    assert topk_filter(score, 3, 0.7).tolist() == [1, 3]  # [1, 1, 0.625] > 0.7
    assert topk_filter(score, 3, 0.0).tolist() == [1, 3, 0]


# ----------------------------------------------------------------------- the AMG (§1.5, §2.4)


def square_logits(cx: int, cy: int, half: int, ring: bool, size: int = 16) -> torch.Tensor:
    """Logit 4 on the 2h x 2h square of rows cy-h..cy+h-1 and columns cx-h..cx+h-1, 0.5 on a
    1-pixel ring around it when ``ring``, -4 elsewhere."""
    out = torch.full((size, size), -4.0)
    if ring:
        out[cy - half - 1 : cy + half + 1, cx - half - 1 : cx + half + 1] = 0.5
    out[cy - half : cy + half, cx - half : cx + half] = 4.0
    return out


def stub_decode(table: dict, calls: list | None = None):
    """A decoder keyed by the first prompt point: a list of (iou, half, ring) per output."""

    def decode(coords, labels, boxes, multimask):
        if calls is not None:
            calls.append((coords.clone(), labels.clone(), multimask))
        n, c = coords.shape[0], 3 if multimask else 1
        logits, iou = torch.empty(n, c, 16, 16), torch.empty(n, c)
        for k in range(n):
            x, y = (int(round(float(v))) for v in coords[k, 0])
            outs = table.get((x, y), [(0.5, 1, False)] * 3)
            for j in range(c):
                q, half, ring = outs[j]
                logits[k, j], iou[k, j] = square_logits(x, y, half, ring), q
        return logits, iou

    return decode


def test_dense_grid_is_the_official_grid_x_fastest():
    assert dense_grid(2, 16).tolist() == [[4, 4], [12, 4], [4, 12], [12, 12]]
    assert dense_grid(2, 16).dtype == torch.float64


def test_amg_filters_nms_and_order_worked_by_hand():
    """Dense (one output each, iou > 0.88 then stability >= 0.95): (4,4) passes; (12,4) iou 0.80
    fails; (4,12) has stability 16/36; (12,12) has iou 0.88 exactly (the test is strict). Selected
    (3 outputs, iou > 0.85 then stability >= 0.90): at (4,4) output 0 duplicates the dense mask
    (NMS keeps the dense 0.95), output 1 has iou 0.84, output 2 stability 36/64; at (12,12)
    outputs 0 (0.86, 2x2) and 1 (0.87, 6x6; box IoU 1/25) pass, output 2 has iou 0.5."""
    table = {
        (4, 4): [(0.95, 2, False)],
        (12, 4): [(0.80, 2, False)],
        (4, 12): [(0.95, 2, True)],
        (12, 12): [(0.88, 2, False)],
    }
    sel = {
        (4, 4): [(0.90, 2, False), (0.84, 3, False), (0.99, 3, True)],
        (12, 12): [(0.86, 1, False), (0.87, 3, False), (0.5, 2, False)],
    }
    calls = []

    def decode(coords, labels, boxes, multimask):
        return stub_decode(sel if multimask else table, calls)(coords, labels, boxes, multimask)

    gen = MatcherMaskGenerator(decode, 16, AMGSettings(points_per_side=2))
    groups = [torch.tensor([[[4, 4]], [[12, 12]]])]
    data = gen.generate(groups)
    assert data["iou_preds"].tolist() == pytest.approx([0.95, 0.87, 0.86])
    assert data["source"].tolist() == [0, 1, 1]
    assert data["boxes"].tolist() == [[2, 2, 5, 5], [9, 9, 14, 14], [11, 11, 12, 12]]
    assert torch.equal(data["masks"][1], square_logits(12, 12, 3, False) > 0)
    assert [c[2] for c in calls] == [False, True]  # the dense pass single-mask, the selected multimask
    assert calls[0][0].dtype == torch.float64 and calls[0][1].tolist() == [[1]] * 4


def test_output_layer_rules():
    masks, iou = torch.arange(6).reshape(2, 3), torch.arange(6).reshape(2, 3) * 10
    assert select_outputs(masks, iou, 1)[0].tolist() == [[1], [4]]
    assert select_outputs(masks, iou, 4)[1].tolist() == [[10, 20], [40, 50]]
    assert select_outputs(masks, iou, 3)[0].tolist() == masks.tolist()
    assert select_outputs(masks, iou, 7)[0].tolist() == masks.tolist()


@pytest.mark.parametrize(("sel_multimask", "expected"), [(False, 3), (True, 1)])
def test_the_dense_pass_applies_its_layer_only_with_the_selected_multimask_flag(sel_multimask, expected):
    """Bug §5.4: a multimask dense pass keeps all 3 outputs unless ``sel_multimask_output`` is set."""
    table = {(8, 8): [(0.9, 1, False), (0.9, 3, False), (0.9, 5, False)]}
    st = AMGSettings(
        points_per_side=1,
        multimask_output=True,
        sel_multimask_output=sel_multimask,
        output_layer=0,
        box_nms_thresh=1.0,
    )
    data = MatcherMaskGenerator(stub_decode(table), 16, st).generate([])
    assert len(data["iou_preds"]) == expected


@pytest.mark.parametrize(
    ("multimask", "sel_multimask", "expected"), [(True, False, 1), (False, True, 1), (False, False, 1)]
)
def test_the_dense_pass_on_its_own_flag_when_corrected(multimask, sel_multimask, expected):
    """``dense_layer_flag: own``: the dense pass applies ``output_layer`` when its own multimask
    flag is set, whatever the selected prompts' flag (a single-mask pass has one output anyway)."""
    table = {(8, 8): [(0.9, 1, False), (0.9, 3, False), (0.9, 5, False)]}
    st = AMGSettings(
        points_per_side=1,
        multimask_output=multimask,
        sel_multimask_output=sel_multimask,
        output_layer=0,
        box_nms_thresh=1.0,
        dense_layer_flag="own",
    )
    data = MatcherMaskGenerator(stub_decode(table), 16, st).generate([])
    assert len(data["iou_preds"]) == expected


def test_the_quirk_switches_are_settings_with_the_release_as_default():
    from baselines.matcher import amg_settings

    assert MatcherConfig().score_norm == "max" and MatcherConfig().dense_layer_flag == "selected"
    assert amg_settings(MatcherConfig(dense_layer_flag="own")).dense_layer_flag == "own"
    with pytest.raises(ValueError, match="score_norm"):
        MatcherConfig(score_norm="minmax")


def test_stable_box_nms():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [20, 20, 30, 30], [0, 0, 10, 6]])
    scores = torch.tensor([0.9, 0.95, 0.9, 0.9, 0.5])
    # box 1 suppresses box 0 (IoU 0.81); of the tied duplicates 2, 3 the lower index stays;
    # box 4 overlaps box 1 by 45/(60+81-45) = 0.47: kept
    assert stable_box_nms(boxes, scores, 0.65).tolist() == [1, 2, 4]


def test_use_box_gives_every_selected_prompt_the_points_box():
    """The box [max(min x, 0), max(min y, 0), min(max x, S-1), min(max y, S-1)] of all points."""
    points = torch.tensor([[3, 9], [12, 2], [7, 15]])
    box = points_box(points, 16)
    assert box.tolist() == [3, 2, 12, 15]
    calls = []
    decode = stub_decode({}, calls)

    def with_boxes(coords, labels, boxes, multimask):
        calls.append(boxes)
        return decode(coords, labels, boxes, multimask)

    gen = MatcherMaskGenerator(with_boxes, 16, AMGSettings(dense_pred=False))
    gen.generate([points[torch.tensor([[0], [1]])], points[torch.tensor([[0, 2]])]], box)
    boxes = [c for c in calls if not isinstance(c, tuple)]
    assert [b.tolist() for b in boxes] == [[[3, 2, 12, 15]] * 2, [[3, 2, 12, 15]]]


def test_no_surviving_mask_gives_an_empty_record_set():
    gen = MatcherMaskGenerator(stub_decode({}), 16, AMGSettings(points_per_side=1))
    assert record_count(gen.generate([torch.tensor([[[3, 3]]])])) == 0


# ------------------------------------------------------- one episode end to end on a stub SAM


def block_logits(rows: slice, cols: slice, size: int = 28) -> torch.Tensor:
    out = torch.full((size, size), -4.0)
    out[rows, cols] = 4.0
    return out


def test_one_episode_end_to_end_on_a_stub_sam_worked_by_hand():
    """2x2 patch grid of 14 px; one-hot tokens, so sim = identity and cost = 0.5 off the diagonal.
    The support's top row (cells 0, 1) matches query cells 0, 1 both ways: points (7,7), (21,7);
    subsets [0], [1], [0, 1] (no draw at 2 points). The stub answers: cell 0 (iou 0.9), cell 1
    (0.9), top row (0.95) and whole image (0.92); NMS keeps all four (box IoUs 0.5).
    EMD: top row 0; whole image, cell 0 and cell 1 0.25 each. Score filter: d = (0, .25, .25, .25),
    dn = d / 0.25 keeps the top row alone. Without it (top-k, threshold 0): all four, the image."""
    top, whole = (slice(0, 14), slice(0, 28)), (slice(0, 28), slice(0, 28))
    none = (torch.full((28, 28), -4.0), 0.1)
    table = {
        ((7, 7),): [(block_logits(slice(0, 14), slice(0, 14)), 0.9), none, none],
        ((21, 7),): [(block_logits(slice(0, 14), slice(14, 28)), 0.9), none, none],
        ((7, 7), (21, 7)): [(block_logits(*top), 0.95), (block_logits(*whole), 0.92), none],
    }
    prompts = []

    def decode(coords, labels, boxes, multimask):
        keys = [tuple(tuple(int(v) for v in p) for p in prompt) for prompt in coords]
        prompts.extend(keys)
        outs = [table[k] for k in keys]
        return torch.stack([torch.stack([o[0] for o in out]) for out in outs]), torch.tensor(
            [[o[1] for o in out] for out in outs]
        )

    tokens = torch.eye(4)[None]  # (1, N=4, C=4)
    support_mask = torch.zeros(1, 28, 28, dtype=torch.uint8)
    support_mask[0, 3:10, 2:20] = 1  # touches cells 0 and 1 only
    results = []
    for score_filter_on in (True, False):
        cfg = MatcherConfig(
            image_size=28, dinov2_input_size=28, use_dense_mask=False, use_score_filter=score_filter_on
        )
        model = Matcher(cfg, sam=torch.nn.Module(), dino=torch.nn.Module())
        model.generator = lambda query, cfg=cfg: MatcherMaskGenerator(decode, 28, amg_settings(cfg))
        pred, info = model.predict_episode({"dinov2.prenorm": tokens}, tokens, support_mask, random.Random(0))
        results.append((pred, info))
    (pred, info), (pred_topk, _) = results
    assert info["matching"].cells == [0, 1] and info["subsets"] == [[[0], [1]], [[0, 1]]]
    assert prompts[:3] == [((7, 7),), ((21, 7),), ((7, 7), (21, 7))]
    assert info["proposals"]["iou_preds"].tolist() == pytest.approx([0.95, 0.92, 0.9, 0.9])
    assert info["scores"].emd.tolist() == pytest.approx([0.0, 0.25, 0.25, 0.25])
    assert info["kept"].tolist() == [0] and torch.equal(pred, block_logits(*top) > 0)
    assert pred_topk.all()


# --------------------------------------------------------------- the whole method, tiny weights

TINY_MATCHER = {
    "sam": "vit_test",
    "random_init": True,
    "dinov2": "vits14",
    "dinov2_input_size": 112,
    "image_size": 112,
    "points_per_side": 1,
    "sample_range_max": 2,
    "max_sample_iterations": 2,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "iou_filter": 0.0,
    "sel_stability_score_thresh": 0.0,
}
"""Tiny random-init Matcher for CPU tests (see the module docstring)."""


def tiny_images(n: int, size: int = 112, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (a bright rectangle on noise) and their rectangle masks (n, S, S) uint8."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g) * 120
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        y, x = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
        images[i, :, y : y + size // 3, x : x + size // 2] += 120
        masks[i, y : y + size // 3, x : x + size // 2] = 1
    return images, masks


@pytest.fixture(scope="module")
def tiny():
    """A tiny Matcher, 4 images, their merged features (encoded once) and masks."""
    model = Matcher(MatcherConfig(**TINY_MATCHER))
    images, masks = tiny_images(4)
    return model, images, model.encode(images), masks


def pick(feats: dict, idx: list[int]) -> dict:
    return {k: v[idx] for k, v in feats.items()}


def test_predict_is_deterministic_and_independent_of_batching(tiny):
    model, _, feats, masks = tiny
    sm = masks[[2, 3]][:, None]  # queries 0, 1 with supports 2, 3
    both, inter = model.predict(
        pick(feats, [0, 1]), pick(feats, [2, 3]), sm, return_intermediates=True, episode_ids=[3, 7]
    )
    assert both.shape == (2, 112, 112) and set(both.unique().tolist()) <= {-10.0, 10.0}
    alone = model.predict(pick(feats, [1]), pick(feats, [3]), sm[1:], episode_ids=[7])
    assert torch.equal(alone[0], both[1])
    for b, ep in enumerate(inter["episodes"]):  # the prediction is the union of the kept proposals
        union = ep["proposals"]["masks"][ep["kept"]].any(0)
        assert torch.equal(union, both[b] > 0) and 1 <= len(ep["kept"]) <= 9
        n_p = len(ep["matching"].cells)
        assert all(0 <= i < n_p for group in ep["subsets"] for s in group for i in s)
        assert [len(s) for s in ep["subsets"][0]] == ([1] * (2 if n_p > 8 else n_p))


def test_five_shots_and_forward_equals_predict(tiny):
    model, images, feats, masks = tiny
    shots = [1, 2, 3, 2, 1]
    logits, inter = model.predict(
        pick(feats, [0]), pick(feats, shots), masks[shots][None], return_intermediates=True, episode_ids=[0]
    )
    ep = inter["episodes"][0]
    assert len(ep["kept"]) <= 5  # num_merging_mask: 5 at K > 1
    expected_rows = foreground_rows(reference_masks(masks[shots]), 8)
    assert torch.equal(ep["rows"], expected_rows) and int(expected_rows.max()) >= 4 * 64
    fwd = model(images[[0]], images[[1]][None], masks[[1]][None], episode_ids=[0])
    assert torch.equal(
        fwd, model.predict(pick(feats, [0]), pick(feats, [1]), masks[[1]][None], episode_ids=[0])
    )


def test_release_rng_is_one_stream_across_episodes(tiny):
    model, _, feats, masks = tiny
    release = Matcher(MatcherConfig(**TINY_MATCHER, rng="release", seed=4), sam=model.sam, dino=model.dino)
    infos = []
    for q, s in ((0, 2), (1, 3)):  # one at a time, as a cell predicts them
        _, inter = release.predict(
            pick(feats, [q]), pick(feats, [s]), masks[[s]][None], return_intermediates=True
        )
        infos.append(inter["episodes"][0])
    ref = random.Random(4)
    for ep in infos:
        assert ep["subsets"] == sample_subsets(len(ep["matching"].cells), 1, 2, 2, ref)
    assert release.stream.getstate() == ref.getstate()


def test_an_episode_without_proposals_predicts_background(tiny):
    """The release crashes when no mask survives the generator; the suite predicts nothing."""
    model, _, feats, masks = tiny
    strict = {**TINY_MATCHER, "pred_iou_thresh": 100.0, "iou_filter": 100.0}
    none = Matcher(MatcherConfig(**strict), sam=model.sam, dino=model.dino)
    logits, inter = none.predict(
        pick(feats, [0]), pick(feats, [2]), masks[[2]][None], return_intermediates=True
    )
    assert (logits == -10.0).all() and len(inter["episodes"][0]["kept"]) == 0


def test_the_release_decoder_is_the_backends_decode(tiny):
    """SAM 1 prompts mapped in float64 NumPy (the release) vs the backend's float32 mapping."""
    from baselines.matcher import ReleaseSam1Decoder

    model, _, feats, _ = tiny
    one = model.sam.select({"sam1.embed": feats["sam1.embed"]}, 0)
    coords = torch.tensor([[[10.0, 20.0], [50.0, 60.0]], [[100.0, 3.0], [7.0, 77.0]]])
    labels = torch.ones(2, 2, dtype=torch.int)
    mine = ReleaseSam1Decoder(model.sam, one, 112)(coords, labels, None, True)
    ref = model.sam.decode(one, (112, 112), coords, labels, multimask_output=True)
    assert torch.allclose(mine[0], ref.logits, atol=1e-3) and torch.allclose(mine[1], ref.iou, atol=1e-5)


def test_sam2_backbone(tiny):
    dino = tiny[0].dino
    sam2 = build_promptable("sam2-t", random_init=True, input_size=256)
    model = Matcher(MatcherConfig(**{**TINY_MATCHER, "sam": "sam2-t"}), sam=sam2, dino=dino)
    images, masks = tiny_images(2, seed=1)
    feats = model.encode(images)
    assert set(feats) == {"sam2.embed", "sam2.hr0", "sam2.hr1", "dinov2.prenorm"}
    one = model.predict(pick(feats, [0]), pick(feats, [1]), masks[[1]][None], episode_ids=[2])
    assert torch.equal(
        one, model.predict(pick(feats, [0]), pick(feats, [1]), masks[[1]][None], episode_ids=[2])
    )
    five = model.predict(pick(feats, [0]), pick(feats, [1, 0, 1, 0, 1]), masks[[1, 0, 1, 0, 1]][None])
    assert five.shape == (1, 112, 112) and set(five.unique().tolist()) <= {-10.0, 10.0}


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="rng='x'"):
        MatcherConfig(rng="x")
    with pytest.raises(ValueError, match="num_merging_mask='9' must be a whole number"):
        MatcherConfig(num_merging_mask="9")
    with pytest.raises(ValueError, match="use_box=1 must be true or false"):
        MatcherConfig(use_box=1)
    with pytest.raises(ValueError, match="image_size=100 must be a multiple of the DINOv2 grid 8"):
        MatcherConfig(image_size=100, dinov2_input_size=112)
    assert MatcherConfig().merging_count(1) == 9 and MatcherConfig().merging_count(5) == 5
    assert MatcherConfig(num_merging_mask=3).merging_count(5) == 3


# ---------------------------------------------------------------------------- through the harness


def small_manifest(root, tmp_path, episodes: int, shot: int = 1):
    from benchmark.episodes import get_protocol
    from benchmark.episodes.manifest import save_manifest
    from benchmark.episodes.manifests import ManifestRequest, build_manifest

    manifest = build_manifest(
        get_protocol("fssam"), ManifestRequest(root, 0, shot, seed=5, episodes=episodes, dataset="pascal")
    )
    path = tmp_path / "m.json"
    save_manifest(manifest, path)
    return manifest, path


def test_the_harness_passes_episode_ids_only_to_a_predict_that_takes_them(pascal_root, tmp_path):
    from baselines.trivial import mean_colour
    from benchmark.evaluation.cell import CellSpec, evaluate_cell
    from benchmark.evaluation.feature_cache import FeatureCache
    from benchmark.methods.reference import ReferencePredictor

    seen: list = []

    class Probe(ReferencePredictor):
        def predict(self, query, supports, support_masks, episode_ids=None, **extras):
            seen.append(list(episode_ids))
            return super().predict(query, supports, support_masks, **extras)

    class Plain(ReferencePredictor):
        def predict(self, query, supports, support_masks, **extras):
            seen.append(sorted(extras))
            return super().predict(query, supports, support_masks, **extras)

    manifest, path = small_manifest(pascal_root, tmp_path, 3)
    spec = CellSpec("mean_colour", {"image_size": 32}, path, pascal_root, "cpu", batch_size=2)
    probe = evaluate_cell(spec, FeatureCache(None), method=Probe(mean_colour, 32, torch.device("cpu")))
    ids = [e.id for e in manifest.episodes]
    assert seen == [ids[:2], ids[2:]]
    seen.clear()
    plain = evaluate_cell(spec, FeatureCache(None), method=Plain(mean_colour, 32, torch.device("cpu")))
    assert seen == [["query_mask", "return_intermediates"]] * 2 and plain.table.equals(probe.table)


def test_a_matcher_cell_with_cached_features_equals_the_computed_one(pascal_root, tmp_path, tiny):
    from benchmark.evaluation.cell import CellSpec, cell_key, evaluate_cell, weight_ids
    from benchmark.evaluation.feature_cache import FeatureCache
    from benchmark.methods import WeightPool, get_method

    manifest, path = small_manifest(pascal_root, tmp_path, 2)
    settings = get_method("matcher").resolve({**TINY_MATCHER, "sample_range_max": 1})
    spec = CellSpec("matcher", settings, path, pascal_root, "cpu")
    pool = WeightPool()  # the registry builds from the pool: the fixture's (identical) weights
    pool.get(("vit_test", None, True, 0, "2.1"), lambda: tiny[0].sam, group="sam1")
    pool.get(("vits14", None, 112, True, 0), lambda: tiny[0].dino, group="dinov2")
    computed = evaluate_cell(spec, FeatureCache(tmp_path / "cache"), pool=pool)
    cache = FeatureCache(tmp_path / "cache")
    cached = evaluate_cell(spec, cache, pool=pool)
    assert cache.stats.misses == 0 and cache.stats.disk_hits > 0 and cached.encoder_passes == {}
    assert computed.encoder_passes == {"sam": 2, "dinov2": 4}  # SAM runs on the 2 queries only
    assert cached.table.equals(computed.table) and len(cached.table) == 2
    assert computed.weight_hashes["dinov2"] == "random-init:vits14:seed1"
    release = CellSpec("matcher", {**settings, "rng": "release"}, path, pascal_root, "cpu")
    assert cell_key(release, manifest.sha256, weight_ids(release)) != cell_key(
        spec, manifest.sha256, weight_ids(spec)
    )
