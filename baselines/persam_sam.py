"""PerSAM's step 1 on the shared SAM backend: the official predictor's prompt path and
postprocess around the modified decoder (:func:`baselines.persam_decoder.guided_decode`).

:func:`guided_predict` is ``PromptableSAM.decode`` with ``attn_sim`` and ``target`` reaching the
decoder: the same official predictor objects map the prompts (SAM 1 ``ResizeLongestSide``, SAM 2
``_prep_prompts``), run the prompt encoder, and postprocess the low-res logits to the frame. With
neither, it is ``PromptableSAM.decode`` (a test checks this). :func:`frame_postprocess` is that
postprocess alone (for the location map).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from baselines.persam_decoder import guided_decode
from baselines.sam_backend import Decoded, PromptableSAM


def frame_postprocess(sam: PromptableSAM, frame_hw: tuple[int, int]) -> Callable[[Tensor], Tensor]:
    """(N, C, h, w) -> (N, C, H, W): the predictor's postprocess of low-res maps to the frame
    (SAM 1 ``Sam.postprocess_masks``: bilinear to 1024, crop, bilinear to the frame; SAM 2 its
    transforms' ``postprocess_masks``: bilinear to the frame)."""
    from segment_anything.utils.transforms import ResizeLongestSide

    frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
    if sam.family == "sam1":
        input_hw = ResizeLongestSide.get_preprocess_shape(*frame_hw, sam.input_size)
        return lambda x: sam.model.postprocess_masks(x, input_hw, frame_hw)
    transforms = sam.predictor()._transforms
    return lambda x: transforms.postprocess_masks(x, frame_hw)


def _sam1_prompts(sam: PromptableSAM, frame_hw: tuple[int, int], coords: Tensor, labels: Tensor):
    predictor = sam.predictor()
    coords = predictor.transform.apply_coords_torch(coords.to(sam.device).float(), frame_hw)
    return sam.model.prompt_encoder(points=(coords, labels.to(sam.device)), boxes=None, masks=None)


def _sam2_prompts(sam: PromptableSAM, frame_hw: tuple[int, int], coords: Tensor, labels: Tensor):
    predictor = sam.predictor()
    predictor._orig_hw = [frame_hw]
    _, coords, labels, _ = predictor._prep_prompts(coords, labels, None, None, normalize_coords=True)
    return sam.model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)


@torch.no_grad()
def guided_predict(
    sam: PromptableSAM,
    features: dict[str, Tensor],
    frame_hw: tuple[int, int],
    point_coords: Tensor,
    point_labels: Tensor,
    multimask_output: bool = False,
    attn_sim: Tensor | None = None,
    target: Tensor | None = None,
    alias: str = "release",
) -> Decoded:
    """One point-prompted pass with PerSAM's decoder on one image's features (batch 1).

    point_coords (N, P, 2) xy frame pixels; point_labels (N, P); attn_sim (1, 1, 1, 4096);
    target (1, 1, 256). -> :class:`Decoded` (logits at the frame size)."""
    frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
    dev = sam.device
    if sam.family == "sam1":
        sparse, dense = _sam1_prompts(sam, frame_hw, point_coords, point_labels)
        embed, high_res, decoder = features["sam1.embed"].to(dev), None, sam.model.mask_decoder
        pe = sam.model.prompt_encoder.get_dense_pe()
    else:
        sparse, dense = _sam2_prompts(sam, frame_hw, point_coords, point_labels)
        embed, decoder = features["sam2.embed"].to(dev), sam.model.sam_mask_decoder
        high_res = [features["sam2.hr0"].to(dev), features["sam2.hr1"].to(dev)]
        pe = sam.model.sam_prompt_encoder.get_dense_pe()
    extra = {k: v.to(dev) for k, v in (("attn_sim", attn_sim), ("target", target)) if v is not None}
    low_res, iou = guided_decode(
        decoder, embed, pe, sparse, dense, multimask_output, alias=alias, high_res_features=high_res, **extra
    )
    logits = frame_postprocess(sam, frame_hw)(low_res)
    return Decoded(logits, iou, low_res)
