"""baselines.sam_backend and baselines.dinov2_tokens against the official predictors and an
independent DINOv2 forward.

The backend splits ``SamPredictor`` (and ``SAM2ImagePredictor``) into a cacheable encoder and a
prompted decoder; these tests run the official predictor end to end (``set_image`` on the uint8
image, ``predict`` with numpy prompts in the image's pixels) and compare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines.dinov2_tokens import DINOv2TokenEncoder
from baselines.sam_backend import build_promptable
from fssam.dinov2 import build_dinov2
from fssam.errors import FSSAMError
from tests.test_dinov2 import meta_reference_features, meta_state_dict, save

TOL = 1e-4


@pytest.fixture(scope="module")
def sam1():
    return build_promptable("vit_test", random_init=True, seed=3)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float()


@pytest.mark.parametrize("size", [1024, 200])
def test_sam1_encode_and_decode_equal_the_official_predictor(sam1, size: int) -> None:
    from segment_anything import SamPredictor

    imgs = _images(2, size)
    feats = sam1.encoder(size).encode(imgs)
    assert feats["sam1.embed"].shape == (2, 256, 64, 64)
    pred = SamPredictor(sam1.model)
    pts = np.array([[0.3 * size, 0.6 * size], [0.8 * size, 0.1 * size]], dtype=np.float32)
    labels = np.array([1, 0])
    box = np.array([0.1 * size, 0.2 * size, 0.7 * size, 0.9 * size], dtype=np.float32)
    for i in range(2):
        pred.set_image(imgs[i].permute(1, 2, 0).to(torch.uint8).numpy())
        assert (pred.features - feats["sam1.embed"][i : i + 1]).abs().max() <= TOL
        want_masks, want_iou, want_low = pred.predict(
            pts, labels, box, multimask_output=True, return_logits=True
        )
        got = sam1.decode(
            sam1.select(feats, i),
            (size, size),
            point_coords=torch.from_numpy(pts)[None],
            point_labels=torch.from_numpy(labels)[None],
            boxes=torch.from_numpy(box)[None],
            multimask_output=True,
        )
        assert got.logits.shape == (1, 3, size, size) and got.low_res.shape == (1, 3, 256, 256)
        assert np.abs(got.logits[0].numpy() - want_masks).max() <= 1e-3
        assert np.abs(got.iou[0].numpy() - want_iou).max() <= 1e-5
        assert np.abs(got.low_res[0].numpy() - want_low).max() <= 1e-3
        # a second pass with the first pass's best low-res mask as mask input, one output
        best = int(np.argmax(want_iou))
        want2, _, _ = pred.predict(
            pts, labels, mask_input=want_low[best : best + 1], multimask_output=False, return_logits=True
        )
        got2 = sam1.decode(
            sam1.select(feats, i),
            (size, size),
            point_coords=torch.from_numpy(pts)[None],
            point_labels=torch.from_numpy(labels)[None],
            mask_input=torch.from_numpy(want_low[best : best + 1])[None],
            multimask_output=False,
        )
        assert got2.logits.shape == (1, 1, size, size)
        assert np.abs(got2.logits[0].numpy() - want2).max() <= 1e-3


def test_sam1_prompts_batch_like_single_prompts(sam1) -> None:
    feats = sam1.encoder(256).encode(_images(1, 256, seed=5))
    coords = torch.tensor([[[40.0, 60.0]], [[200.0, 30.0]], [[128.0, 128.0]]])
    labels = torch.ones(3, 1, dtype=torch.int)
    both = sam1.decode(feats, (256, 256), coords, labels, multimask_output=False)
    for j in range(3):
        one = sam1.decode(feats, (256, 256), coords[j : j + 1], labels[j : j + 1], multimask_output=False)
        assert (one.logits[0] - both.logits[j]).abs().max() <= 1e-4


def test_sam2_encode_and_decode_equal_the_official_image_predictor() -> None:
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    sam = build_promptable("sam2-t", random_init=True, seed=1, sam2_version="2.0")
    assert sam.family == "sam2" and sam.input_size == 1024
    img = _images(1, 300, seed=2)
    feats = sam.encoder(300).encode(img)
    pred = SAM2ImagePredictor(sam.model)
    pred.set_image(img[0].permute(1, 2, 0).to(torch.uint8).numpy())
    assert (pred._features["image_embed"] - feats["sam2.embed"]).abs().max() <= TOL
    for want, got in zip(
        pred._features["high_res_feats"], (feats["sam2.hr0"], feats["sam2.hr1"]), strict=True
    ):
        assert (want - got).abs().max() <= TOL
    pts = np.array([[50.0, 200.0], [250.0, 40.0]], dtype=np.float32)
    labels = np.array([1, 1])
    want_masks, want_iou, want_low = pred.predict(pts, labels, multimask_output=True, return_logits=True)
    got = sam.decode(feats, (300, 300), torch.from_numpy(pts)[None], torch.from_numpy(labels)[None])
    assert got.logits.shape == (1, 3, 300, 300)
    assert np.abs(got.logits[0].numpy() - want_masks).max() <= 1e-3
    assert np.abs(got.iou[0].numpy() - want_iou).max() <= 1e-5
    assert np.abs(got.low_res[0].numpy() - want_low).max() <= 1e-3


def test_small_sam2_frame_and_identities() -> None:
    a = build_promptable("sam2-t", random_init=True, seed=1, input_size=256)
    b = build_promptable("sam2-t", random_init=True, seed=2, input_size=256)
    feats = a.encoder(128).encode(_images(2, 128))
    assert feats["sam2.embed"].shape == (2, 256, 16, 16) and feats["sam2.hr0"].shape == (2, 32, 64, 64)
    out = a.decode(a.select(feats, 1), (128, 128), torch.tensor([[[64.0, 64.0]]]), torch.tensor([[1]]))
    assert out.logits.shape == (1, 3, 128, 128) and out.low_res.shape == (1, 3, 64, 64)
    ia, ib = a.encoder(128).identity(), b.encoder(128).identity()
    assert ia["weights"] != ib["weights"] and ia != a.encoder(256).identity()
    assert a.weights_id().startswith("random-init:sam2-t:seed1") and a.random_init


def test_random_init_is_seeded_and_never_silent(sam1, tmp_path: Path) -> None:
    again = build_promptable("vit_test", random_init=True, seed=3)
    other = build_promptable("vit_test", random_init=True, seed=4)
    assert sam1.encoder_sha256() == again.encoder_sha256() != other.encoder_sha256()
    with pytest.raises(FSSAMError, match="sam_checkpoint: no weights for SAM vit_h"):
        build_promptable("vit_h")
    with pytest.raises(FSSAMError, match="not one of"):
        build_promptable("vit_x", random_init=True)


def test_checkpoint_loads_strictly_and_names_wrong_keys(sam1, tmp_path: Path) -> None:
    sd = sam1.model.state_dict()
    good = tmp_path / "good.pth"
    torch.save(sd, good)
    loaded = build_promptable("vit_test", checkpoint=good)
    assert not loaded.random_init and loaded.weights_id() == loaded.weights_sha256
    assert loaded.encoder_sha256() == sam1.encoder_sha256()
    bad = dict(sd)
    bad.pop("mask_decoder.iou_token.weight")
    bad["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(FSSAMError) as e:
        build_promptable("vit_test", checkpoint=path)
    assert "mask_decoder.iou_token.weight" in str(e.value) and "extra.weight" in str(e.value)
    with pytest.raises(FSSAMError) as e:  # a test-architecture file is not Meta's ViT-B
        build_promptable("vit_b", checkpoint=good)
    assert "image_encoder.blocks.2" in str(e.value) or "shape" in str(e.value)


@pytest.mark.parametrize("resize", ["bilinear", "bilinear-antialias"])
def test_dinov2_prenorm_tokens_match_an_independent_forward(tmp_path: Path, resize: str) -> None:
    sd = meta_state_dict(384, 2, 6, seed=7)
    path = save(sd, tmp_path / "dinov2_vits14_d2.pth")
    dino = build_dinov2("vits14", checkpoint=path, depth=2, input_size=518)
    imgs = _images(2, 300, seed=4)
    got = DINOv2TokenEncoder(dino, resize=resize).encode(imgs)["dinov2.prenorm"]
    x = F.interpolate(
        imgs / 255.0, size=(518, 518), mode="bilinear", align_corners=False, antialias=resize != "bilinear"
    )
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = meta_reference_features(sd, (x - mean) / std, heads=6, norm=False)  # (2, 384, 37, 37)
    assert got.shape == (2, 37 * 37, 384)
    assert (got - ref.flatten(2).transpose(1, 2)).abs().max() <= TOL
    normed = meta_reference_features(sd, (x - mean) / std, heads=6, norm=True)
    assert (got - normed.flatten(2).transpose(1, 2)).abs().max() > 0.1  # really before the final norm


def test_dinov2_tokens_identity_and_no_resize() -> None:
    dino = build_dinov2("vits14", random_init=True, seed=0, depth=1, input_size=56)
    enc = DINOv2TokenEncoder(dino, resize="none")
    assert enc.encode(_images(1, 56))["dinov2.prenorm"].shape == (1, 16, 384)
    with pytest.raises(FSSAMError, match="needs 56x56"):
        enc.encode(_images(1, 64))
    assert enc.identity() != DINOv2TokenEncoder(dino, resize="bilinear").identity()
