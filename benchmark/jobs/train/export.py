"""``fssbench export`` and the base weights a training starts from."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmark.errors import FssBenchError
from benchmark.evaluation.cell import CheckpointHashes
from benchmark.methods import build_method, get_method, get_trainable
from benchmark.specs.train import TrainSpec


def export_checkpoint(spec: TrainSpec, finetuned: Path, out: Path) -> Path:
    """A fine-tuned checkpoint with its base weights, in the layout of the method's
    :class:`~benchmark.methods.registry.Trainable` capability (``.layout`` names it: the authors'
    ``{'epoch', 'state_dict'}`` for FSSAM, Meta's SAM 2 layout for naive SAM 2)."""
    trainable = get_trainable(spec.method)
    model = build_method(spec.method, dict(spec.settings), torch.device("cpu"))
    try:
        trainable.export(model, Path(finetuned), Path(out), dict(spec.settings))
    except FssBenchError as e:  # "model.<setting>: ...": name the file too
        raise FssBenchError(f"{spec.source}: {e}") from None
    return out


def base_weight_ids(spec: TrainSpec) -> dict[str, str]:
    """Role -> SHA-256 of each base weight file training starts from, or its random-init id."""
    hashes = CheckpointHashes()
    sources = get_method(spec.method).weight_sources(dict(spec.settings))
    return {r: src if src.startswith("random-init:") else hashes.sha256(src) for r, src in sources.items()}
