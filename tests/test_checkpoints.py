"""Strict checkpoint loading: Meta's SAM 2 files and the authors' FSSAM training checkpoints."""

from __future__ import annotations

import hashlib

import pytest
import torch

from fssam import FSSAM, FSSAMConfig
from fssam.checkpoint import to_authors_state_dict
from fssam.dinov2 import build_dinov2, export_meta_state_dict
from fssam.errors import FSSAMError
from fssam.sam2_adapter import build_sam2_model

S = 256


@pytest.fixture(scope="module")
def tiny_sam2_file(tmp_path_factory):
    sam = build_sam2_model("2.0", "t", S, random_init=True, seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "sam2_hiera_tiny.pt"
    torch.save({"model": sam.state_dict()}, path)
    return sam, path


def test_sam2_checkpoint_loads_strictly_and_records_its_hash(tiny_sam2_file):
    sam, path = tiny_sam2_file
    loaded = build_sam2_model("2.0", "t", S, checkpoint=path)
    assert not loaded.fss_random_init
    assert loaded.fss_weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    for (n, a), (_, b) in zip(sam.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_sam2_checkpoint_mismatches_name_the_keys(tiny_sam2_file, tmp_path):
    _, path = tiny_sam2_file
    with pytest.raises(
        FSSAMError, match=r"sam2_hiera_tiny\.pt does not fit SAM 2 2\.0 size s .*(missing|shape)"
    ):
        build_sam2_model("2.0", "s", S, checkpoint=path)
    with pytest.raises(FSSAMError, match=r"missing keys: .*no_obj_embed_spatial"):
        build_sam2_model("2.1", "t", S, checkpoint=path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(FSSAMError, match=r"bad\.pt: unreadable checkpoint"):
        build_sam2_model("2.0", "t", S, checkpoint=bad)
    with pytest.raises(FSSAMError, match="not found"):
        build_sam2_model("2.0", "t", S, checkpoint=tmp_path / "missing.pt")


@pytest.fixture(scope="module")
def authors_files(tmp_path_factory, tiny_sam2_file):
    """An authors-format checkpoint and the equivalent separate official files, same weights."""
    sam, sam_path = tiny_sam2_file
    d = tmp_path_factory.mktemp("authors")
    dino518 = build_dinov2("vits14", random_init=True, input_size=518, seed=5)  # Meta's own 37x37 grid
    meta = export_meta_state_dict(dino518)
    dino_path = d / "dinov2_vits14_pretrain.pth"
    torch.save(meta, dino_path)
    src = FSSAM(
        FSSAMConfig(sam2_size="t", image_size=S, dinov2="vits14", dinov2_input_size=518, random_init=True),
        sam2=sam,
        dino=dino518,
    )
    sd = to_authors_state_dict(src, dino_meta=meta, ddp=True)
    assert all(k.startswith(("module.sam2.", "module.dino.")) for k in sd)
    path = d / "best_1shot.pth"
    torch.save({"epoch": 12, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}, path)
    return path, sam_path, dino_path, sd


def test_authors_checkpoint_round_trip_gives_identical_outputs(authors_files):
    path, sam_path, dino_path, _ = authors_files
    kw = {"dinov2_input_size": 224}
    ours = FSSAM.from_authors_checkpoint(
        path, sam2_config="sam2_hiera_t", image_size=S, dinov2="vits14", **kw
    )
    assert (
        not ours.random_init and ours.weight_hashes()["sam2"] == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    official = FSSAM(
        FSSAMConfig(
            sam2_size="t",
            image_size=S,
            dinov2="vits14",
            sam2_checkpoint=str(sam_path),
            dinov2_checkpoint=str(dino_path),
            **kw,
        )
    )
    g = torch.Generator().manual_seed(0)
    query, supports = torch.rand(1, 3, S, S, generator=g) * 255, torch.rand(1, 1, 3, S, S, generator=g) * 255
    masks = (torch.rand(1, 1, S, S, generator=g) > 0.5).long()
    assert torch.equal(ours(query, supports, masks), official(query, supports, masks))


def test_authors_checkpoint_with_a_wrong_key_set_fails_readably(authors_files, tmp_path):
    _, _, _, sd = authors_files
    broken = dict(sd)
    broken.pop("module.sam2.memory_encoder.out_proj.weight")
    broken["module.sam2.extra.weight"] = torch.zeros(1)
    p = tmp_path / "broken.pth"
    torch.save({"epoch": 1, "state_dict": broken, "optimizer": {}}, p)
    with pytest.raises(FSSAMError) as e:
        FSSAM.from_authors_checkpoint(p, sam2_config="sam2_hiera_t", image_size=S, dinov2="vits14")
    msg = str(e.value)
    assert "memory_encoder.out_proj.weight" in msg and "extra.weight" in msg and str(p) in msg
    assert len(msg.splitlines()) == 1
    with pytest.raises(FSSAMError, match="DINOv2|dino"):
        FSSAM.from_authors_checkpoint(
            authors_files[0], sam2_config="sam2_hiera_t", image_size=S, dinov2="vitb14"
        )
    with pytest.raises(FSSAMError, match="unknown SAM 2 config"):
        FSSAM.from_authors_checkpoint(authors_files[0], sam2_config="hiera_small")
