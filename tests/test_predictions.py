"""Stored predictions as COCO RLE: the numpy run finder gives pycocotools' own encoding, and a
mask comes back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from benchmark.evaluation.predictions import StoredPrediction, mask_to_rle, rle_to_mask


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:37, :50]
    blob = ((yy - 18) ** 2 / 12**2 + (xx - 25) ** 2 / 16**2) < 1
    return [
        blob,
        ~blob,  # starts with foreground: a leading zero-length background run
        np.zeros((37, 50), bool),
        np.ones((37, 50), bool),
        rng.random((37, 50)) < 0.5,  # many short runs
        rng.random((1, 1)) < 2,  # one pixel, foreground
        np.zeros((1, 7), bool),
        rng.random((375, 500)) < 0.01,
    ]


@pytest.mark.parametrize("index", range(8))
def test_rle_is_pycocotools_encoding_and_round_trips(index):
    mask = _masks()[index]
    rle = mask_to_rle(mask)
    reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["size"] == list(mask.shape) and rle["counts"] == reference["counts"].decode("ascii")
    back = rle_to_mask(rle)
    assert back.dtype == bool and np.array_equal(back, mask)
    packed = StoredPrediction.of(mask)
    assert packed.shape == mask.shape and np.array_equal(packed.mask(), mask)
    line = packed.to_json()
    assert line["size"] == list(mask.shape) and StoredPrediction.from_json(line) == packed
    assert int(mask_utils.area(reference)) == int(mask.sum())


def test_a_typical_object_is_a_few_hundred_bytes():
    yy, xx = np.mgrid[:375, :500]
    blob = ((yy - 180) ** 2 / 120**2 + (xx - 250) ** 2 / 160**2) < 1
    assert len(mask_to_rle(blob)["counts"]) < 1000 < blob.size // 8  # against 23 KB of bits


def test_a_mask_must_be_two_dimensional():
    for f in (mask_to_rle, StoredPrediction.of):
        with pytest.raises(ValueError, match=r"\(H, W\)"):
            f(np.zeros((2, 3, 4), bool))


# ------------------------------------------------------------------ a cell's stored predictions


def _cell(pascal_root, tmp_path, protocol: str, shots: int, settings: dict, journal=None, artifacts=None):
    from benchmark.episodes import get_protocol
    from benchmark.episodes.manifest import save_manifest
    from benchmark.episodes.manifests import ManifestRequest, build_manifest
    from benchmark.evaluation.cell import CellSpec, evaluate_cell
    from benchmark.evaluation.feature_cache import FeatureCache
    from benchmark.methods import get_method

    m = build_manifest(get_protocol(protocol), ManifestRequest(pascal_root, 0, shots, episodes=6))
    path = tmp_path / f"{protocol}-{shots}.json"
    save_manifest(m, path)
    spec = CellSpec("mean_colour", get_method("mean_colour").resolve(settings), path, pascal_root, "cpu")
    result = evaluate_cell(
        spec, FeatureCache(None), journal_path=journal, artifacts_dir=artifacts, qualitative=0
    )
    return m, result


@pytest.mark.parametrize(
    ("protocol", "shots", "kshot"), [("fssam", 1, "joint"), ("hsnet", 2, "joint"), ("fssam", 2, "voting")]
)
def test_stored_predictions_give_back_the_cells_counts(pascal_root, tmp_path, protocol, shots, kshot):
    import pandas as pd

    from benchmark.data.images import read_label
    from benchmark.evaluation.loader import episode_target, scored_target
    from benchmark.evaluation.metrics import intersection_union

    settings = {"image_size": 40, "threshold": 0.45, "kshot": kshot}
    m, result = _cell(pascal_root, tmp_path, protocol, shots, settings, artifacts=tmp_path / "cell")
    stored = pd.read_parquet(tmp_path / "cell" / "predictions.parquet")
    assert stored["episode"].tolist() == result.table["episode"].tolist()  # every episode, in order
    episodes = {e.id: e for e in m.episodes}
    for rec, row in zip(stored.itertuples(), result.table.itertuples(), strict=True):
        ep = episodes[rec.episode]
        mask = rle_to_mask({"size": [rec.height, rec.width], "counts": rec.counts})
        # the target written out from the spec: the label, the episode's class, the protocol's scoring
        target = scored_target(
            episode_target(read_label(pascal_root / m.images[ep.query][1]), ep.cls), m.evaluation
        )
        assert mask.shape == target.shape
        assert intersection_union(mask, target) == (row.I_bg, row.U_bg, row.I_fg, row.U_fg)


def test_a_resumed_cell_keeps_every_prediction(pascal_root, tmp_path):
    settings = {"image_size": 40}
    journal = tmp_path / "journal.jsonl"
    _, first = _cell(pascal_root, tmp_path, "fssam", 1, settings, journal=journal)
    lines = journal.read_text().splitlines(keepends=True)
    assert all('"prediction"' in line for line in lines[1:])
    journal.write_text("".join(lines[:4]))  # the header and three episodes survived a crash
    _, resumed = _cell(pascal_root, tmp_path, "fssam", 1, settings, journal=journal)
    assert resumed.episodes_resumed == 3 and resumed.episodes_run == 3
    assert resumed.predictions == first.predictions and len(first.predictions) == 6
    assert resumed.table.equals(first.table)


def test_a_journal_without_predictions_reads_back(tmp_path):
    import json

    from benchmark.evaluation.journal import CellJournal

    header = {"cell_key": "k", "manifest_sha256": "m"}
    row = {"episode": 0, "class": 1, "I_bg": 1, "U_bg": 2, "I_fg": 1, "U_fg": 2}
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"journal": header}) + "\n" + json.dumps(row) + "\n")
    j = CellJournal(path, header, {0: 1, 1: 1})
    assert j.rows == {0: row} and j.predictions == {}
    j.close()
    good = StoredPrediction.of(np.eye(3, 5, dtype=bool)).to_json()
    for bad in (
        {"size": [2], "bits": "x"},  # not [H, W]
        {"size": [3, 5], "bits": "not base64!"},
        {"size": [3, 5], "bits": good["bits"][:-4]},  # torn: does not inflate
        {"size": [9, 9], "bits": good["bits"]},  # 2 bytes of bits for an 81-pixel mask
    ):
        line = {**row, "episode": 1, "prediction": bad}
        path.write_text(
            path.read_text().splitlines(keepends=True)[0] + json.dumps(row) + "\n" + json.dumps(line) + "\n"
        )
        again = CellJournal(path, header, {0: 1, 1: 1})
        assert list(again.rows) == [0] and again.cut_lines == 1, bad  # the malformed line is cut
        again.close()


@pytest.mark.parametrize("shape", [(7, 9), (16, 8), (1, 1)])  # padding bits, none, a single pixel
def test_packing_on_the_device_is_numpys_packbits(shape):
    import torch

    from benchmark.evaluation.scoring import device_packbits

    rng = np.random.default_rng(1)
    masks = rng.random((3, *shape)) < 0.5
    got = device_packbits(torch.from_numpy(masks)).numpy()
    assert got.dtype == np.uint8
    assert np.array_equal(got, np.stack([np.packbits(m) for m in masks]))


def test_both_scoring_paths_hand_back_the_counted_predictions_packed():
    import torch

    from benchmark.evaluation.metrics import intersection_union
    from benchmark.evaluation.scoring import ScoredTarget, predicted_masks, score_batch

    rng = np.random.default_rng(2)
    logits = torch.from_numpy(rng.normal(size=(3, 16, 16)).astype(np.float32))
    targets = [
        rng.choice(np.array([0, 1, 255], np.uint8), size=s, p=[0.5, 0.4, 0.1])
        for s in [(9, 13), (9, 13), (5, 7)]
    ]
    scored = [ScoredTarget.of(t) for t in targets]
    for on_device in (False, True):
        packed: list = []
        counts = score_batch(logits, scored, 0.5, on_device=on_device, packed=packed)
        for i, t in enumerate(targets):
            mask = predicted_masks(logits[i : i + 1], t.shape, 0.5)[0]  # the prediction, made apart
            assert np.array_equal(packed[i], np.packbits(mask))
            assert tuple(counts[i]) == intersection_union(mask, t)
