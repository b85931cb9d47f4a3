"""Study files are validated before any work, with messages that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from benchmark.cli import main
from benchmark.errors import FssBenchError
from benchmark.specs.overrides import apply_overrides
from benchmark.specs.study import load_study, parse_study


def study_dict(root: Path, **kw) -> dict:
    d = {
        "name": "t",
        "data": {"pascal": str(root)},
        "folds": [0],
        "shots": [1],
        "episodes": 4,
        "model": {
            "sam2_size": "t",
            "image_size": 256,
            "dinov2": "vits14",
            "dinov2_input_size": 224,
            "random_init": True,
        },
        "variants": {"fssam": {}, "naive": {"method": "naive_sam2"}},
    }
    d.update(kw)
    return d


def test_valid_study_and_overrides(pascal_root):
    s = parse_study(study_dict(pascal_root))
    assert [v.name for v in s.variants] == ["fssam", "naive"] and s.random_init
    assert s.variants[1].method == "naive_sam2" and s.variants[0].settings["image_size"] == 256
    raw = apply_overrides(
        study_dict(pascal_root), ["episodes=7", "variants.fssam.imr_iters=2", "folds=[0, 1]"]
    )
    s = parse_study(raw)
    assert s.episodes == 7 and s.folds == [0, 1] and s.variants[0].settings["imr_iters"] == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["variants"]["fssam"].update(imr_iter=2), r"variants\.fssam\.imr_iter: unknown switch"),
        (
            lambda d: d["variants"]["fssam"].update(prior="dino"),
            r"variants\.fssam: method 'fssam': prior='dino' is not one of",
        ),
        (lambda d: d["variants"].update(x={"method": "sam3"}), r"variants\.x\.method: 'sam3' is not one of"),
        (
            lambda d: d.update(data={"pascal": "/nonexistent/root"}),
            r"data\.pascal: /nonexistent/root: data root not found",
        ),
        (lambda d: d.update(data={"voc": "/x"}), r"data\.voc: unknown dataset"),
        (lambda d: d.update(folds=[4]), r"folds: 4 is out of range"),
        (lambda d: d.update(protocl="fssam"), r"protocl: unknown field \(did you mean 'protocol'\?\)"),
        (
            lambda d: d["model"].update(random_init=False),
            r"variants\.fssam\.sam2_checkpoint: no weights: set model\.sam2_checkpoint",
        ),
        (
            lambda d: d["model"].update(
                random_init=False, sam2_checkpoint="/nope/sam2.pt", dinov2_checkpoint="/nope/dino.pth"
            ),
            r"variants\.fssam\.sam2_checkpoint: checkpoint /nope/sam2\.pt not found",
        ),
    ],
)
def test_bad_study_fields_are_named(pascal_root, change, message):
    d = study_dict(pascal_root)
    change(d)
    with pytest.raises(FssBenchError, match=message):
        parse_study(d)


def test_unreadable_checkpoint_fails_before_any_work(pascal_root, tmp_path, capsys):
    bad = tmp_path / "sam2_hiera_tiny.pt"
    bad.write_bytes(b"\x00" * 100)
    good_dino = tmp_path / "dino.pth"
    torch.save({"x": torch.zeros(1)}, good_dino)
    d = study_dict(pascal_root)
    d["model"].update(random_init=False, sam2_checkpoint=str(bad), dinov2_checkpoint=str(good_dino))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(
        FssBenchError, match=r"variants\.fssam\.sam2_checkpoint: .* is not a PyTorch checkpoint"
    ):
        load_study(path)
    # from the CLI: one line, exit 2, and nothing was created (no tracking store, no work dir)
    code = main(
        [
            "-q",
            "run",
            str(path),
            "--work-dir",
            str(tmp_path / "work"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "is not a PyTorch checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "work").exists() and not (tmp_path / "mlflow.db").exists()
