"""The Trainable capability: the training file and the trainer ask the method registry, so a new
trainable method is one registration (no change to ``specs/train.py`` or
``benchmark/jobs/train/``)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import benchmark.methods.registry as registry
from benchmark.errors import FssBenchError
from benchmark.jobs.train.export import export_checkpoint
from benchmark.jobs.train.job import Trainer
from benchmark.methods import (
    MethodEntry,
    Trainable,
    TrainableMethod,
    get_method,
    get_trainable,
    method_names,
    register,
    trainable_method_names,
)
from benchmark.methods.reference import RGBEncoder
from benchmark.specs.train import parse_train

ROOT = Path(__file__).resolve().parents[1]


class PixelHead(nn.Module):
    """A toy trainable method: a frozen 1x1 convolution on the query's pixels, then a trained one
    (the supports are ignored). Satisfies ``TrainableMethod``."""

    random_init = True

    def __init__(self, image_size: int, device: torch.device):
        super().__init__()
        torch.manual_seed(0)
        self.frozen, self.head, self._size = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 1, 1), image_size
        self.to(device).requires_grad_(False).eval()

    @property
    def image_size(self) -> int:
        return self._size

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def encoders(self) -> dict[str, RGBEncoder]:
        return {"rgb": RGBEncoder(self._size)}

    def weight_hashes(self) -> dict[str, str]:
        return {}

    def forward(self, query, supports=None, support_masks=None, query_mask=None):
        return self.head(self.frozen(query / 255.0))[:, 0]  # (B, 3, S, S) -> (B, S, S)

    def predict(self, query, supports, support_masks, **extras: Any):
        logits = self(query["rgb"].to(self.device))
        return (logits, {}) if extras.get("return_intermediates") else logits

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"head": self.head}

    def train_mode(self) -> list[nn.Parameter]:
        self.requires_grad_(False).eval()
        self.head.train().requires_grad_(True)
        return list(self.head.parameters())


def _save(model, path: Path, method: str, settings: dict, meta) -> str:
    from fssam.hashing import file_sha256

    torch.save({"method": method, "head": model.head.state_dict(), "meta": dict(meta)}, path)
    return file_sha256(path)


def _export(model, finetuned: Path, out: Path, settings: dict) -> None:
    model.head.load_state_dict(torch.load(finetuned, weights_only=False)["head"])
    torch.save(model.state_dict(), out)


PIXEL_HEAD = MethodEntry(
    name="pixel_head",
    description="toy: a trained 1x1 convolution on pixels",
    defaults={"image_size": 64},
    build=lambda settings, ctx: PixelHead(settings["image_size"], ctx.device),
    weight_sources=lambda settings: {},
    trainable=Trainable(
        save=_save,
        read_meta=lambda path: torch.load(path, weights_only=False)["meta"],
        export=_export,
        layout="a plain state dict",
    ),
)
FROZEN = MethodEntry(
    name="frozen_toy",
    description="toy: not trainable",
    defaults={"image_size": 64},
    build=lambda settings, ctx: PixelHead(settings["image_size"], ctx.device),
    weight_sources=lambda settings: {},
)


@pytest.fixture
def toys(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # unregistered afterwards
    register(PIXEL_HEAD)
    register(FROZEN)


def _train_dict(root, method: str, **model) -> dict:
    return {
        "name": "toy-train",
        "method": method,
        "data": {"pascal": str(root)},
        "model": model,
        "train": {"batch_size": 2, "max_iters": 3, "checkpoint_every": 1, "workers": 0},
        "val": {"episodes": 2, "every": 2, "patience": 5},
    }


def test_trainable_methods_are_the_entries_with_the_capability(toys):
    with_capability = [n for n in method_names() if get_method(n).trainable is not None]
    assert trainable_method_names() == with_capability
    assert "pixel_head" in with_capability and "frozen_toy" not in with_capability
    assert get_trainable("pixel_head") is PIXEL_HEAD.trainable
    with pytest.raises(FssBenchError, match=r"'frozen_toy' cannot be trained; trainable: \["):
        get_trainable("frozen_toy")


def test_the_training_file_takes_any_trainable_method_and_refuses_the_others(pascal_root, toys):
    spec = parse_train(_train_dict(pascal_root, "pixel_head", image_size=32), "t.yaml")
    assert spec.method == "pixel_head" and spec.settings["image_size"] == 32 and spec.augment.crop == 32
    with pytest.raises(FssBenchError, match=r"t.yaml: method: 'frozen_toy' cannot be trained; trainable: "):
        parse_train(_train_dict(pascal_root, "frozen_toy"), "t.yaml")
    # the settings a trainable method refuses are refused whatever the method
    refused = [k for n in trainable_method_names() for k in get_method(n).trainable.refused]
    assert refused
    with pytest.raises(FssBenchError, match=rf"model.{refused[0]}: training starts from"):
        parse_train(_train_dict(pascal_root, "pixel_head", **{refused[0]: "x.pt"}), "t.yaml")


def test_the_sam2_methods_export_in_their_own_layouts():
    """The layout phrases `fssbench train export` prints (``wrote OUT in {layout}``)."""
    assert get_trainable("fssam").layout == "the authors' layout"
    assert get_trainable("naive_sam2").layout == "Meta's SAM 2 layout (sam2_checkpoint)"


def test_a_registered_method_trains_and_exports_through_its_capability(pascal_root, toys, tmp_path):
    spec = parse_train(_train_dict(pascal_root, "pixel_head"), "t.yaml")
    outcome = Trainer(
        spec, tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", progress=False
    ).run()
    built = PixelHead(64, torch.device("cpu"))
    assert isinstance(built, TrainableMethod)
    assert (outcome.trainable_params, outcome.frozen_params) == (
        sum(p.numel() for p in built.head.parameters()),
        sum(p.numel() for p in built.frozen.parameters()),
    )
    best = torch.load(outcome.best_checkpoint, weights_only=False)
    assert best["method"] == "pixel_head" and best["meta"]["iteration"] == outcome.best_iteration
    assert not torch.equal(best["head"]["weight"], built.head.weight)  # it trained
    state = torch.load(tmp_path / "out" / "train-state.pt", weights_only=False)
    assert set(state["modules"]) == {"head"} and state["global_iter"] == 3
    out = export_checkpoint(spec, outcome.best_checkpoint, tmp_path / "toy.pt")
    exported = torch.load(out, weights_only=True)
    assert torch.equal(exported["head.weight"], best["head"]["weight"])
    assert torch.equal(exported["frozen.weight"], built.frozen.weight)


TRAINING_CODE = [
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmark" / "jobs" / "train").glob("*.py")),
    "benchmark/records/training.py",
    "benchmark/specs/train.py",
]


@pytest.mark.parametrize("module", TRAINING_CODE)
def test_training_code_compares_no_method_name(module):
    """No ``== "fssam"`` / ``== "naive_sam2"`` (or ``in (...)``) against a registered method's name."""
    names = set(method_names())
    found = [
        f"{module}:{node.lineno}"
        for node in ast.walk(ast.parse((ROOT / module).read_text()))
        if isinstance(node, ast.Compare)
        for const in ast.walk(node)
        if isinstance(const, ast.Constant) and const.value in names
    ]
    assert not found
