"""One promptable SAM for the field's baselines (GF-SAM, PerSAM(-F), Matcher), on SAM 1 or SAM 2.

The releases prompt SAM 1 through the official ``segment_anything.SamPredictor``; this module gives
them that predictor's two halves separately, so the harness can cache the expensive half:

* :meth:`PromptableSAM.encoder` -> a frozen, cacheable encoder (the harness's ``FrozenEncoder``):
  ``encode((N, 3, S, S) float RGB 0..255)`` = ``set_image`` on each image rounded to uint8 HWC;
* :meth:`PromptableSAM.decode` = ``predict_torch(..., return_logits=True)`` on one image's
  features, with prompts in the frame's pixels (the frame is the harness's ``S x S`` image).

The same interface runs SAM 2 through the official ``sam2`` image predictor
(``SAM2ImagePredictor``: its transforms, its ``no_mem_embed``, its ``_predict``), so a method can
switch backbones with one setting (``sam: vit_h`` or ``sam: sam2-l``).

Architectures (:data:`SAM_ARCHS`): SAM 1 ``vit_b`` | ``vit_l`` | ``vit_h`` (Meta's
``sam_vit_{b_01ec64,l_0b3195,h_4b8939}.pth``), ``vit_test`` (a 2-block, 64-wide image encoder with
SAM's own prompt encoder and decoder and SAM's geometry: 1024 input, 64 x 64 x 256 embeddings,
256 x 256 low-res masks; for tests), and SAM 2 ``sam2-t`` | ``sam2-s`` |
``sam2-b+`` | ``sam2-l`` (Meta's ``sam2(.1)_hiera_*.pt``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fssam.errors import FSSAMError
from fssam.hashing import file_sha256
from fssam.sam2_adapter import build_sam2_model, load_state_dict_strict, module_sha256, read_checkpoint

SAM1_ARCHS = ("vit_b", "vit_l", "vit_h", "vit_test")
SAM2_ARCHS = {"sam2-t": "t", "sam2-s": "s", "sam2-b+": "b+", "sam2-l": "l"}
SAM_ARCHS = (*SAM1_ARCHS, *SAM2_ARCHS)
SAM1_CHECKPOINTS = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
PREPROCESSING_VERSION = "sam-predictor-set_image/1"  # bump when the images' preprocessing changes
SAM_INPUT_SIZE = 1024


@dataclass
class Decoded:
    """What one prompted decoder pass gives, for N prompts on one image.

    logits: (N, C, H, W) mask logits at the frame size (H, W); iou: (N, C) predicted IoUs;
    low_res: (N, C, 256, 256) low-resolution logits (a later pass's ``mask_input``);
    C = 3 with ``multimask_output`` else 1.
    """

    logits: Tensor
    iou: Tensor
    low_res: Tensor


def _test_sam1() -> nn.Module:
    """SAM 1 with a tiny image encoder (tests): SAM's prompt encoder, decoder and geometry."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = SAM_INPUT_SIZE // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=64,
            img_size=SAM_INPUT_SIZE,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[1],
            window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(grid, grid),
            input_image_size=(SAM_INPUT_SIZE, SAM_INPUT_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def build_sam1(
    arch: str, checkpoint: str | Path | None = None, random_init: bool = False, seed: int = 0
) -> tuple[nn.Module, str | None]:
    """The official ``segment_anything`` SAM of ``arch`` (eval), Meta's checkpoint loaded strictly.

    Returns (model, sha256 of the checkpoint file or None for random weights). A checkpoint of
    another architecture is an error naming the missing/unexpected keys.
    """
    from segment_anything import sam_model_registry

    if arch not in SAM1_ARCHS:
        raise FSSAMError(f"sam: {arch!r} is not a SAM 1 architecture; one of {list(SAM1_ARCHS)}")
    _check_weights_choice(arch, checkpoint, random_init)
    rng = torch.random.fork_rng(devices=[]) if random_init else contextlib.nullcontext()
    with rng:
        if random_init:
            torch.manual_seed(int(seed))
        model = _test_sam1() if arch == "vit_test" else sam_model_registry[arch](checkpoint=None)
    sha = None
    if checkpoint is not None:
        raw = read_checkpoint(Path(checkpoint))
        sd = raw.get("model", raw) if isinstance(raw, dict) else None
        if not isinstance(sd, dict):
            raise FSSAMError(f"{checkpoint}: not a SAM checkpoint (expected a state dict)")
        load_state_dict_strict(
            model, sd, str(checkpoint), f"SAM {arch} ({SAM1_CHECKPOINTS.get(arch, 'test architecture')})"
        )
        sha = file_sha256(Path(checkpoint))
    return model.eval().requires_grad_(False), sha


def _check_weights_choice(arch: str, checkpoint: str | Path | None, random_init: bool) -> None:
    if checkpoint is None and not random_init:
        name = SAM1_CHECKPOINTS.get(arch, "Meta's SAM 2 checkpoint")
        raise FSSAMError(
            f"sam_checkpoint: no weights for SAM {arch}: give the path of {name} "
            f"(fssbench fetch weights), or random_init: true for random weights (tests and demos only)"
        )
    if checkpoint is not None and random_init:
        raise FSSAMError("sam_checkpoint: give either a SAM checkpoint or random_init: true, not both")


class PromptableSAM(nn.Module):
    """A frozen SAM (1 or 2) whose image encoding and prompted decoding are separate steps.

    Build with :func:`build_promptable`. ``model`` is the official module (``Sam`` or ``SAM2Base``),
    for methods that need the decoder's internals; ``family`` is "sam1" or "sam2".
    """

    def __init__(self, model: nn.Module, arch: str, weights_sha256: str | None, seed: int) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.arch = arch
        self.family = "sam2" if arch in SAM2_ARCHS else "sam1"
        self.weights_sha256 = weights_sha256
        self.seed = int(seed)
        self._encoder_sha: str | None = None
        self._predictors: dict[str, Any] = {}  # the official predictor objects, made once

    def predictor(self) -> Any:
        """The official predictor of the family (SamPredictor or SAM2ImagePredictor), made once."""
        if self.family not in self._predictors:
            if self.family == "sam1":
                from segment_anything import SamPredictor

                self._predictors["sam1"] = SamPredictor(self.model)
            else:
                from sam2.sam2_image_predictor import SAM2ImagePredictor

                self._predictors["sam2"] = SAM2ImagePredictor(self.model)
        return self._predictors[self.family]

    def train(self, mode: bool = True) -> PromptableSAM:
        """SAM stays frozen (eval mode) whatever ``mode`` is."""
        return super().train(False)

    @property
    def random_init(self) -> bool:
        return self.weights_sha256 is None

    @property
    def input_size(self) -> int:
        """SAM's square input frame (1024 for Meta's models)."""
        if self.family == "sam1":
            return int(self.model.image_encoder.img_size)
        return int(self.model.image_size)

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (input_size / 16: 64)."""
        return self.input_size // 16

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def weights_id(self) -> str:
        """sha256 of the checkpoint file, or ``random-init:<arch>:seed<N>:torch<version>``."""
        return self.weights_sha256 or f"random-init:{self.arch}:seed{self.seed}:torch{torch.__version__}"

    def encoder_sha256(self) -> str:
        """Hash of every weight the image features depend on (computed once)."""
        if self._encoder_sha is None:
            m = self.model
            mods = [m.image_encoder]
            if self.family == "sam2":
                mods += [m.sam_mask_decoder.conv_s0, m.sam_mask_decoder.conv_s1]
                extra = nn.Module()
                extra.register_buffer("no_mem_embed", m.no_mem_embed.detach().clone())
                mods.append(extra)
            self._encoder_sha = module_sha256(*mods)
        return self._encoder_sha

    def encoder(self, image_size: int, roles: tuple[str, ...] = ("query", "support")) -> SAMImageEncoder:
        """The cacheable image encoder for frames of ``image_size`` px (the harness's images).

        ``roles=("query",)``: the harness runs it on the queries only (a method that prompts SAM
        on the query alone, as GF-SAM and Matcher do, saves K encoder passes per episode)."""
        return SAMImageEncoder(self, int(image_size), tuple(roles))

    def dense_pe(self) -> Tensor:
        """(1, 256, E, E) the prompt encoder's dense positional encoding (``get_dense_pe()``)."""
        pe = self.model.prompt_encoder if self.family == "sam1" else self.model.sam_prompt_encoder
        return pe.get_dense_pe()

    @staticmethod
    def select(features: dict[str, Tensor], i: int) -> dict[str, Tensor]:
        """The features of image ``i`` of a merged feature dict (every tensor sliced to batch 1)."""
        return {k: v[i : i + 1] for k, v in features.items()}

    @torch.no_grad()
    def encode(self, images: Tensor) -> dict[str, Tensor]:
        """(N, 3, S, S) float RGB 0..255 -> SAM's features of each image, as ``set_image`` computes them.

        SAM 1: ``{"sam1.embed": (N, 256, 64, 64)}``. SAM 2: ``{"sam2.embed": (N, 256, 64, 64),
        "sam2.hr0": (N, 32, 256, 256), "sam2.hr1": (N, 64, 128, 128)}`` (no_mem_embed added).
        """
        pixels = images.detach().round().clamp(0, 255).to(torch.uint8).cpu()
        if self.family == "sam1":
            return {"sam1.embed": self._encode_sam1(pixels)}
        return self._encode_sam2(pixels)

    def _encode_sam1(self, pixels: Tensor) -> Tensor:
        from segment_anything.utils.transforms import ResizeLongestSide

        resize = ResizeLongestSide(self.input_size)
        batch = []
        for img in pixels:  # SamPredictor.set_image: PIL resize of the uint8 HWC image, then preprocess
            hwc = resize.apply_image(img.permute(1, 2, 0).numpy())
            x = torch.as_tensor(np.ascontiguousarray(hwc), device=self.device).permute(2, 0, 1)
            batch.append(self.model.preprocess(x[None].float()))
        return self.model.image_encoder(torch.cat(batch))

    def _encode_sam2(self, pixels: Tensor) -> dict[str, Tensor]:
        m = self.model
        transforms = self.predictor()._transforms.transforms  # Resize + Normalize, as set_image
        x = transforms(pixels.float().to(self.device) / 255.0)
        backbone_out = m.forward_image(x)
        _, vision_feats, _, _ = m._prepare_backbone_features(backbone_out)
        if m.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + m.no_mem_embed
        n, side = x.shape[0], self.input_size
        sizes = [(side // 4, side // 4), (side // 8, side // 8), (side // 16, side // 16)]
        feats = [f.permute(1, 2, 0).reshape(n, -1, *hw) for f, hw in zip(vision_feats, sizes, strict=True)]
        return {"sam2.hr0": feats[0], "sam2.hr1": feats[1], "sam2.embed": feats[2]}

    @torch.no_grad()
    def decode(
        self,
        features: dict[str, Tensor],
        frame_hw: tuple[int, int],
        point_coords: Tensor | None = None,
        point_labels: Tensor | None = None,
        boxes: Tensor | None = None,
        mask_input: Tensor | None = None,
        multimask_output: bool = True,
    ) -> Decoded:
        """One decoder pass for N prompts on one image (features of batch 1, from :meth:`select`).

        point_coords: (N, P, 2) float xy in frame pixels; point_labels: (N, P) int (1 foreground,
        0 background, -1 padding); boxes: (N, 4) xyxy in frame pixels; mask_input: (N, 1, 256, 256)
        low-res logits. Exactly ``SamPredictor.predict_torch(..., return_logits=True)`` with the
        prompts mapped by ``ResizeLongestSide.apply_*_torch`` (SAM 1), or
        ``SAM2ImagePredictor._predict(..., return_logits=True)`` with its ``_prep_prompts``
        (SAM 2). See :class:`Decoded`.
        """
        frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
        if self.family == "sam1":
            return self._decode_sam1(
                features, frame_hw, point_coords, point_labels, boxes, mask_input, multimask_output
            )
        return self._decode_sam2(
            features, frame_hw, point_coords, point_labels, boxes, mask_input, multimask_output
        )

    def _decode_sam1(self, features, frame_hw, coords, labels, boxes, mask_input, multimask) -> Decoded:
        from segment_anything.utils.transforms import ResizeLongestSide

        predictor = self.predictor()
        predictor.features = features["sam1.embed"].to(self.device)
        predictor.original_size = frame_hw
        predictor.input_size = ResizeLongestSide.get_preprocess_shape(*frame_hw, self.input_size)
        predictor.is_image_set = True
        if coords is not None:
            coords = predictor.transform.apply_coords_torch(coords.to(self.device).float(), frame_hw)
            labels = labels.to(self.device)
        if boxes is not None:
            boxes = predictor.transform.apply_boxes_torch(boxes.to(self.device).float(), frame_hw)
        if mask_input is not None:
            mask_input = mask_input.to(self.device)
        logits, iou, low_res = predictor.predict_torch(
            coords, labels, boxes, mask_input, multimask_output=multimask, return_logits=True
        )
        return Decoded(logits, iou, low_res)

    def _decode_sam2(self, features, frame_hw, coords, labels, boxes, mask_input, multimask) -> Decoded:
        predictor = self.predictor()
        predictor._features = {
            "image_embed": features["sam2.embed"].to(self.device),
            "high_res_feats": [features["sam2.hr0"].to(self.device), features["sam2.hr1"].to(self.device)],
        }
        predictor._orig_hw = [frame_hw]
        predictor._is_image_set = True
        mask, coords, labels, boxes = predictor._prep_prompts(
            coords, labels, boxes, mask_input, normalize_coords=True
        )
        logits, iou, low_res = predictor._predict(
            coords, labels, boxes, mask, multimask_output=multimask, return_logits=True
        )
        return Decoded(logits, iou, low_res)


class SAMImageEncoder:
    """A :class:`PromptableSAM`'s image encoder as the harness's cacheable ``FrozenEncoder``.

    ``encode``: (N, 3, S, S) float RGB 0..255 -> :meth:`PromptableSAM.encode`'s features (fp32).
    ``identity()``: architecture, encoder weights, SAM's input size, the frame size, preprocessing.
    ``roles``: the episode roles ("query", "support") the harness runs it on.
    """

    def __init__(
        self, sam: PromptableSAM, image_size: int, roles: tuple[str, ...] = ("query", "support")
    ) -> None:
        self.sam, self.image_size, self.roles = sam, image_size, roles

    def identity(self) -> dict[str, Any]:
        return {
            "encoder": f"{self.sam.family}-{self.sam.arch}"
            + (f"-{self.sam.model.fss_version}" if self.sam.family == "sam2" else ""),
            "weights": self.sam.encoder_sha256(),
            "input_size": self.sam.input_size,
            "frame": self.image_size,
            "preprocessing": PREPROCESSING_VERSION,
            "precision": "fp32",
        }

    def encode(self, images: Tensor) -> dict[str, Tensor]:
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise FSSAMError(
                f"SAM encoder built for {self.image_size}px frames, got images of shape {tuple(images.shape)}"
            )
        return self.sam.encode(images)


def build_promptable(
    arch: str = "vit_h",
    checkpoint: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    sam2_version: str = "2.1",
    input_size: int = SAM_INPUT_SIZE,
) -> PromptableSAM:
    """A frozen :class:`PromptableSAM` of ``arch`` (:data:`SAM_ARCHS`) on the CPU.

    checkpoint: Meta's file for ``arch`` (loaded strictly; a file of another architecture is an
    error naming the keys); random_init: random weights instead (explicit, seeded by ``seed``);
    sam2_version: "2.0" or "2.1" for the ``sam2-*`` architectures; input_size: SAM 2's input frame
    (a multiple of 64; SAM 1's is 1024).
    """
    if arch in SAM2_ARCHS:
        _check_weights_choice(arch, checkpoint, random_init)
        if sam2_version not in ("2.0", "2.1"):
            raise FSSAMError(f"sam2_version: {sam2_version!r} is not one of ['2.0', '2.1']")
        model = build_sam2_model(
            sam2_version,
            SAM2_ARCHS[arch],
            int(input_size),
            checkpoint=checkpoint,
            random_init=random_init,
            seed=int(seed) if random_init else None,
        )
        return PromptableSAM(model, arch, model.fss_weights_sha256, seed)
    if arch not in SAM1_ARCHS:
        raise FSSAMError(f"sam: {arch!r} is not one of {list(SAM_ARCHS)}")
    if int(input_size) != SAM_INPUT_SIZE:
        raise FSSAMError(f"SAM 1 takes {SAM_INPUT_SIZE}px inputs, got input_size={input_size}")
    model, sha = build_sam1(arch, checkpoint, random_init, seed)
    return PromptableSAM(model, arch, sha, seed)


def sam_from_config(config: Any) -> PromptableSAM:
    """:func:`build_promptable` from a method's settings object: ``sam``, ``sam_checkpoint``,
    ``random_init``, ``seed``, ``sam2_version`` and, when it has one, ``sam2_input_size``."""
    return build_promptable(
        config.sam,
        config.sam_checkpoint,
        config.random_init,
        config.seed,
        sam2_version=config.sam2_version,
        input_size=getattr(config, "sam2_input_size", SAM_INPUT_SIZE),
    )
