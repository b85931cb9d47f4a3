"""Matcher's decision logic (ICLR 2024; matcher-method.md §2-§3) as tensor functions, no models.

Reference masks and patch pooling (§2.1), bidirectional Hungarian patch matching (§2.2), the
robust prompt sampler (§2.3), instance-level scores with an exact EMD (§2.5) and the filter/merge
step (§2.6). Everything here is written from the specification; the SAM and DINOv2 parts live in
:mod:`baselines.matcher` and :mod:`baselines.matcher_amg`.

Notation: G x G patch grid (37 at 518), N = G*G cells, K shots, cell n <-> (y = n // G, x = n % G).
Ties: every sort here is stable (lower original index first), the suite rule of §5.8; the release
sorts with CUDA/CPU ``torch.sort`` whose tie order is unspecified.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import ot
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

FALLBACK_SQUARE = 14  # §2.1: an all-empty reference becomes a 14x14 centre square (patch (18,18) at 518)
EXHAUSTIVE_MAX = 8  # §2.3: up to 8 points every subset is enumerated, above that they are drawn


# ------------------------------------------------------------------------------ §2.1 reference


def reference_masks(support_masks: Tensor) -> Tensor:
    """(K, S, S) {0, 1, 255} -> (K, S, S) float {0, 1}: foreground is 1 (255 is background, as the
    release's PASCAL loader does); if every shot is empty, a 14x14 centre square (rows and columns
    ``[S//2 - 7, S//2 + 7)``) in every shot. A new tensor (the release writes into the batch)."""
    masks = (support_masks == 1).float()
    if masks.sum() == 0:
        lo = masks.shape[-1] // 2 - FALLBACK_SQUARE // 2
        masks[:, lo : lo + FALLBACK_SQUARE, lo : lo + FALLBACK_SQUARE] = 1.0
    return masks


def cell_fraction(masks: Tensor, grid: int) -> Tensor:
    """(M, S, S) masks -> (M, grid*grid) float: the mean of each (S/grid)^2 block, row-major cells
    (``avg_pool2d`` of §2.1; ``cv2.resize(INTER_AREA)`` of §2.5, equal when S is a multiple of grid)."""
    size = masks.shape[-1]
    if size % grid:
        raise ValueError(f"the mask size {size} must be a multiple of the patch grid {grid}")
    chunks = [  # 64 masks at a time: hundreds of 518 x 518 proposals in float would take GBs
        F.avg_pool2d(part.float()[:, None], size // grid).reshape(len(part), grid * grid)
        for part in masks.split(64)
    ]
    return torch.cat(chunks) if chunks else masks.new_zeros(0, grid * grid, dtype=torch.float32)


def foreground_rows(masks: Tensor, grid: int) -> Tensor:
    """(K, S, S) float reference masks -> R: ascending indices into the K*N shot-major support
    patches that hold any foreground pixel (``avg_pool2d > 0``)."""
    return torch.nonzero(cell_fraction(masks, grid).reshape(-1) > 0).flatten()


# -------------------------------------------------------------------------------- §2.2 matching


@dataclass
class Matching:
    """What patch-level matching decided (all index tensors are int64, on the CPU).

    forward_rows, forward_cols: the L forward pairs (t order: rows ascending), rows index R.
    sigma: (L,) S[R[r_t], c_t]; reverse: (L,) rho_t, the support patch query cell c_t maps back to;
    keep: (L,) bool, rho_t in R (all True when none is); order: the kept t's, by descending sigma,
    cut to n_red; cells: the query cells in Python-set order; points: (n_p, 2) (x, y) patch centres.
    """

    forward_rows: Tensor
    forward_cols: Tensor
    sigma: Tensor
    reverse: Tensor
    keep: Tensor
    order: Tensor
    cells: list[int]
    points: Tensor


def similarity(query_tokens: Tensor, support_tokens: Tensor) -> Tensor:
    """(N, C) query and (K*N, C) support tokens -> (K*N, N) cosine similarities (tokens L2-normalised
    over channels, as the release's ``F.normalize(dim=1)`` on 2-D matrices)."""
    return F.normalize(support_tokens, dim=1) @ F.normalize(query_tokens, dim=1).T


def set_order(cells: list[int]) -> list[int]:
    """The cells as CPython iterates a ``set`` built from them in this order (§2.2, bug §5.1)."""
    return list(set(cells))


def cell_centres(cells: list[int], grid: int, patch: int) -> Tensor:
    """Cells -> (n, 2) int64 (x, y) pixel centres ``(patch * (c % grid) + patch // 2, patch * (c // grid) + patch // 2)``."""
    c = torch.tensor(cells, dtype=torch.int64)
    return torch.stack([patch * (c % grid) + patch // 2, patch * (c // grid) + patch // 2], dim=1)


def reduction_size(kept: int) -> int:
    """n_red of §2.2: half of the kept matches (floor) when more than 40 are kept, else all."""
    return kept // 2 if kept > 40 else kept


def patch_level_matching(sim: Tensor, rows: Tensor, grid: int, patch: int) -> Matching:
    """Bidirectional Hungarian matching of §2.2.

    Args:
        sim: (K*N, N) cosine similarities (float32; the solver sees them as float64, as scipy does).
        rows: R, the ascending support-foreground indices (non-empty).
        grid, patch: the patch grid side and the patch's pixel size in the mask frame (37, 14).
    """
    s = sim.detach().cpu().float().numpy()
    r = rows.cpu().numpy()
    fwd_r, fwd_c = linear_sum_assignment(s[r, :], maximize=True)
    sigma = torch.from_numpy(s[r[fwd_r], fwd_c].copy())
    _, rho = linear_sum_assignment(s[:, fwd_c].T, maximize=True)
    keep = torch.from_numpy(np.isin(rho, r))
    if not keep.any():
        keep = torch.ones_like(keep)
    kept = torch.nonzero(keep).flatten()
    ranked = kept[torch.sort(sigma[kept], descending=True, stable=True).indices]
    order = ranked[: reduction_size(len(kept))]
    cells = set_order([int(fwd_c[t]) for t in order])
    return Matching(
        forward_rows=torch.from_numpy(fwd_r.astype(np.int64)),
        forward_cols=torch.from_numpy(fwd_c.astype(np.int64)),
        sigma=sigma,
        reverse=torch.from_numpy(rho.astype(np.int64)),
        keep=keep,
        order=order,
        cells=cells,
        points=cell_centres(cells, grid, patch),
    )


def points_box(points: Tensor, size: int) -> Tensor:
    """(n, 2) (x, y) points -> (4,) float xyxy ``[max(min x, 0), max(min y, 0), min(max x, S-1), min(max y, S-1)]`` (``use_box``)."""
    lo = points.min(0).values.clamp(min=0)
    hi = points.max(0).values.clamp(max=size - 1)
    return torch.cat([lo, hi]).float()


# --------------------------------------------------------------------------------- §2.3 sampler


def colex_subsets(n: int, i: int) -> list[list[int]]:
    """Every i-subset of range(n) in the release's recursive order (§2.3): for m = 0..n-1, each
    (i-1)-subset of range(m) followed by m (colexicographic order)."""
    if i > n:
        return []
    if i == 0:
        return [[]]
    if i == n:
        return [list(range(n))]
    return [sub + [m] for m in range(n) for sub in colex_subsets(m, i - 1)]


def sample_subsets(n_points: int, lo: int, hi: int, draws: int, rng: random.Random) -> list[list[list[int]]]:
    """The point-index subsets of §2.3, one group per size i in ``range(min(lo, n), min(hi, n) + 1)``.

    More than 8 points: ``draws`` calls ``rng.sample(range(n), i)`` per size (the stream runs on);
    up to 8: every i-subset in :func:`colex_subsets` order (no draw)."""
    sizes = range(min(lo, n_points), min(hi, n_points) + 1)
    if n_points > EXHAUSTIVE_MAX:
        return [[rng.sample(range(n_points), i) for _ in range(draws)] for i in sizes]
    return [colex_subsets(n_points, i) for i in sizes]


# ---------------------------------------------------------------------------------- §2.5 scores


@dataclass
class MaskScores:
    """Per-mask instance scores (M,) of §2.5: ``emd`` (float64 EMD), ``emd_score`` (float32 1 - emd),
    ``purity``, ``coverage``, ``score`` (float32), and POT's result codes (1: optimal)."""

    emd: Tensor
    emd_score: Tensor
    purity: Tensor
    coverage: Tensor
    score: Tensor
    emd_status: list[int]


def mask_cells(fraction: Tensor) -> Tensor:
    """(N,) block means of one mask -> the selected cells: those > 0 (any pixel); if none is, every
    cell (the release's ``max - 1e-6`` threshold)."""
    if fraction.max() <= 0:
        return torch.arange(fraction.numel())
    return torch.nonzero(fraction > 0).flatten()


def exact_emd(cost: np.ndarray) -> tuple[float, int]:
    """EMD between uniform masses over the rows and the columns of ``cost`` (float64), POT's exact
    network simplex (``ot.emd2``, default ``numItermax``): (cost, result code)."""
    a = np.full(cost.shape[0], 1.0 / cost.shape[0])
    b = np.full(cost.shape[1], 1.0 / cost.shape[1])
    value, log = ot.emd2(a, b, cost, log=True)
    return float(value), int(log["result_code"])


def points_inside(masks: Tensor, points: Tensor) -> Tensor:
    """(M, S, S) bool masks, (n, 2) (x, y) points clipped to the frame -> (M,) int64 points inside."""
    size = masks.shape[-1]
    p = points.long().clamp(0, size - 1).to(masks.device)
    return masks[:, p[:, 1], p[:, 0]].sum(1).long().cpu()


def instance_scores(
    masks: Tensor,
    cost: Tensor,
    rows: Tensor,
    points: Tensor,
    grid: int,
    alpha: float,
    beta: float,
    exp: float,
) -> MaskScores:
    """Scores of (M, S, S) bool masks (§2.5). ``cost``: (K*N, N) = (1 - sim) / 2; ``rows``: R;
    ``points``: the (n_p, 2) matched points. score = alpha*emd_score + beta*purity*coverage^exp."""
    fractions = cell_fraction(masks, grid).cpu()
    source = cost.detach().cpu().double().numpy()[rows.cpu().numpy()]
    inside = points_inside(masks, points).double()
    emds, codes, n_cells = [], [], []
    for frac in fractions:
        cells = mask_cells(frac).numpy()
        value, code = exact_emd(source[:, cells])
        emds.append(value)
        codes.append(code)
        n_cells.append(len(cells) if frac.max() > 0 else 0)
    emd = torch.tensor(emds, dtype=torch.float64)
    emd_score = (1.0 - emd).float()
    purity = (inside / torch.tensor(n_cells, dtype=torch.float64).clamp(min=1) + 1e-6).float()
    coverage = (inside / max(len(points), 1) + 1e-6).float()
    score = alpha * emd_score + beta * purity * coverage**exp
    return MaskScores(emd, emd_score, purity, coverage, score.float(), codes)


# ----------------------------------------------------------------------------- §2.6 filter/merge


def metric_filter(metrics: list[tuple[Tensor, float]]) -> Tensor:
    """Indices surviving the metric filters of §2.6, applied in the given order (coverage, emd,
    purity): each with threshold > 0 keeps ``metric >= min(threshold, max of the survivors)``."""
    alive = torch.arange(len(metrics[0][0]))
    for values, threshold in metrics:
        if threshold > 0 and len(alive):
            v = values[alive]
            alive = alive[v >= min(threshold, float(v.max()))]
    return alive


def score_filter(score: Tensor, d_max: float, dn_max: float, count: int, norm: str = "max") -> Tensor:
    """The release's ``use_score_filter`` merge (§2.6.2) on the survivors' scores -> their selected
    positions: d = 1 - score sorted ascending (stable); dn = (d - min d) / (max d + 1e-6)
    (``norm="max"``: max d, not the range, as released, §5.3; ``"range"``: (max d - min d + 1e-6),
    the min-max normalisation meant); keep d < d_max (the best always) and dn < dn_max; the first
    ``count`` kept in rank order."""
    d = 1.0 - score.float()
    ranked = torch.sort(d, stable=True)
    ds = ranked.values
    scale = ds.max() if norm == "max" else ds.max() - ds.min()
    dn = (ds - ds.min()) / (scale + 1e-6)
    good = ds < d_max
    good[0] = True
    keep = good & (dn < dn_max)
    return ranked.indices[keep][:count]


def topk_filter(score: Tensor, count: int, threshold: float) -> Tensor:
    """The else branch of §2.6.3: the top ``count`` by score (stable), scores divided by their max
    when ``threshold > 0``, kept when ``> threshold``."""
    ranked = torch.sort(score.float(), descending=True, stable=True)
    values, idx = ranked.values[:count], ranked.indices[:count]
    if threshold > 0:
        values = values / values.max()
    return idx[values > threshold]
