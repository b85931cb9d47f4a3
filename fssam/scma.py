"""Support-Calibrated Memory Attention (spec section 5) and the memory-attention loop that uses it.

The cross-attention of every memory-attention layer is recomputed here from sam2's own
``RoPEAttention`` weights (q/k/v/out projections, RoPE on queries and on every key except the
object-pointer tokens). With ``calibrate`` the logits of the pseudo-query memory block get a bias::

    k_S, k_Q, k_P = support block, pseudo-query block, pointer tokens   (after projection and RoPE)
    proto = WGAP(k_S as (d, h, w), sup_mask)            support-FG key prototype, per head
    c_j   = MinMax_j(cos(proto, k_Q[j]))                j over the pseudo-query block
    a_ij  = q_i . k_j / sqrt(d)
    â_ij  = MinMax_{j in Q}(a_ij)                       per query pixel i
    b_ij  = scale * min(â_ij + c_j - 1, 0)              detached, in [-scale, 0]
    attention = softmax_j([a_iS ; a_iQ + b_iQ ; a_iP])  then dropout (training) and the values

K shots:
* ``intended`` (as the authors wrote it): inside the calibrated attention the support keys and values
  are averaged position-wise over shots (one support block) and ``c_j`` is averaged over the shots'
  prototypes; the K+1 object pointers (4(K+1) tokens) are kept, as the method describes
  (``kshot_pointers="keep"``, the default). ``kshot_pointers="average"`` averages the K support
  pointers too, so that K identical shots give exactly the 1-shot result. Without SCMA nothing is averaged (the authors' plain branch), i.e. plain attention over all K
  support memories;
* ``released`` (what FSSAM5s actually runs, spec bug B2): no averaging; only shot 0's mask reaches
  the attention, so tokens [0:N] are the "support" block and tokens [N:2N] (support #2 when K > 1)
  are calibrated as if they were the pseudo-query memory.

Without ``calibrate`` and without averaging, the attention is sam2's own ``RoPEAttention.forward``
(the same scaled-dot-product call), which the tests check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fssam.ops import cosine_map, minmax, weighted_gap


@dataclass
class MemoryLayout:
    """Token layout of the memory: [S_1..S_K ; Q (optional) ; pointers of S_1..S_K (; Q)].

    ``tokens_per_memory`` spatial tokens per memory (h*w), ``ptr_tokens`` tokens per object pointer
    (256/64 = 4).
    """

    shots: int
    tokens_per_memory: int
    ptr_tokens: int
    has_query: bool

    @property
    def spatial_tokens(self) -> int:
        return self.tokens_per_memory * (self.shots + int(self.has_query))


@dataclass
class Calibration:
    """SCMA settings for one forward: support masks at the memory grid and the bias scale."""

    support_masks: Tensor  # (B, K, h, w) in {0, 1}, nearest-resized
    scale: float = 10.0
    released: bool = False


def average_supports(x: Tensor, layout: MemoryLayout, pointers: bool = False) -> Tensor:
    """Average support tokens over shots (intended K-shot): (B, H, M, d) -> (B, H, M', d).

    M = K*N (+N) + (K (+1))*T  ->  M' = N (+N) + (K (+1))*T, the pointer tokens kept; with
    ``pointers`` the K support pointers are averaged too: M' = N (+N) + (1 (+1))*T.
    """
    k, n, t = layout.shots, layout.tokens_per_memory, layout.ptr_tokens
    b, h, _, d = x.shape
    sup = x[:, :, : k * n].reshape(b, h, k, n, d).mean(2)
    query = x[:, :, k * n : layout.spatial_tokens]
    ptr = x[:, :, layout.spatial_tokens :]
    if not pointers:
        return torch.cat([sup, query, ptr], dim=2)
    sup_ptr = ptr[:, :, : k * t].reshape(b, h, k, t, d).mean(2)
    return torch.cat([sup, query, sup_ptr, ptr[:, :, k * t :]], dim=2)


def calibration_bias(q: Tensor, k_support: Tensor, k_query: Tensor, masks: Tensor, scale: float) -> Tensor:
    """SCMA bias for the pseudo-query block.

    Args:
        q: (B, H, Nq, d) queries after RoPE.
        k_support: (B, H, K, N, d) support keys per shot (after RoPE).
        k_query: (B, H, N, d) pseudo-query keys.
        masks: (B, K, h, w) support masks at the memory grid, h*w = N.
        scale: bias scale (10 in FSSAM).
    Returns:
        (B, H, Nq, N) bias in [-scale, 0] (detached).
    """
    b, nh, k, n, d = k_support.shape
    side = masks.shape[-2:]
    q_map = k_query.reshape(b * nh, n, d).transpose(1, 2).reshape(b * nh, d, *side)
    c = torch.zeros(b * nh, 1, *side, device=q.device, dtype=q.dtype)
    for s in range(k):
        ks = k_support[:, :, s].reshape(b * nh, n, d).transpose(1, 2).reshape(b * nh, d, *side)
        m = masks[:, s : s + 1].to(q.dtype).repeat_interleave(nh, dim=0)
        c = c + minmax(cosine_map(q_map, weighted_gap(ks, m)))
    c = (c / k).reshape(b, nh, 1, n)
    logits = torch.matmul(q, k_query.transpose(-1, -2)) / math.sqrt(d)  # (B, H, Nq, N)
    lo = logits.min(dim=-1, keepdim=True).values
    hi = logits.max(dim=-1, keepdim=True).values
    a_hat = (logits - lo) / (hi - lo + 1e-7)
    return (scale * torch.clamp(a_hat + c - 1.0, max=0.0)).detach()


def rope_cross_attention(
    attn,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    num_k_exclude_rope: int = 0,
    layout: MemoryLayout | None = None,
    average: bool = False,
    average_pointers: bool = False,
    calibration: Calibration | None = None,
) -> Tensor:
    """sam2 ``RoPEAttention.forward`` with optional K-shot averaging and SCMA, on its own weights.

    Args:
        attn: a sam2 ``RoPEAttention`` (cross-attention, ``rope_k_repeat=True``).
        q: (B, Nq, C) queries; k, v: (B, M, C_kv) memory keys (with positions) and values.
        num_k_exclude_rope: trailing pointer tokens that get no RoPE.
        layout: memory layout (needed for ``average`` and ``calibration``).
    Returns:
        (B, Nq, C).
    """
    from sam2.modeling.position_encoding import apply_rotary_enc

    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    side = math.sqrt(q.shape[-2])
    freqs = attn.freqs_cis.to(q.device)
    if freqs.shape[0] != q.shape[-2]:
        freqs = attn.compute_cis(end_x=side, end_y=side).to(q.device)
    n_rope = k.shape[-2] - num_k_exclude_rope
    q, k_rope = apply_rotary_enc(q, k[:, :, :n_rope], freqs_cis=freqs, repeat_freqs_k=attn.rope_k_repeat)
    k = torch.cat([k_rope, k[:, :, n_rope:]], dim=2)

    mask = None
    if calibration is not None:
        if layout is None or not layout.has_query:
            raise ValueError("SCMA needs a memory layout with a pseudo-query block")
        n = layout.tokens_per_memory
        b, nh, _, d = k.shape
        if calibration.released:  # FSSAM5s: shot 0 is "the support", tokens [N:2N] are "the query"
            k_sup, q_start = k[:, :, :n].unsqueeze(2), n
            masks = calibration.support_masks[:, :1]
        else:
            k_sup = k[:, :, : layout.shots * n].reshape(b, nh, layout.shots, n, d)
            q_start, masks = layout.shots * n, calibration.support_masks
        k_query = k[:, :, q_start : q_start + n]
        bias = calibration_bias(q, k_sup, k_query, masks, calibration.scale)
    if average and layout is not None and layout.shots > 1:
        k, v = average_supports(k, layout, average_pointers), average_supports(v, layout, average_pointers)
        if calibration is not None:
            q_start = n  # after averaging, the query block follows the single support block
    if calibration is not None:
        mask = torch.zeros(*bias.shape[:3], k.shape[-2], device=q.device, dtype=q.dtype)
        mask[..., q_start : q_start + n] = bias
    dropout_p = attn.dropout_p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return attn.out_proj(attn._recombine_heads(out))


COMPILED_LOOP = "_fss_compiled_loop"
"""Attribute of a sam2 ``MemoryAttention`` that holds its compiled :func:`memory_attention_loop`."""


def memory_attention(
    module,
    curr: Tensor,
    curr_pos: Tensor,
    memory: Tensor,
    memory_pos: Tensor,
    num_obj_ptr_tokens: int,
    layout: MemoryLayout | None = None,
    average: bool = False,
    average_pointers: bool = False,
    calibration: Calibration | None = None,
) -> Tensor:
    """sam2 ``MemoryAttention.forward`` with :func:`rope_cross_attention` in every layer.

    This loop drives ``module.layers`` itself, so ``module.compile()`` would never run: after
    :func:`compile_memory_attention` the loop runs compiled (same arguments, same result).

    Args:
        module: a sam2 ``MemoryAttention``.
        curr, curr_pos: (HW, B, 256) stride-16 image tokens and their positions.
        memory, memory_pos: (M, B, 64) memory tokens and positions.
    Returns:
        (HW, B, 256) memory-conditioned features.
    """
    run = getattr(module, COMPILED_LOOP, None) or memory_attention_loop
    return run(
        module,
        curr,
        curr_pos,
        memory,
        memory_pos,
        num_obj_ptr_tokens,
        layout,
        average,
        average_pointers,
        calibration,
    )


def compile_memory_attention(module, **options: Any) -> None:
    """``torch.compile`` what :func:`memory_attention` runs on ``module`` (a sam2 ``MemoryAttention``).

    ``options`` go to ``torch.compile`` (``backend``, ``mode``, ``dynamic``...). The compiled loop is
    a plain attribute (no sub-module), so state-dict keys and weight hashes do not change.
    """
    setattr(module, COMPILED_LOOP, torch.compile(memory_attention_loop, **options))


def memory_attention_loop(
    module,
    curr: Tensor,
    curr_pos: Tensor,
    memory: Tensor,
    memory_pos: Tensor,
    num_obj_ptr_tokens: int,
    layout: MemoryLayout | None,
    average: bool,
    average_pointers: bool,
    calibration: Calibration | None,
) -> Tensor:
    """The eager body of :func:`memory_attention` (what :func:`compile_memory_attention` compiles)."""
    output = curr
    if module.pos_enc_at_input and curr_pos is not None:
        output = output + 0.1 * curr_pos
    if module.batch_first:
        output, curr_pos = output.transpose(0, 1), curr_pos.transpose(0, 1)
        memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
    for layer in module.layers:
        tgt = layer._forward_sa(output, curr_pos)
        tgt2 = layer.norm2(tgt)
        tgt2 = rope_cross_attention(
            layer.cross_attn_image,
            q=tgt2 + curr_pos if layer.pos_enc_at_cross_attn_queries else tgt2,
            k=memory + memory_pos if layer.pos_enc_at_cross_attn_keys else memory,
            v=memory,
            num_k_exclude_rope=num_obj_ptr_tokens,
            layout=layout,
            average=average,
            average_pointers=average_pointers,
            calibration=calibration,
        )
        tgt = tgt + layer.dropout2(tgt2)
        tgt2 = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm3(tgt)))))
        output = tgt + layer.dropout3(tgt2)
    normed = module.norm(output)
    if module.batch_first:
        normed = normed.transpose(0, 1)
    return normed
