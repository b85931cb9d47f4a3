"""`fssbench fetch weights sam-vit-b|sam-vit-l|sam-vit-h`: Meta's SAM 1 checkpoints, checked by a
strict load into the official ``segment_anything`` architecture before they are put in place.

A full-size SAM file is 375 MB (ViT-B) to 2.5 GB (ViT-H), too much for a default test: the served
files here hold every key of the architecture with its real shape, each tensor a zero-stride view
of one element (``torch.zeros(()).expand(shape)``, a few kB), so the key and shape check is the real
one. The shapes come from the official model built on torch's meta device; the embedding widths
checked by hand below (768 / 1024 / 1280) are the SAM paper's. One slow test fetches a real-size,
randomly initialised ViT-B.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.errors import FssBenchError
from benchmark.fetch.sources import WEIGHTS
from benchmark.fetch.weights import check_sam1_state_dict, fetch_weights, list_weights
from benchmark.lockfile import LOCK_NAME
from tests.range_server import RangeServer

ARCH_WIDTH = {"vit_b": 768, "vit_l": 1024, "vit_h": 1280}  # ViT embedding widths (SAM paper, Table)


def meta_shapes(arch: str) -> dict[str, tuple[torch.Size, torch.dtype]]:
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        model = sam_model_registry[arch]()
    return {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


def cheap_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """Every key of SAM ``arch`` with its shape, each a zero-stride view of a single zero."""
    return {k: torch.zeros((), dtype=dt).expand(shape) for k, (shape, dt) in meta_shapes(arch).items()}


def save(sd: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


def serve_as(mirror: Path, name: str, file: Path) -> None:
    dest = mirror / WEIGHTS[name].source.relative_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, dest)


def test_the_sam1_entries_are_metas_files_and_architectures():
    for arch, name, file in [
        ("vit_b", "sam-vit-b", "sam_vit_b_01ec64.pth"),
        ("vit_l", "sam-vit-l", "sam_vit_l_0b3195.pth"),
        ("vit_h", "sam-vit-h", "sam_vit_h_4b8939.pth"),
    ]:
        w = WEIGHTS[name]
        assert (w.kind, w.arch, w.source.filename) == ("sam1", arch, file)
        assert w.source.url == f"https://dl.fbaipublicfiles.com/segment_anything/{file}"
        shapes = meta_shapes(arch)
        assert shapes["image_encoder.pos_embed"][0] == (1, 64, 64, ARCH_WIDTH[arch])
        params = sum(s.numel() for k, (s, _) in shapes.items() if "positional_encoding_gaussian" not in k)
        assert w.source.approx_mb == pytest.approx(params * 4 / 2**20, rel=0.01)


def test_the_key_check_names_missing_unexpected_and_misshaped_keys():
    sd = cheap_state_dict("vit_b")
    check_sam1_state_dict("vit_b", sd)  # every key, every shape: accepted
    broken = {k: v for k, v in sd.items() if k != "mask_decoder.iou_token.weight"} | {
        "extra.bias": torch.zeros(2)
    }
    with pytest.raises(
        FssBenchError, match=r"1 missing keys \(e.g. mask_decoder.iou_token.weight\); 1 unexpected"
    ):
        check_sam1_state_dict("vit_b", broken)
    misshaped = sd | {"mask_decoder.iou_token.weight": torch.zeros(1, 3)}
    with pytest.raises(FssBenchError, match="size mismatch for mask_decoder.iou_token.weight"):
        check_sam1_state_dict("vit_b", misshaped)
    with pytest.raises(FssBenchError, match="strict load into SAM vit_h failed: .*missing keys"):
        check_sam1_state_dict("vit_h", sd)  # ViT-B has 12 blocks, ViT-H 32


def test_fetch_sam_vit_b_verifies_places_and_locks(tmp_path, capsys):
    file = save(cheap_state_dict("vit_b"), tmp_path / "src" / "b.pth")
    serve_as(tmp_path / "mirror", "sam-vit-b", file)
    out = tmp_path / "checkpoints"
    with RangeServer(tmp_path / "mirror") as srv:
        assert main(["-q", "fetch", "weights", "sam-vit-b", "--out", str(out), "--mirror", srv.url]) == 0
        target = out / "sam_vit_b_01ec64.pth"
        sha = hashlib.sha256(file.read_bytes()).hexdigest()
        assert hashlib.sha256(target.read_bytes()).hexdigest() == sha
        lock = json.loads((out / LOCK_NAME).read_text())["files"][target.name]
        assert lock["sha256"] == sha and lock["checked"] == "strict load into SAM vit_b"
        (again,) = fetch_weights(["sam-vit-b"], out, mirror=srv.url, progress=False)
        assert again.status == "present" and len(srv.gets(WEIGHTS["sam-vit-b"].source.relative_path)) == 1
    assert [r.on_disk for r in list_weights(out) if r.name == "sam-vit-b"] == ["locked"]


def test_a_file_of_another_sam_is_refused_and_removed(tmp_path, capsys):
    file = save(cheap_state_dict("vit_b"), tmp_path / "src" / "b.pth")
    serve_as(tmp_path / "mirror", "sam-vit-l", file)  # ViT-B where ViT-L's file should be
    out = tmp_path / "checkpoints"
    with RangeServer(tmp_path / "mirror") as srv:
        rc = main(["-q", "fetch", "weights", "sam-vit-l", "--out", str(out), "--mirror", srv.url])
    err = capsys.readouterr().err
    assert rc == 2 and "sam_vit_l_0b3195.pth" in err and "is not SAM vit_l: " in err
    assert "missing keys (e.g. image_encoder.blocks.12." in err and "the download was removed" in err
    assert not (out / "sam_vit_l_0b3195.pth").exists() and not list(out.glob("*.part"))
    assert not (out / LOCK_NAME).exists()


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, capsys):
    bad = tmp_path / "src" / "h.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"<html>not found</html>")
    serve_as(tmp_path / "mirror", "sam-vit-h", bad)
    out = tmp_path / "checkpoints"
    with RangeServer(tmp_path / "mirror") as srv:
        rc = main(["-q", "fetch", "weights", "sam-vit-h", "--out", str(out), "--mirror", srv.url])
    err = capsys.readouterr().err
    assert rc == 2 and "is not SAM vit_h: not a PyTorch checkpoint" in err
    assert not (out / "sam_vit_h_4b8939.pth").exists()


@pytest.mark.slow
def test_a_real_size_random_init_vit_b_is_fetched_and_loads_into_the_official_builder(tmp_path):
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    model = sam_model_registry["vit_b"]()
    file = save(model.state_dict(), tmp_path / "src" / "b.pth")
    serve_as(tmp_path / "mirror", "sam-vit-b", file)
    with RangeServer(tmp_path / "mirror") as srv:
        (f,) = fetch_weights(["sam-vit-b"], tmp_path / "out", mirror=srv.url, progress=False)
    again = sam_model_registry["vit_b"](checkpoint=str(f.path))  # the official builder's own strict load
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
