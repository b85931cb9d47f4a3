"""The episode loop, with no tracking inside: (model, manifest, features) -> per-episode table.

``run_episodes`` is what a study cell, a profile run or an Optuna trial calls. Frozen features go
through a :class:`~benchmark.feature_cache.FeatureCache`; per-episode results go to an append-only
:class:`CellJournal`, so an interrupted cell resumes at its first missing episode.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from benchmark.data.episode_data import resize_image, resize_label
from benchmark.data.images import read_label
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes import Episode, manifest_episodes
from benchmark.errors import FssBenchError
from benchmark.feature_cache import FeatureCache
from benchmark.metrics import EPISODE_COLUMNS, episode_target, intersection_union, prediction_at_label_size
from fssam.model import EncodedImages
from fssam.sam2_adapter import SAM2Features


class ImageStore:
    """Images (bytes, SHA-256, decoded on demand) and labels of a prepared root, memoised."""

    def __init__(self, ds: PreparedDataset):
        self.ds = ds
        self._sha: dict[str, str] = {}
        self._labels: dict[str, np.ndarray] = {}

    def sha256(self, rel: str) -> str:
        if rel not in self._sha:
            path = self.ds.root / rel
            try:
                self._sha[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as e:
                raise FssBenchError(f"{path}: cannot read image ({e})") from None
        return self._sha[rel]

    def image(self, rel: str) -> np.ndarray:
        """(H, W, 3) uint8."""
        path = self.ds.root / rel
        try:
            with Image.open(io.BytesIO(path.read_bytes())) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as e:
            raise FssBenchError(f"{path}: unreadable image ({e}); run `fssbench data check`") from None

    def label(self, rel: str) -> np.ndarray:
        if rel not in self._labels:
            self._labels[rel] = read_label(self.ds.root / rel)
        return self._labels[rel]


class Featurizer:
    """Frozen features of images for one model, through the cache (one entry per encoder and image)."""

    def __init__(self, model: Any, cache: FeatureCache, store: ImageStore, image_size: int):
        self.model, self.cache, self.store, self.size = model, cache, store, image_size
        self.identity = model.feature_identity()

    def _tensor(self, rel: str) -> torch.Tensor:
        return resize_image(self.store.image(rel), self.size)[None]

    def encode(self, rels: list[str]) -> EncodedImages:
        sam_levels, dinos = [], []
        for rel in rels:
            sha = self.store.sha256(rel)
            decoded: list[torch.Tensor] = []  # decode and resize an image at most once, on a cache miss

            def image(rel: str = rel, decoded: list[torch.Tensor] = decoded) -> torch.Tensor:
                if not decoded:
                    decoded.append(self._tensor(rel))
                return decoded[0]

            f = self.cache.get_or_compute(
                self.identity["sam2"], sha,
                lambda image=image: {f"l{i}": x for i, x in enumerate(self.model.encode_sam2(image()).levels)},
            )  # fmt: skip
            sam_levels.append([f[f"l{i}"] for i in range(len(f))])
            if "dino" in self.identity:
                d = self.cache.get_or_compute(
                    self.identity["dino"], sha, lambda image=image: {"dino": self.model.encode_dino(image())}
                )
                dinos.append(d["dino"])
        device = self.model.sam2.device
        levels = [torch.cat([lv[i] for lv in sam_levels]).to(device) for i in range(len(sam_levels[0]))]
        return EncodedImages(SAM2Features(levels), torch.cat(dinos).to(device) if dinos else None)


class CellJournal:
    """Append-only JSON-lines record of finished episodes (flushed and fsynced per line).

    On open, the lines already there are read back; a torn last line (a kill during a write) is cut.
    """

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self.rows: dict[int, dict[str, int]] = {}
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            good = 0
            with open(self.path, "rb") as f:
                data = f.read()
            for line in data.splitlines(keepends=True):
                try:
                    row = json.loads(line)
                    if not line.endswith(b"\n"):
                        raise ValueError("torn line")
                except ValueError:
                    break
                self.rows[int(row["episode"])] = row
                good += len(line)
            if good < len(data):
                with open(self.path, "r+b") as f:
                    f.truncate(good)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, row: dict[str, int]) -> None:
        self.rows[int(row["episode"])] = row
        if self.path is not None:
            os.write(self._fd, (json.dumps(row, sort_keys=True) + "\n").encode())
            os.fsync(self._fd)

    def close(self) -> None:
        if self.path is not None and getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def table(self) -> pd.DataFrame:
        rows = [self.rows[k] for k in sorted(self.rows)]
        return pd.DataFrame(rows, columns=list(EPISODE_COLUMNS)).astype("int64")


@dataclass
class EpisodeInputs:
    query: EncodedImages
    supports: EncodedImages
    support_masks: torch.Tensor  # (1, K, S, S)
    query_mask: torch.Tensor  # (1, S, S) at model size (oracle prior)
    target: np.ndarray  # (H, W) original resolution, {0, 1, 255}


def episode_inputs(ep: Episode, images: dict[str, list[str]], feat: Featurizer) -> EpisodeInputs:
    store, size = feat.store, feat.size
    q_img, q_lab = images[ep.query]
    target = episode_target(store.label(q_lab), ep.cls)
    masks = torch.stack(
        [resize_label(episode_target(store.label(images[s][1]), ep.cls), size) for s in ep.supports]
    )
    return EpisodeInputs(
        query=feat.encode([q_img]),
        supports=feat.encode([images[s][0] for s in ep.supports]),
        support_masks=masks[None],
        query_mask=resize_label(target, size)[None],
        target=target,
    )


@dataclass
class EpisodeRun:
    table: pd.DataFrame
    seconds: float  # wall time of the episodes run now (not the resumed ones)
    episodes_run: int
    peak_memory_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def predict_episode(model: Any, inp: EpisodeInputs, return_intermediates: bool = False):
    with torch.no_grad():
        return model.predict(
            inp.query,
            inp.supports,
            inp.support_masks,
            query_mask=inp.query_mask,
            return_intermediates=return_intermediates,
        )


def run_episodes(
    model: Any,
    manifest: dict[str, Any],
    feat: Featurizer,
    journal: CellJournal,
    progress: bool = True,
    desc: str = "episodes",
    on_episode: Callable[[int], None] | None = None,
) -> EpisodeRun:
    """Score ``model`` on every episode of ``manifest`` not yet in ``journal``."""
    episodes = manifest_episodes(manifest)
    todo = [e for e in episodes if e.id not in journal.rows]
    device = model.sam2.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    bar = tqdm(total=len(episodes), initial=len(episodes) - len(todo), desc=desc, unit="ep", leave=False,
               disable=not progress)  # fmt: skip
    try:
        for ep in todo:
            inp = episode_inputs(ep, manifest["images"], feat)
            logits = predict_episode(model, inp)
            pred = prediction_at_label_size(logits[0].float().cpu(), inp.target.shape)
            i_bg, u_bg, i_fg, u_fg = intersection_union(pred, inp.target)
            journal.append(
                {"episode": ep.id, "class": ep.cls, "I_bg": i_bg, "U_bg": u_bg, "I_fg": i_fg, "U_fg": u_fg}
            )
            bar.update()
            if on_episode is not None:
                on_episode(ep.id)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return EpisodeRun(journal.table(), seconds, len(todo), peak)
