"""Tests of benchmark.evaluation.metrics against independently (mostly by hand) computed expectations."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.errors import FssBenchError
from benchmark.evaluation import metrics as M
from benchmark.evaluation.loader import episode_target
from benchmark.evaluation.metrics import (
    EPISODE_COLUMNS,
    bootstrap_ci,
    class_iou,
    episode_table,
    fb_iou,
    fg_iou,
    intersection_union,
    mean_over_folds,
    miou,
    paired_bootstrap_diff,
    paired_bootstrap_diff_over_folds,
    prediction_at_label_size,
    summarize,
)

X = 255  # ignore label, short for the hand-written arrays


# ---------------------------------------------------------------------------------------------------
# episode_target
# ---------------------------------------------------------------------------------------------------


def test_episode_target_numpy_and_torch() -> None:
    label = np.array(
        [
            [0, 3, 3, 7],
            [X, 3, 7, 0],
            [0, 0, X, 3],
        ],
        dtype=np.uint8,
    )
    expected = np.array(
        [
            [0, 1, 1, 0],  # class 7 is another class: background
            [X, 1, 0, 0],
            [0, 0, X, 1],
        ],
        dtype=np.uint8,
    )
    out = episode_target(label, 3)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)

    out_t = episode_target(torch.from_numpy(label.astype(np.int64)), 3)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.uint8
    np.testing.assert_array_equal(out_t.numpy(), expected)

    with pytest.raises(FssBenchError, match="class id"):
        episode_target(label, 0)
    with pytest.raises(FssBenchError, match="class id"):
        episode_target(label, 255)


# ---------------------------------------------------------------------------------------------------
# prediction_at_label_size
# ---------------------------------------------------------------------------------------------------


def test_prediction_upsampling_2x2_to_3x3_centre_is_mean_of_corners() -> None:
    # align_corners=True, 2x2 -> 3x3: corners are copied, edge midpoints are the mean of the two
    # adjacent corners and the centre is the mean of all four.
    #   a=1, b=-1, c=-3, d=3
    #   row 0: a=1,            (a+b)/2=0,          b=-1
    #   row 1: (a+c)/2=-1,     (a+b+c+d)/4=0,      (b+d)/2=1
    #   row 2: c=-3,           (c+d)/2=0,          d=3
    # threshold sigmoid >= 0.5, i.e. logit >= 0: exact zeros are foreground.
    logits = torch.tensor([[1.0, -1.0], [-3.0, 3.0]])
    expected = np.array(
        [
            [True, True, False],
            [False, True, True],
            [False, True, True],
        ]
    )
    out = prediction_at_label_size(logits, (3, 3))
    assert out.dtype == torch.bool and out.shape == (3, 3)
    np.testing.assert_array_equal(out.numpy(), expected)

    # d = 2.9 moves the centre to (1 - 1 - 3 + 2.9)/4 = -0.025 and the bottom middle to -0.05:
    # both become background; the right middle (-1 + 2.9)/2 = 0.95 stays foreground.
    logits2 = torch.tensor([[1.0, -1.0], [-3.0, 2.9]])
    expected2 = np.array(
        [
            [True, True, False],
            [False, False, True],
            [False, False, True],
        ]
    )
    np.testing.assert_array_equal(prediction_at_label_size(logits2, (3, 3)).numpy(), expected2)


def test_prediction_uses_align_corners_true() -> None:
    # 1x2 -> 1x4. align_corners=True samples x = 0, 1/3, 2/3, 1:
    #   -1, -1 + 3.5/3 = 0.1667, 1.333, 2.5  -> F T T T
    # align_corners=False would sample x = 0 (clamped), 0.25, 0.75, 1 (clamped):
    #   -1, -1 + 3.5/4 = -0.125, ...        -> F F T T
    logits = torch.tensor([[-1.0, 2.5]])
    out = prediction_at_label_size(logits, (1, 4))
    np.testing.assert_array_equal(out.numpy(), [[False, True, True, True]])


def test_prediction_threshold_and_batch_and_dtype() -> None:
    # Same size: interpolation is the identity, so only the threshold acts.
    # -1e-7 is background: the threshold is exactly logit >= 0, although float32 sigmoid(-1e-7)
    # rounds to 0.5 (see the docstring).
    logits = torch.tensor([[0.0, -1e-7], [1e-7, -5.0]])
    np.testing.assert_array_equal(
        prediction_at_label_size(logits, (2, 2)).numpy(), [[True, False], [True, False]]
    )

    batch = torch.stack([torch.tensor([[1.0, -1.0], [-3.0, 3.0]]), -torch.ones(2, 2)]).to(torch.float16)
    out = prediction_at_label_size(batch, (3, 3))
    assert out.shape == (2, 3, 3) and out.dtype == torch.bool
    np.testing.assert_array_equal(
        out[0].numpy(), [[True, True, False], [False, True, True], [False, True, True]]
    )
    assert not out[1].any()

    with pytest.raises(ValueError):
        prediction_at_label_size(torch.zeros(1, 1, 2, 2), (3, 3))


# ---------------------------------------------------------------------------------------------------
# intersection_union
# ---------------------------------------------------------------------------------------------------


def test_intersection_union_ignores_255_everywhere() -> None:
    target = np.array(
        [
            [1, 1, 0, 0],
            [1, 1, 0, 0],
            [X, X, 0, 0],
            [0, 0, 0, 1],
        ],
        dtype=np.uint8,
    )
    pred = np.array(
        [
            [1, 0, 0, 0],
            [1, 1, 1, 0],
            [1, 1, 0, 0],  # foreground predicted on the two ignore pixels: must not count
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    # valid pixels: 16 - 2 = 14; target fg = 5 {(0,0),(0,1),(1,0),(1,1),(3,3)}, target bg = 9
    # pred fg on valid pixels = 4 {(0,0),(1,0),(1,1),(1,2)}, pred bg on valid = 10
    # I_fg = |{(0,0),(1,0),(1,1)}| = 3;           U_fg = 5 + 4 - 3 = 6
    # I_bg = 9 target-bg pixels minus (1,2) = 8;    U_bg = 9 + 10 - 8 = 11
    assert intersection_union(pred, target) == (8, 11, 3, 6)
    # torch inputs, 0/1 integer prediction: same numbers
    assert intersection_union(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(target)) == (
        8,
        11,
        3,
        6,
    )
    # Had the ignore pixels been background, pred fg there would add 2 to U_fg and 2 to U_bg:
    target_no_ignore = np.where(target == X, 0, target)
    assert intersection_union(pred, target_no_ignore) == (8, 13, 3, 8)


def test_intersection_union_empty_prediction() -> None:
    target = np.array(
        [
            [0, 0, 0, 0],
            [0, 1, 1, 0],
            [0, 1, 1, X],
            [0, 0, 0, 0],
        ],
        dtype=np.uint8,
    )
    pred = np.zeros((4, 4), dtype=bool)
    # valid = 15, target fg = 4, target bg = 11
    # I_fg = 0, U_fg = #fg = 4; I_bg = 11, U_bg = 15 (every valid pixel is predicted background)
    assert intersection_union(pred, target) == (11, 15, 0, 4)


def test_intersection_union_empty_union() -> None:
    target = np.array(
        [
            [0, 0, X],
            [0, 0, X],
            [0, 0, 0],
        ],
        dtype=np.uint8,
    )
    pred = np.array(
        [
            [0, 0, 1],  # only on ignore pixels
            [0, 0, 1],
            [0, 0, 0],
        ],
        dtype=bool,
    )
    # no fg in target nor (valid) prediction: I_fg = U_fg = 0; I_bg = U_bg = 7 valid pixels
    counts = intersection_union(pred, target)
    assert counts == (7, 7, 0, 0)
    table = episode_table([(0, 4, *counts)])
    assert class_iou(table, [4]) == {4: 0.0}  # 0/0 -> 0.0 (PFENet/HSNet convention)
    assert miou(table, [4]) == 0.0
    assert fg_iou(table) == 0.0
    assert fb_iou(table) == 0.5  # (7/7 + 0)/2


def test_intersection_union_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        intersection_union(np.zeros((2, 3), bool), np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="target values"):
        intersection_union(np.zeros((2, 2), bool), np.array([[0, 1], [2, 255]]))
    with pytest.raises(ValueError, match="pred"):
        intersection_union(np.array([[0, 2], [0, 1]]), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        intersection_union(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 2), np.uint8))
    # The error is also the suite's user-facing error type.
    with pytest.raises(FssBenchError):
        intersection_union(np.zeros((2, 3), bool), np.zeros((3, 2), np.uint8))


# ---------------------------------------------------------------------------------------------------
# Aggregates on hand-written tables
# ---------------------------------------------------------------------------------------------------


def _hand_table() -> pd.DataFrame:
    # episode, class, I_bg, U_bg, I_fg, U_fg
    return episode_table(
        [
            (0, 1, 8, 9, 1, 2),  # per-episode IoU 0.5
            (1, 1, 50, 60, 90, 100),  # per-episode IoU 0.9
            (2, 2, 85, 95, 0, 10),  # per-episode IoU 0.0
        ]
    )


def test_accumulated_miou_differs_from_mean_of_episode_ious() -> None:
    table = _hand_table()
    classes = [1, 2, 3]  # class 3 has no episode
    # class 1 accumulated: (1 + 90) / (2 + 100) = 91/102 = 0.892156...; the mean of its per-episode
    # IoUs would be (0.5 + 0.9)/2 = 0.7.
    # class 2: 0/10 = 0.  class 3: no episodes -> 0.
    # mIoU = (91/102 + 0 + 0)/3 = 0.297385...; the per-episode-mean variant would give 0.7/3 = 0.2333.
    ious = class_iou(table, classes)
    assert ious == {1: 91 / 102, 2: 0.0, 3: 0.0}
    assert miou(table, classes) == pytest.approx(91 / 102 / 3, rel=1e-15)
    assert miou(table, classes) != pytest.approx(0.7 / 3)
    # FB-IoU = ((8+50+85)/(9+60+95) + (1+90+0)/(2+100+10))/2 = (143/164 + 91/112)/2
    assert fb_iou(table) == pytest.approx((143 / 164 + 91 / 112) / 2, rel=1e-15)
    assert fg_iou(table) == pytest.approx(91 / 112, rel=1e-15)

    summary = summarize(table, classes)
    assert summary["miou"] == miou(table, classes)
    assert summary["class_iou"] == ious
    assert summary["n_episodes"] == 3
    assert summary["episodes_per_class"] == {1: 2, 2: 1, 3: 0}
    assert summary["classes_without_episodes"] == [3]
    assert set(summary) == {
        "miou",
        "fb_iou",
        "fg_iou",
        "class_iou",
        "n_episodes",
        "episodes_per_class",
        "classes_without_episodes",
    }


def test_class_with_single_episode() -> None:
    table = episode_table([(10, 6, 3, 5, 2, 7)])
    assert class_iou(table, [6]) == {6: 2 / 7}
    assert miou(table, [6, 7]) == pytest.approx((2 / 7) / 2)


def test_aggregates_reject_foreign_classes_and_bad_tables() -> None:
    table = _hand_table()
    with pytest.raises(ValueError, match="not among"):
        miou(table, [1])  # episodes of class 2 exist
    with pytest.raises(ValueError, match="duplicates"):
        miou(table, [1, 1, 2])
    bad = table.copy()
    bad.loc[0, "I_fg"] = 5  # intersection > union
    with pytest.raises(ValueError, match="larger"):
        fg_iou(bad)
    with pytest.raises(ValueError, match="repeats"):
        episode_table([(0, 1, 0, 0, 0, 0), (0, 1, 0, 0, 0, 0)])
    with pytest.raises(ValueError, match="lacks"):
        fb_iou(table.drop(columns=["U_bg"]))


def test_empty_table_conventions() -> None:
    table = episode_table([])
    assert list(table.columns) == list(EPISODE_COLUMNS)
    assert all(table[c].dtype == np.int64 for c in EPISODE_COLUMNS)
    assert fb_iou(table) == 0.0 and fg_iou(table) == 0.0
    assert summarize(table, [1, 2])["classes_without_episodes"] == [1, 2]


def test_mean_over_folds() -> None:
    assert mean_over_folds([0.5, 0.6, 0.7, 0.8]) == pytest.approx(0.65)
    with pytest.raises(ValueError):
        mean_over_folds([])
    with pytest.raises(ValueError):
        mean_over_folds([0.5, float("nan")])


# ---------------------------------------------------------------------------------------------------
# Scoring pipeline: what a cell does per episode (predict.py) and per cell (cell.py)
# ---------------------------------------------------------------------------------------------------


def test_scoring_pipeline_flow_and_errors() -> None:
    """intersection_union per episode -> episode_table rows -> summarize, as a cell scores them."""
    target = np.array([[1, 0], [X, 1]], dtype=np.uint8)
    pred = np.array([[1, 1], [1, 0]], dtype=bool)
    # valid 3; fg target {(0,0),(1,1)}, pred fg valid {(0,0),(0,1)}: I_fg 1, U_fg 3; I_bg 0, U_bg 2
    counts = intersection_union(pred, target)
    assert counts == (0, 2, 1, 3)
    table = episode_table([(0, 1, *counts)])
    assert list(table.columns) == list(EPISODE_COLUMNS)
    assert all(table[c].dtype == np.int64 for c in EPISODE_COLUMNS)
    assert table.to_numpy().tolist() == [[0, 1, 0, 2, 1, 3]]
    assert summarize(table, [1, 2])["miou"] == pytest.approx((1 / 3) / 2)
    with pytest.raises(ValueError, match="repeats episode ids"):
        episode_table([(0, 1, *counts), (0, 2, *counts)])
    with pytest.raises(ValueError, match="not among the given classes"):
        summarize(episode_table([(1, 3, *counts)]), [1, 2])


@st.composite
def _episodes(draw: st.DrawFn) -> list[tuple[int, np.ndarray, np.ndarray]]:
    n = draw(st.integers(min_value=1, max_value=12))
    out = []
    for _ in range(n):
        cls = draw(st.sampled_from([3, 8, 13, 18]))
        h = draw(st.integers(1, 6))
        w = draw(st.integers(1, 6))
        tgt = draw(st.lists(st.sampled_from([0, 1, 255]), min_size=h * w, max_size=h * w))
        prd = draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))
        out.append(
            (cls, np.array(prd, dtype=bool).reshape(h, w), np.array(tgt, dtype=np.uint8).reshape(h, w))
        )
    return out


def _brute_force_counts(pixels: list[tuple[bool, int]]) -> tuple[int, int, int, int]:
    """Set-based counts over a list of (pred, target) pixels, independently of the library."""
    idx = range(len(pixels))
    valid = {i for i in idx if pixels[i][1] != 255}
    pred_fg = {i for i in idx if pixels[i][0]} & valid
    pred_bg = valid - pred_fg
    tgt_fg = {i for i in idx if pixels[i][1] == 1}
    tgt_bg = {i for i in idx if pixels[i][1] == 0}
    return (
        len(pred_bg & tgt_bg),
        len(pred_bg | tgt_bg),
        len(pred_fg & tgt_fg),
        len(pred_fg | tgt_fg),
    )


@settings(max_examples=60, deadline=None)
@given(_episodes())
def test_scoring_pipeline_matches_brute_force_pixel_concatenation(episodes) -> None:
    classes = [3, 8, 13, 18]
    rows = []
    per_class_pixels: dict[int, list[tuple[bool, int]]] = {c: [] for c in classes}
    all_pixels: list[tuple[bool, int]] = []
    for ep_id, (cls, pred, tgt) in enumerate(episodes):
        rows.append((ep_id * 7 + 1, cls, *intersection_union(pred, tgt)))
        pix = list(zip(pred.ravel().tolist(), tgt.ravel().tolist(), strict=True))
        assert list(rows[-1][2:]) == list(_brute_force_counts(pix))
        per_class_pixels[cls].extend(pix)
        all_pixels.extend(pix)

    result = summarize(episode_table(rows), classes)
    expected_class_iou = {}
    for c in classes:
        _, _, i_fg, u_fg = _brute_force_counts(per_class_pixels[c])
        expected_class_iou[c] = float(Fraction(i_fg, u_fg)) if u_fg else 0.0
    assert result["class_iou"] == expected_class_iou  # exact: both are correctly rounded quotients
    assert result["miou"] == pytest.approx(sum(expected_class_iou.values()) / len(classes), rel=1e-12, abs=0)
    i_bg, u_bg, i_fg, u_fg = _brute_force_counts(all_pixels)
    fg = Fraction(i_fg, u_fg) if u_fg else Fraction(0)
    bg = Fraction(i_bg, u_bg) if u_bg else Fraction(0)
    assert result["fg_iou"] == float(fg)
    assert result["fb_iou"] == pytest.approx(float((bg + fg) / 2), rel=1e-12, abs=0)
    assert result["n_episodes"] == len(episodes)
    assert sum(result["episodes_per_class"].values()) == len(episodes)


# ---------------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------------


def _random_table(n: int, classes: list[int], seed: int, quality: float = 0.6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cls = np.array(classes)[np.arange(n) % len(classes)]
    u_fg = rng.integers(100, 5000, n)
    i_fg = (u_fg * np.clip(rng.normal(quality, 0.2, n), 0, 1)).astype(np.int64)
    u_bg = rng.integers(5000, 20000, n)
    i_bg = (u_bg * np.clip(rng.normal(0.9, 0.05, n), 0, 1)).astype(np.int64)
    return episode_table(zip(range(n), cls, i_bg, u_bg, i_fg, u_fg, strict=True))


@pytest.mark.parametrize("metric", ["miou", "fb_iou", "fg_iou"])
@pytest.mark.parametrize("stratify", [True, False])
def test_bootstrap_deterministic_and_contains_point(metric: str, stratify: bool) -> None:
    classes = [1, 2, 3, 4, 5]
    table = _random_table(300, classes, seed=1)
    r1 = bootstrap_ci(table, classes, metric=metric, n_boot=500, seed=7, stratify=stratify)
    r2 = bootstrap_ci(table, classes, metric=metric, n_boot=500, seed=7, stratify=stratify)
    assert r1 == r2
    r3 = bootstrap_ci(table, classes, metric=metric, n_boot=500, seed=8, stratify=stratify)
    assert (r3["low"], r3["high"]) != (r1["low"], r1["high"])
    point = {"miou": miou, "fb_iou": lambda t, c: fb_iou(t), "fg_iou": lambda t, c: fg_iou(t)}[metric]
    assert r1["point"] == point(table, classes)
    assert r1["low"] < r1["point"] < r1["high"]
    assert r1["n_boot"] == 500
    assert r1["low"] >= 0.0 and r1["high"] <= 1.0


@pytest.mark.parametrize("stratify", [True, False])
def test_bootstrap_identical_episodes_collapse(stratify: bool) -> None:
    table = episode_table([(e, 2, 40, 50, 7, 9) for e in range(25)])
    for metric in ("miou", "fb_iou", "fg_iou"):
        r = bootstrap_ci(table, [2, 5], metric=metric, n_boot=200, stratify=stratify)
        assert r["low"] == r["point"] == r["high"]
    assert bootstrap_ci(table, [2, 5], "miou")["point"] == (7 / 9) / 2


def test_bootstrap_two_episode_distribution() -> None:
    # One class, two episodes e0 (I=1, U=4) and e1 (I=3, U=4). A resample of 2 episodes is
    # {e0,e0} (p=1/4, IoU 1/4), {e1,e1} (p=1/4, IoU 3/4) or {e0,e1} (p=1/2, IoU 4/8 = 1/2).
    table = episode_table([(0, 1, 0, 0, 1, 4), (1, 1, 0, 0, 3, 4)])
    n_boot = 20000
    boot = M._bootstrap_sums(
        table[list(EPISODE_COLUMNS[2:])].to_numpy(), np.zeros(2, np.int64), 1, n_boot, 0, True
    )
    values = M._metric_from_sums(boot, "miou")
    assert set(np.unique(values).tolist()) <= {0.25, 0.5, 0.75}
    freq = {v: np.mean(values == v) for v in (0.25, 0.5, 0.75)}
    assert freq[0.25] == pytest.approx(0.25, abs=0.02)
    assert freq[0.5] == pytest.approx(0.5, abs=0.02)
    assert freq[0.75] == pytest.approx(0.25, abs=0.02)
    r = bootstrap_ci(table, [1], n_boot=n_boot, confidence=0.9)
    assert (r["low"], r["point"], r["high"]) == (0.25, 0.5, 0.75)


def test_stratified_resamples_keep_per_class_counts() -> None:
    # Class 1: 3 episodes, class 2: 7 episodes, class 3: none. A column of ones summed per class in
    # each resample counts the episodes drawn for that class.
    cls_index = np.array([0, 1, 1, 0, 1, 1, 1, 0, 1, 1])
    stats = np.ones((10, 1), dtype=np.int64)
    boot = M._bootstrap_sums(stats, cls_index, 3, 300, 0, True)
    assert (boot[:, 0, 0] == 3).all() and (boot[:, 1, 0] == 7).all() and (boot[:, 2, 0] == 0).all()
    unstrat = M._bootstrap_sums(stats, cls_index, 3, 300, 0, False)
    assert (unstrat[:, :, 0].sum(axis=1) == 10).all()
    assert len(np.unique(unstrat[:, 0, 0])) > 1  # class counts vary without stratification

    # Observable consequence: class 1 always perfect (IoU 1), class 2 always wrong (IoU 0); the
    # pooled fg IoU is 3/10 whenever class counts are kept, and varies otherwise.
    rows = [(e, 1 if i == 0 else 2, 0, 1, 5 if i == 0 else 0, 5) for e, i in enumerate(cls_index)]
    table = episode_table(rows)
    r = bootstrap_ci(table, [1, 2, 3], metric="fg_iou", n_boot=300)
    assert r["low"] == r["high"] == r["point"] == 0.3
    r = bootstrap_ci(table, [1, 2, 3], metric="fg_iou", n_boot=300, stratify=False)
    assert r["low"] < 0.3 < r["high"]


def test_paired_diff_of_table_with_itself_is_zero() -> None:
    classes = [1, 2, 3, 4, 5]
    table = _random_table(200, classes, seed=3)
    shuffled = table.sample(frac=1.0, random_state=0)  # row order must not matter
    for stratify in (True, False):
        for metric in ("miou", "fb_iou", "fg_iou"):
            r = paired_bootstrap_diff(table, shuffled, classes, metric=metric, n_boot=300, stratify=stratify)
            assert r == {"diff": 0.0, "low": 0.0, "high": 0.0, "n_boot": 300, "excludes_zero": False}


def test_paired_diff_rejects_mismatched_manifests() -> None:
    classes = [1, 2]
    a = episode_table([(0, 1, 5, 6, 1, 2), (1, 2, 5, 6, 1, 2)])
    b_ids = episode_table([(0, 1, 5, 6, 1, 2), (2, 2, 5, 6, 1, 2)])
    b_cls = episode_table([(0, 1, 5, 6, 1, 2), (1, 1, 5, 6, 1, 2)])
    b_short = episode_table([(0, 1, 5, 6, 1, 2)])
    for b in (b_ids, b_cls, b_short):
        with pytest.raises(ValueError, match="same manifest"):
            paired_bootstrap_diff(a, b, classes)


def test_paired_diff_detects_uniformly_better_method() -> None:
    classes = [1, 2, 3, 4, 5]
    rng = np.random.default_rng(5)
    n = 100
    cls = np.array(classes)[np.arange(n) % 5]
    u_fg = rng.integers(100, 1000, n)
    u_bg = rng.integers(1000, 5000, n)
    i_bg = u_bg // 2
    a = episode_table(zip(range(n), cls, i_bg, u_bg, (u_fg * 8) // 10, u_fg, strict=True))
    b = episode_table(zip(range(n), cls, i_bg, u_bg, (u_fg * 5) // 10, u_fg, strict=True))
    r = paired_bootstrap_diff(a, b, classes, n_boot=500)
    assert r["diff"] == pytest.approx(miou(a, classes) - miou(b, classes), abs=1e-15)
    assert r["diff"] == pytest.approx(0.3, abs=0.01)
    assert r["excludes_zero"] and 0 < r["low"] <= r["diff"] <= r["high"]
    r_rev = paired_bootstrap_diff(b, a, classes, n_boot=500)
    assert r_rev["excludes_zero"] and r_rev["high"] < 0
    assert r_rev["diff"] == -r["diff"]


def test_bootstrap_argument_checks() -> None:
    table = _hand_table()
    with pytest.raises(ValueError, match="metric"):
        bootstrap_ci(table, [1, 2], metric="accuracy")
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(table, [1, 2], n_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(table, [1, 2], confidence=1.0)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci(episode_table([]), [1, 2])


def test_paired_diff_over_folds_reduces_to_the_single_pair_and_averages() -> None:
    rng = np.random.default_rng(5)

    def table(n: int, bias: int):
        rows = []
        for e in range(n):
            u = int(rng.integers(20, 40))
            i = int(rng.integers(0, u // 2)) + bias
            rows.append((e, 1 + e % 2, 50, 60, min(i, u), u))
        return episode_table(rows)

    a1, b1, a2, b2 = table(30, 5), table(30, 0), table(30, 2), table(30, 0)
    single = paired_bootstrap_diff(a1, b1, [1, 2], n_boot=300, seed=3)
    multi1 = paired_bootstrap_diff_over_folds([(a1, b1, [1, 2])], n_boot=300, seed=3)
    assert multi1 == single
    two = paired_bootstrap_diff_over_folds([(a1, b1, [1, 2]), (a2, b2, [1, 2])], n_boot=300, seed=3)
    d2 = paired_bootstrap_diff(a2, b2, [1, 2], n_boot=300, seed=4)["diff"]
    assert two["diff"] == pytest.approx((single["diff"] + d2) / 2)
    assert two["low"] <= two["diff"] <= two["high"]


def test_episode_iou_by_hand():
    from benchmark.evaluation.metrics import episode_iou

    table = pd.DataFrame({"I_fg": [1, 0, 3], "U_fg": [4, 0, 3]})
    assert episode_iou(table).tolist() == [0.25, 0.0, 1.0]  # an empty union counts 0
