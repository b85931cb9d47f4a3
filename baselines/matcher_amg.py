"""Matcher's modified automatic mask generator (matcher-method.md §1.5, §2.4), rebuilt on the
official ``segment_anything.utils.amg`` pieces and ``torchvision.ops.batched_nms`` around a SAM
decode call (the shared backend's ``sam.decode``, which is ``SamPredictor.predict_torch``).

One crop (``crop_n_layers=0``, the whole frame): the dense single-point grid first (when
``dense_pred``), then the selected multi-point prompts, each with its own iou and stability
filters, then one box NMS over all records. Masks are kept as bool tensors (the release stores
lossless RLEs and decodes them back: the same masks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from segment_anything.utils.amg import (
    MaskData,
    batch_iterator,
    batched_mask_to_box,
    build_all_layer_point_grids,
    calculate_stability_score,
    is_box_near_crop_edge,
    uncrop_masks,
)
from torch import Tensor
from torchvision.ops import batched_nms

MASK_THRESHOLD = 0.0  # SAM's mask_threshold
Decode = Callable[[Tensor, Tensor, Tensor | None, bool], tuple[Tensor, Tensor]]
"""``decode(point_coords (N, P, 2) xy frame pixels, point_labels (N, P), boxes (N, 4) | None,
multimask_output) -> (logits (N, C, S, S) at the frame, iou (N, C))``."""


@dataclass(frozen=True)
class AMGSettings:
    """The generator's settings (the release's constructor arguments; COCO script values)."""

    points_per_side: int = 64
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    sel_pred_iou_thresh: float = 0.85
    sel_stability_score_thresh: float = 0.90
    sel_stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.65
    multimask_output: bool = False  # the dense pass
    sel_multimask_output: bool = True
    output_layer: int = 0  # the dense pass (applied only when sel_multimask_output, bug §5.4)
    sel_output_layer: int = 3
    dense_pred: bool = True
    dense_layer_flag: str = "selected"  # whose multimask flag gates the dense pass's output_layer (§5.4)


def select_outputs(masks: Tensor, iou: Tensor, layer: int) -> tuple[Tensor, Tensor]:
    """(N, C, ...) decoder outputs -> the kept ones (§1.5.3): layer 0/1/2 keeps that output, 3/4/5
    keep outputs ``layer - 3`` onward, any other layer keeps everything."""
    if layer in (0, 1, 2):
        return masks[:, layer : layer + 1], iou[:, layer : layer + 1]
    if layer in (3, 4, 5):
        return masks[:, layer - 3 :], iou[:, layer - 3 :]
    return masks, iou


def dense_grid(points_per_side: int, size: int) -> Tensor:
    """(P*P, 2) float64 (x, y) frame pixels of the official one-layer grid (x fastest)."""
    grid = build_all_layer_point_grids(points_per_side, 0, 1)[0]
    return torch.from_numpy(grid * [size, size])


def filtered_records(
    logits: Tensor, iou: Tensor, iou_thresh: float, stability_thresh: float, offset: float
) -> MaskData:
    """(N, C, S, S) logits and (N, C) ious, flattened prompt-major -> the records passing
    ``iou > iou_thresh`` then ``stability >= stability_thresh`` (each only when its threshold > 0),
    binarised at 0, with boxes; the crop-edge filter of a full-frame crop (a no-op, as official)."""
    size = logits.shape[-1]
    data = MaskData(masks=logits.flatten(0, 1), iou_preds=iou.flatten(0, 1))
    if iou_thresh > 0.0:
        data.filter(data["iou_preds"] > iou_thresh)
    data["stability_score"] = calculate_stability_score(data["masks"], MASK_THRESHOLD, offset)
    if stability_thresh > 0.0:
        data.filter(data["stability_score"] >= stability_thresh)
    data["masks"] = data["masks"] > MASK_THRESHOLD
    data["boxes"] = batched_mask_to_box(data["masks"])
    crop = [0, 0, size, size]
    keep = ~is_box_near_crop_edge(data["boxes"], crop, crop)
    if not torch.all(keep):
        data.filter(keep)
    data["masks"] = uncrop_masks(data["masks"], crop, size, size)
    return data


def stable_box_nms(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """Indices kept by box NMS, by descending score; equal scores in index order (the suite's tie
    rule, §5.8). ``batched_nms`` with one category sees the stable rank as its score."""
    order = torch.sort(scores.float().cpu(), descending=True, stable=True).indices
    rank = torch.arange(len(order), 0, -1, dtype=torch.float32)
    keep = batched_nms(
        boxes[order.to(boxes.device)].float(),
        rank.to(boxes.device),
        torch.zeros(len(order), dtype=torch.int64, device=boxes.device),
        iou_threshold=threshold,
    )
    return order[keep.cpu()]


def record_count(data: MaskData) -> int:
    """How many records ``data`` holds (0 when nothing was ever added)."""
    stats = dict(data.items())
    return len(stats["iou_preds"]) if "iou_preds" in stats else 0


def with_source(data: MaskData, source: int) -> MaskData:
    """``data`` with a ``source`` column (0: dense grid, 1: selected prompts)."""
    if record_count(data):
        data["source"] = torch.full((record_count(data),), source, dtype=torch.int64)
    return data


class MatcherMaskGenerator:
    """The modified AMG over a ``decode`` function (see :data:`Decode`) on one S x S frame."""

    def __init__(self, decode: Decode, size: int, settings: AMGSettings):
        self.decode = decode
        self.size = size
        self.settings = settings

    def dense_records(self, device: torch.device) -> MaskData:
        """The dense single-point grid, ``points_per_batch`` prompts at a time (§2.4.1)."""
        st, data = self.settings, MaskData()
        grid = dense_grid(st.points_per_side, self.size).to(device)
        for (points,) in batch_iterator(st.points_per_batch, grid):
            labels = torch.ones(len(points), 1, dtype=torch.int, device=device)
            logits, iou = self.decode(points[:, None, :], labels, None, st.multimask_output)
            # the release tests the selected prompts' flag (§5.4); "own": the dense pass's own flag
            gate = st.sel_multimask_output if st.dense_layer_flag == "selected" else st.multimask_output
            if gate:
                logits, iou = select_outputs(logits, iou, st.output_layer)
            data.cat(
                filtered_records(
                    logits, iou, st.pred_iou_thresh, st.stability_score_thresh, st.stability_score_offset
                )
            )
        return data

    def selected_records(self, groups: list[Tensor], box: Tensor | None, device: torch.device) -> MaskData:
        """The selected prompts (§2.4.2): each group (n_i, i, 2) of positive points in batches of
        ``points_per_batch`` prompts; the outputs ``sel_output_layer`` keeps, prompt-major."""
        st, data = self.settings, MaskData()
        for group in groups:
            for (points,) in batch_iterator(st.points_per_batch, group.to(device)):
                labels = torch.ones(points.shape[:2], dtype=torch.int, device=device)
                boxes = None if box is None else box.to(device)[None].expand(len(points), 4)
                logits, iou = self.decode(points.float(), labels, boxes, st.sel_multimask_output)
                logits, iou = select_outputs(logits, iou, st.sel_output_layer)
                data.cat(
                    filtered_records(
                        logits,
                        iou,
                        st.sel_pred_iou_thresh,
                        st.sel_stability_score_thresh,
                        st.sel_stability_score_offset,
                    )
                )
        return data

    def generate(
        self, groups: list[Tensor], box: Tensor | None = None, device: torch.device | None = None
    ) -> MaskData:
        """Dense then selected records, box NMS over all of them: a MaskData with ``masks``
        (M, S, S) bool, ``iou_preds``, ``stability_score``, ``boxes`` and ``source`` (0 dense, 1
        selected), by descending predicted IoU."""
        device = device or torch.device("cpu")
        data = MaskData()
        if self.settings.dense_pred:
            data.cat(with_source(self.dense_records(device), 0))
        data.cat(with_source(self.selected_records(groups, box, device), 1))
        if record_count(data) == 0:
            return data
        keep = stable_box_nms(data["boxes"], data["iou_preds"], self.settings.box_nms_thresh)
        data.filter(keep.to(data["iou_preds"].device))
        return data
