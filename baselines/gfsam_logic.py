"""GF-SAM's decision logic (NeurIPS 2024, /work/shared/docs/gfsam-method.md section 2): tensors in,
tensors out, no encoders.

Everything here is grid-size generic: ``g`` is the DINOv2 patch grid (37 at 518 px) and ``S`` the
frame of the SAM masks (1024 in the release). A "map" is (g, g), flattened row-major (q = g*y + x);
points are (x, y) grid cells. SAM enters only through ``decode_fn(coords (b, 1, 2) float xy frame
pixels, labels (b, 1) int) -> (b, 1, S, S) logits``, so tests inject stub masks.

The release leaves two tie orders unspecified (CUDA ``topk`` and ``argsort``); here both are stable:
among equal values the lower flat index (topk) or the lower point index (argsort) comes first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from baselines.gfsam_config import CLS_SCORES, FALLBACK_PICKS, POINT_POSITIONS, TOKEN_NORMS

MAX_POINTS = 128  # find_points: k = min(int(sum F), 128)
SAM_BATCH = 64  # generate_sam_masks: points per decoder call
COS_EPS = 1e-7  # generate_prior: added to the norm product and to the mask mean
MINMAX_EPS = 1e-6  # predict: min-max normalisation of X and B_mean
SCORE_EPS = 1e-6  # cluster_classification: mask score denominator
FALLBACK_HALF = 7  # set_reference: the empty-support square is rows/cols [S//2 - 7, S//2 + 7)


DecodeFn = Callable[[Tensor, Tensor], Tensor]


def normalize_tokens(tokens: Tensor, mode: str = "tokens") -> Tensor:
    """(B, N, C) -> L2-normalised tokens, eps 1e-12.

    ``"tokens"`` (the release, ``F.normalize(dim=1)``): each channel divided by its norm over the
    image's N tokens. ``"channels"``: each token divided by its channel norm (a per-token cosine).
    """
    if mode == "tokens":
        return F.normalize(tokens, p=2, dim=1)
    if mode == "channels":
        return F.normalize(tokens, p=2, dim=2)
    raise ValueError(f"token_norm: {mode!r} is not one of {list(TOKEN_NORMS)}")


def support_mask_fallback(masks: Tensor) -> Tensor:
    """(K, S, S) float {0, 1} -> a copy; when all K masks are empty, every shot gets the centre
    square rows and cols ``[S//2 - 7, S//2 + 7)`` (the release's 14x14 at 1024)."""
    out = masks.clone()
    if out.sum() == 0:
        lo, hi = out.shape[-2] // 2 - FALLBACK_HALF, out.shape[-2] // 2 + FALLBACK_HALF
        lo_x, hi_x = out.shape[-1] // 2 - FALLBACK_HALF, out.shape[-1] // 2 + FALLBACK_HALF
        out[:, lo:hi, lo_x:hi_x] = 1.0
    return out


def sample_masks(masks: Tensor, grid: int) -> Tensor:
    """(K, H, W) float -> (K, g*g): bilinear with ``align_corners=True`` (the prior's mask sample)."""
    small = F.interpolate(masks[:, None].float(), size=(grid, grid), mode="bilinear", align_corners=True)
    return small.flatten(1)


def soft_masks(masks: Tensor, grid: int) -> Tensor:
    """(n, S, S) bool/float -> (n, g, g): bilinear with ``align_corners=False`` (mask growth, u_c)."""
    small = F.interpolate(masks[:, None].float(), size=(grid, grid), mode="bilinear", align_corners=False)
    return small[:, 0]


def cosine_matrix(support: Tensor, query: Tensor) -> Tensor:
    """(N_s, C), (N_q, C) -> (N_s, N_q): <s, q> / (|s| |q| + 1e-7)."""
    num = support @ query.T
    den = support.norm(dim=1)[:, None] * query.norm(dim=1)[None, :]
    return num / (den + COS_EPS)


def masked_prior(sim: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """One shot's (N_s, N_q) cosine matrix and (N_s,) mask sample -> (P_max, P_mean), each (N_q,).

    P_max[q] = max_s m[s] S[s, q]; P_mean[q] = mean_s(m[s] S[s, q]) / (mean_s m[s] + 1e-7)."""
    weighted = m[:, None] * sim
    return weighted.max(dim=0).values, weighted.mean(dim=0) / (m.mean() + COS_EPS)


def prior(query: Tensor, supports: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Query tokens (N, C), K shots' tokens (K, N, C), mask samples (K, N) -> (P_max, P_mean), each
    (N,): the per-shot priors averaged over the K shots (section 3)."""
    shots = [masked_prior(cosine_matrix(supports[k], query), m[k]) for k in range(supports.shape[0])]
    p_max = torch.stack([s[0] for s in shots]).mean(dim=0)
    p_mean = torch.stack([s[1] for s in shots]).mean(dim=0)
    return p_max, p_mean


def minmax(x: Tensor) -> Tensor:
    return (x - x.min()) / (x.max() - x.min() + MINMAX_EPS)


@dataclass
class Priors:
    """The maps of section 2.3, each (g, g); ``h`` a 0-d tensor."""

    a_max: Tensor
    a_mean: Tensor
    b_mean: Tensor
    h: Tensor
    x_norm: Tensor
    b_norm: Tensor
    filtered: Tensor


def alignment(a_max: Tensor, a_mean: Tensor, b_mean: Tensor) -> Priors:
    """Positive-negative alignment: F = minmax(A_mean A_max) where minmax(B_mean) is not larger."""
    h = (a_mean.max() + a_mean.min()) / 2
    x_norm = minmax(a_mean * a_max)
    b_norm = minmax(b_mean)
    filtered = x_norm * (~(b_norm > x_norm)).to(x_norm.dtype)
    return Priors(a_max, a_mean, b_mean, h, x_norm, b_norm, filtered)


def select_points(filtered: Tensor, max_points: int = MAX_POINTS) -> tuple[Tensor, Tensor]:
    """(g, g) filtered prior -> (hot (g, g) float, points (n, 2) long (x, y) ordered by x then y).

    n = min(int(sum F), max_points), at least 1 when sum F > 0; the n largest cells (ties: lower flat
    index first)."""
    g = filtered.shape[-1]
    sigma = float(filtered.sum())
    k = min(int(sigma), max_points)
    if k == 0 and sigma > 0:
        k = 1
    top = torch.sort(filtered.flatten(), descending=True, stable=True).indices[:k]
    hot = torch.zeros(g * g, dtype=filtered.dtype, device=filtered.device)
    hot[top] = 1.0
    hot = hot.reshape(g, g)
    return hot, torch.nonzero(hot.T > 0)  # (x, y) pairs, lexicographic


def prompt_coords(points: Tensor, grid: int, frame: int, position: str = "corner") -> Tensor:
    """(n, 2) long (x, y) cells -> (n, 2) float64 xy frame pixels.

    ``"corner"`` (the release): ``trunc(p * (frame / grid))`` in float64, the cell's top-left pixel
    (SAM's prompt encoder adds 0.5). ``"centre"``: the patch centre ``(p + 0.5) frame/grid - 0.5``.
    """
    scale = frame / grid
    if position == "corner":
        return torch.floor(points.double() * scale)
    if position == "centre":
        return (points.double() + 0.5) * scale - 0.5
    raise ValueError(f"point_position: {position!r} is not one of {list(POINT_POSITIONS)}")


def point_masks(decode_fn: DecodeFn, coords: Tensor, batch: int = SAM_BATCH) -> Tensor:
    """One SAM mask per positive point: coords (n, 2) -> (n, S, S) bool (logits > 0), in batches."""
    out = []
    for start in range(0, coords.shape[0], batch):
        chunk = coords[start : start + batch].float()[:, None, :]
        labels = torch.ones(chunk.shape[:2], dtype=torch.int64, device=chunk.device)
        out.append(decode_fn(chunk, labels)[:, 0] > 0.0)
    return torch.cat(out)


def adjacency(masks: Tensor, points: Tensor, grid: int, position: str = "corner") -> Tensor:
    """(n, S, S) bool masks, (n, 2) points -> (n, n) float: [i, j] = 1 iff mask i covers point j.

    ``"corner"`` (the release): the legacy-nearest (g, g) resample of each mask read at the cells;
    ``"centre"``: each mask read at the pixel under the patch centre."""
    x, y = points[:, 0], points[:, 1]
    if position == "corner":
        near = F.interpolate(masks[:, None].float(), size=(grid, grid), mode="nearest")[:, 0]
        return near[:, y, x]
    size = masks.shape[-1]
    px = torch.floor((points.double() + 0.5) * (size / grid)).long()
    return masks[:, px[:, 1], px[:, 0]].float()


def weak_clusters(adj: Tensor) -> Tensor:
    """(n, n) adjacency -> (n,) long labels of the weakly connected components (scipy's numbering:
    in order of each component's smallest member)."""
    graph = csr_matrix(adj.detach().cpu().numpy().astype(np.float64))
    _, labels = connected_components(graph, directed=True, connection="weak")
    return torch.as_tensor(labels, dtype=torch.long, device=adj.device)


@dataclass
class Growth:
    """The positive gate: ``fg`` (n,) bool, ``cls`` (n,) float, per cluster the mask ``scores``
    and the ``order`` visited (point indices)."""

    fg: Tensor
    cls: Tensor
    scores: list[Tensor]
    orders: list[Tensor]


def mask_growth(soft: Tensor, priors: Priors, labels: Tensor, cls_score: str = "last-visited") -> Growth:
    """Per-cluster greedy mask growth (section 2.7).

    soft: (n, g, g) bilinear (ac=False) samples of the point masks. Pos = [A_mean^2 > B_mean h],
    D = A_mean^2 - B_mean h. Masks visited by descending score sum(r D) / (sum r + 1e-6); one is
    kept when its part outside the grown region has more Pos than not-Pos mass. ``cls_score``:
    ``"last-visited"`` (the release) gives every member the pos - neg of the cluster's last visited
    mask, ``"own"`` each mask its own pos - neg at its visit."""
    if cls_score not in CLS_SCORES:
        raise ValueError(f"cls_score: {cls_score!r} is not one of {list(CLS_SCORES)}")
    mean_sq, neg_map = priors.a_mean * priors.a_mean, priors.b_mean * priors.h
    pos_map = (mean_sq > neg_map).to(soft.dtype)
    diff = mean_sq - neg_map
    n = soft.shape[0]
    fg = torch.zeros(n, dtype=torch.bool, device=soft.device)
    cls = torch.zeros(n, dtype=soft.dtype, device=soft.device)
    scores, orders = [], []
    for c in range(int(labels.max()) + 1 if n else 0):
        members = torch.nonzero(labels == c)[:, 0]
        r = soft[members]
        score = (r * diff).sum(dim=(1, 2)) / (r.sum(dim=(1, 2)) + SCORE_EPS)
        order = members[torch.sort(score, descending=True, stable=True).indices]
        inner = torch.zeros_like(diff)
        margin = torch.zeros((), dtype=soft.dtype, device=soft.device)
        for i in order.tolist():
            cur = soft[i] * (1 - inner)
            margin = (pos_map * cur).sum() - ((1 - pos_map) * cur).sum()
            if margin > 0:
                inner = inner + cur
                fg[i] = True
            cls[i] = margin
        if cls_score == "last-visited":
            cls[members] = margin
        scores.append(score)
        orders.append(order)
    return Growth(fg, cls, scores, orders)


@dataclass
class Consistency:
    """The overshooting gate (section 2.8): ``u`` (nc, g, g), ``q`` (nc, g, g), ``dist`` and ``v``
    (nc, n), ``assigned`` (n,), ``consistent`` (n,) bool after the majority rule."""

    u: Tensor
    q: Tensor
    dist: Tensor
    v: Tensor
    assigned: Tensor
    consistent: Tensor


def point_consistency(masks: Tensor, labels: Tensor, points: Tensor, query: Tensor, grid: int) -> Consistency:
    """masks (n, S, S) bool, labels (n,), points (n, 2), normalised query tokens (N, C).

    Q_c = P_mean of the query against itself under u_c = bilinear(union of cluster c's masks);
    v[c, j] = Q_c[p_j] / d(p_j, cluster c) (distance 0 counts as 1); a point is consistent when its
    best cluster is its own; a cluster with fewer consistent than inconsistent points loses all."""
    nc = int(labels.max()) + 1
    unions = torch.stack([masks[labels == c].any(dim=0) for c in range(nc)])
    u = soft_masks(unions, grid)
    sim = cosine_matrix(query, query)
    q = torch.stack([masked_prior(sim, u[c].flatten())[1] for c in range(nc)]).reshape(nc, grid, grid)
    pair = torch.cdist(points.to(q.dtype), points.to(q.dtype))  # exact: small integer coordinates
    dist = torch.stack([pair[:, labels == c].min(dim=1).values for c in range(nc)])
    dist = torch.where(dist == 0, torch.ones_like(dist), dist)
    v = q[:, points[:, 1], points[:, 0]] / dist
    assigned = first_argmax(v, dim=0)
    consistent = assigned == labels
    for c in range(nc):
        members = labels == c
        kept = int(consistent[members].sum())
        if kept < int(members.sum()) - kept:
            consistent[members] = False
    return Consistency(u, q, dist, v, assigned, consistent)


def first_argmax(x: Tensor, dim: int) -> Tensor:
    """Index of the first maximal value along ``dim`` (explicit, whatever the backend's argmax does)."""
    is_max = x == x.max(dim=dim, keepdim=True).values
    idx = torch.arange(x.shape[dim], device=x.device).reshape([-1 if d == dim else 1 for d in range(x.ndim)])
    return torch.where(is_max, idx, x.shape[dim]).min(dim=dim).values


def gate_labels(fg: Tensor, consistent: Tensor) -> Tensor:
    """(n,) long: 1 when both gates pass, 2 when exactly one does, 0 when neither."""
    return torch.where(fg & consistent, 1, torch.where(fg ^ consistent, 2, 0))


def merge(
    masks: Tensor, gates: Tensor, cls: Tensor, pick: str = "zeroed-argmax"
) -> tuple[Tensor, int | None]:
    """Union of the masks with gate 1 -> ((S, S) bool, fallback index or None).

    When the union is empty the fallback takes one mask: ``"zeroed-argmax"`` (the release) the first
    argmax of cls with every non-label-2 score set to 0 (so the first non-label-2 point when all
    label-2 scores are negative); ``"best-label2"`` the best label-2 point (the release's rule when
    there is none)."""
    if pick not in FALLBACK_PICKS:
        raise ValueError(f"fallback_pick: {pick!r} is not one of {list(FALLBACK_PICKS)}")
    pred = masks[gates == 1].any(dim=0) if bool((gates == 1).any()) else torch.zeros_like(masks[0])
    if bool(pred.any()):
        return pred, None
    if pick == "best-label2" and bool((gates == 2).any()):
        scores = torch.where(gates == 2, cls, torch.full_like(cls, -torch.inf))
    else:
        scores = torch.where(gates == 2, cls, torch.zeros_like(cls))
    j = int(first_argmax(scores, dim=0))
    return masks[j].clone(), j


@dataclass(frozen=True)
class Switches:
    """The release behaviours that the configuration can change (defaults: the release)."""

    token_norm: str = "tokens"
    cls_score: str = "last-visited"
    fallback_pick: str = "zeroed-argmax"
    point_position: str = "corner"
    max_points: int = MAX_POINTS


def run_episode(
    query: Tensor,
    supports: Tensor,
    support_masks: Tensor,
    decode_fn: DecodeFn,
    switches: Switches = Switches(),
) -> tuple[Tensor, dict]:
    """One GF-SAM episode on raw tokens.

    Args:
        query: (N, C) DINOv2 tokens of the query (pre-norm, row-major g x g cells).
        supports: (K, N, C) tokens of the K supports.
        support_masks: (K, S, S) float {0, 1} at the SAM frame.
        decode_fn: one SAM decoder call (see the module docstring).

    Returns:
        pred (S, S) bool and the intermediates (maps, points, masks, clusters, gates).
    """
    n_tok, size = query.shape[0], support_masks.shape[-1]
    grid = int(round(n_tok**0.5))
    if grid * grid != n_tok:
        raise ValueError(f"expected a square token grid, got {n_tok} tokens")
    tokens = normalize_tokens(torch.cat([query[None], supports]), switches.token_norm)
    tq, ts = tokens[0], tokens[1:]
    filled = support_mask_fallback(support_masks)
    a_max, a_mean = prior(tq, ts, sample_masks(filled, grid))
    _, b_mean = prior(tq, ts, sample_masks(1 - filled, grid))  # the release samples 1 - M
    maps = alignment(*(x.reshape(grid, grid) for x in (a_max, a_mean, b_mean)))
    hot, points = select_points(maps.filtered, switches.max_points)
    inter: dict = {"priors": maps, "hot": hot, "points": points, "grid": grid}
    if points.shape[0] == 0:
        return torch.zeros(size, size, dtype=torch.bool, device=support_masks.device), inter
    coords = prompt_coords(points, grid, size, switches.point_position)
    masks = point_masks(decode_fn, coords.to(support_masks.device))
    labels = weak_clusters(adjacency(masks, points, grid, switches.point_position))
    growth = mask_growth(soft_masks(masks, grid), maps, labels, switches.cls_score)
    consistency = point_consistency(masks, labels, points, tq, grid)
    gates = gate_labels(growth.fg, consistency.consistent)
    pred, fallback = merge(masks, gates, growth.cls, switches.fallback_pick)
    inter |= {
        "coords": coords,
        "point_labels": torch.ones(points.shape[0], dtype=torch.long, device=points.device),
        "masks": masks,
        "clusters": labels,
        "growth": growth,
        "consistency": consistency,
        "gates": gates,
        "fallback": fallback,
    }
    return pred, inter
