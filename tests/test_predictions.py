"""Stored predictions as COCO RLE: the numpy run finder gives pycocotools' own encoding, and a
mask comes back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from benchmark.evaluation.predictions import mask_to_rle, pack_mask, rle_to_mask, unpack_mask


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
    packed = pack_mask(mask)
    assert packed["size"] == list(mask.shape) and np.array_equal(unpack_mask(packed), mask)
    assert int(mask_utils.area(reference)) == int(mask.sum())


def test_a_typical_object_is_a_few_hundred_bytes():
    yy, xx = np.mgrid[:375, :500]
    blob = ((yy - 180) ** 2 / 120**2 + (xx - 250) ** 2 / 160**2) < 1
    assert len(mask_to_rle(blob)["counts"]) < 1000 < blob.size // 8  # against 23 KB of bits


def test_a_mask_must_be_two_dimensional():
    for f in (mask_to_rle, pack_mask):
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
    bad = {**row, "episode": 1, "prediction": {"size": [2], "bits": "x"}}  # a malformed mask: cut
    j.close()
    path.write_text(path.read_text() + json.dumps(bad) + "\n")
    again = CellJournal(path, header, {0: 1, 1: 1})
    assert list(again.rows) == [0] and again.cut_lines == 1
    again.close()
