"""PerSAM's two decoder modifications (persam-method.md §1.3), run on the official decoder modules.

The functions here walk the official ``MaskDecoder`` / ``TwoWayTransformer`` /
``TwoWayAttentionBlock`` / ``Attention`` modules of ``segment_anything`` (SAM 1) or ``sam2``
(SAM 2), calling their own submodules and weights in the official order. Two things change, and
only when asked for:

* **target-guided attention**: every block's token->image cross-attention becomes
  ``softmax(softmax(q k^T / sqrt(d_head)) + attn_sim) v`` (a second softmax over the image tokens,
  ``attn_sim`` (1, 1, 1, HW) broadcast over batch, heads and tokens). Self-attention, the
  image->token attention and the final token->image attention stay official.
* **target-semantic prompting**: ``target`` (1, 1, C) is added to all decoder tokens before each
  block, and once more to the final attention's query. ``alias="release"`` reproduces the release's
  in-place ``queries += target_embedding``, which also shifts the positional term: it is
  ``T0 + t`` in every block and at the final attention. ``alias="intended"`` (not the release)
  keeps it ``T0``; the final attention's query still gets ``+ t``.

With ``attn_sim=None`` and ``target=None`` the result equals the official decoder's output
exactly (the same modules called on the same tensors in the same order).

SAM 2: its decoder has the same two-way transformer; the object-score token is one more output
token (``t`` is added to it as to the IoU and mask tokens), the high-resolution features enter the
upscaling as in ``sam2``'s ``predict_masks``, and a single-mask request goes through the decoder's
own ``_dynamic_multimask_via_stability`` as ``SAM2ImagePredictor`` does. SAM 2's attention uses
``scaled_dot_product_attention``; the guided attention computes the same softmax explicitly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

ALIAS_MODES = ("release", "intended")


def guided_attention(
    attn: nn.Module, q: Tensor, k: Tensor, v: Tensor, attn_sim: Tensor | None = None
) -> Tensor:
    """An official ``Attention`` module, with PerSAM's second softmax when ``attn_sim`` is given.

    q: (B, Nq, C); k, v: (B, Nk, C); attn_sim: broadcastable to (B, heads, Nq, Nk). -> (B, Nq, C)."""
    if attn_sim is None:
        return attn(q=q, k=k, v=v)
    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    weights = q @ k.permute(0, 1, 3, 2)
    weights = torch.softmax(weights / math.sqrt(q.shape[-1]), dim=-1)
    weights = torch.softmax(weights + attn_sim, dim=-1)
    return attn.out_proj(attn._recombine_heads(weights @ v))


def guided_block(
    layer: nn.Module, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor, attn_sim: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One official ``TwoWayAttentionBlock``; ``attn_sim`` reaches only its token->image attention.

    queries, query_pe: (B, N, C); keys, key_pe: (B, HW, C). -> (queries, keys), same shapes."""
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        attn_out = layer.self_attn(q=q, k=q, v=queries)
        queries = queries + attn_out
    queries = layer.norm1(queries)

    q = queries + query_pe
    k = keys + key_pe
    attn_out = guided_attention(layer.cross_attn_token_to_image, q, k, keys, attn_sim)
    queries = queries + attn_out
    queries = layer.norm2(queries)

    mlp_out = layer.mlp(queries)
    queries = queries + mlp_out
    queries = layer.norm3(queries)

    q = queries + query_pe
    k = keys + key_pe
    attn_out = layer.cross_attn_image_to_token(q=k, k=q, v=queries)
    keys = keys + attn_out
    keys = layer.norm4(keys)
    return queries, keys


def guided_transformer(
    transformer: nn.Module,
    image_embedding: Tensor,
    image_pe: Tensor,
    tokens: Tensor,
    attn_sim: Tensor | None = None,
    target: Tensor | None = None,
    alias: str = "release",
) -> tuple[Tensor, Tensor]:
    """The official ``TwoWayTransformer`` with PerSAM's attention bias and target embedding.

    image_embedding, image_pe: (B, C, h, w); tokens: (B, N, C) = T0; attn_sim: (1, 1, 1, h*w) or
    None; target: (1, 1, C) or None. -> (queries (B, N, C), keys (B, h*w, C))."""
    if alias not in ALIAS_MODES:
        raise ValueError(f"alias: {alias!r} is not one of {list(ALIAS_MODES)}")
    keys = image_embedding.flatten(2).permute(0, 2, 1)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    queries = query_pe = tokens
    for i, layer in enumerate(transformer.layers):
        if target is not None:
            queries = queries + target
            if i == 0 and alias == "release":
                query_pe = queries  # the release's in-place add shifts the positional term too
        queries, keys = guided_block(layer, queries, keys, query_pe, key_pe, attn_sim)
    q = queries + query_pe
    if target is not None:
        q = q + target
    k = keys + key_pe
    attn_out = transformer.final_attn_token_to_image(q=q, k=k, v=keys)
    queries = queries + attn_out
    queries = transformer.norm_final_attn(queries)
    return queries, keys


def _output_tokens(decoder: nn.Module, sparse: Tensor) -> tuple[Tensor, int]:
    """T0 = [obj_score (SAM 2 only), iou, mask tokens, sparse prompts] (B, N, C), and where iou is."""
    own = [decoder.iou_token.weight, decoder.mask_tokens.weight]
    first = 1 if getattr(decoder, "pred_obj_scores", False) else 0
    if first:
        own = [decoder.obj_score_token.weight, *own]
    out = torch.cat(own, dim=0).unsqueeze(0).expand(sparse.size(0), -1, -1)
    return torch.cat((out, sparse), dim=1), first


def _upscale(decoder: nn.Module, src: Tensor, high_res_features: list[Tensor] | None) -> Tensor:
    if not getattr(decoder, "use_high_res_features", False):
        return decoder.output_upscaling(src)
    dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
    feat_s0, feat_s1 = high_res_features
    upscaled = act1(ln1(dc1(src) + feat_s1))
    return act2(dc2(upscaled) + feat_s0)


def guided_decode(
    decoder: nn.Module,
    image_embeddings: Tensor,
    image_pe: Tensor,
    sparse: Tensor,
    dense: Tensor,
    multimask_output: bool,
    attn_sim: Tensor | None = None,
    target: Tensor | None = None,
    alias: str = "release",
    high_res_features: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """An official ``MaskDecoder`` (SAM 1 or SAM 2) forward with PerSAM's modifications.

    image_embeddings: (1 or B, C, 64, 64); image_pe: (1, C, 64, 64) (``get_dense_pe()``);
    sparse: (B, n, C); dense: (B, C, 64, 64); high_res_features: SAM 2's [(1, C/8, 256, 256),
    (1, C/4, 128, 128)]. -> (low-res mask logits (B, M, 256, 256), predicted IoU (B, M)), M = 3
    with ``multimask_output`` else 1, as the official ``forward`` selects them."""
    tokens, first = _output_tokens(decoder, sparse)
    src = image_embeddings
    if src.shape[0] != tokens.shape[0]:
        src = torch.repeat_interleave(src, tokens.shape[0], dim=0)
    src = src + dense
    pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
    b, c, h, w = src.shape
    hs, src = guided_transformer(decoder.transformer, src, pos_src, tokens, attn_sim, target, alias)
    iou_token_out = hs[:, first, :]
    mask_tokens_out = hs[:, first + 1 : first + 1 + decoder.num_mask_tokens, :]
    upscaled = _upscale(decoder, src.transpose(1, 2).view(b, c, h, w), high_res_features)
    hyper_in = torch.stack(
        [
            decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :])
            for i in range(decoder.num_mask_tokens)
        ],
        dim=1,
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    if multimask_output:
        return masks[:, 1:, :, :], iou_pred[:, 1:]
    if getattr(decoder, "dynamic_multimask_via_stability", False) and not decoder.training:
        return decoder._dynamic_multimask_via_stability(masks, iou_pred)
    return masks[:, 0:1, :, :], iou_pred[:, 0:1]
