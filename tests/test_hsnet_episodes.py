"""``hsnet``: HSNet's own test episodes and its resized-square scoring.

The replays below follow the README of ../shared/data/hsnet-splits (HSNet's documented draw rules)
with numpy's *global* legacy generator, as HSNet runs after ``fix_randseed(0)``; the code under test
uses its own ``RandomState``, its own list parsing and its own (image, class) bookkeeping.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmark.data.lists import ImageRecord
from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import Evaluation
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.episodes.protocols.hsnet import HSNET_SPLITS
from benchmark.episodes.registry import DrawInput
from benchmark.errors import FssBenchError
from benchmark.evaluation.loader import scored_target
from benchmark.evaluation.metrics import intersection_union, prediction_at_label_size

NOVEL_PASCAL = {k: list(range(5 * k + 1, 5 * k + 6)) for k in range(4)}
NOVEL_COCO = {k: [4 * m + k + 1 for m in range(20)] for k in range(4)}


def hsnet_supports(images: list[str], query_name: str, shot: int) -> list[str]:
    """HSNet's support loop on numpy's global generator: draw until ``shot`` differ from the query."""
    support_names = []
    while True:
        support_name = np.random.choice(images, 1, replace=False)[0]
        if query_name != support_name:
            support_names.append(support_name)
        if len(support_names) == shot:
            return support_names


def replay_pascal(fold: int, shot: int, n: int, seed: int):
    lines = (HSNET_SPLITS / "pascal" / "val" / f"fold{fold}.txt").read_text().split("\n")
    metadata = [(ln.split("__")[0], int(ln.split("__")[1]) - 1) for ln in lines if ln]  # HSNet: 0-based
    classwise = {c: [] for c in range(20)}
    for name, c in metadata:
        classwise[c].append(name)
    np.random.seed(seed)
    out = []
    for idx in range(n):
        query_name, class_sample = metadata[idx % len(metadata)]
        support_names = hsnet_supports(classwise[class_sample], query_name, shot)
        out.append((query_name, class_sample + 1, support_names))
    return out


def replay_coco(fold: int, shot: int, n: int, seed: int):
    data = json.loads(gzip.decompress((HSNET_SPLITS / "coco" / "val" / f"fold{fold}.json.gz").read_bytes()))[
        "classes"
    ]
    class_ids = [fold + 4 * v for v in range(20)]  # HSNet's class_ids_val (0-based)
    classwise = {c: [Path(p).stem for p in data[str(c + 1)]] for c in class_ids}
    np.random.seed(seed)
    out = []
    for _ in range(n):
        class_sample = np.random.choice(class_ids, 1, replace=False)[0]
        query_name = np.random.choice(classwise[class_sample], 1, replace=False)[0]
        support_names = hsnet_supports(classwise[class_sample], query_name, shot)
        out.append((query_name, int(class_sample) + 1, support_names))
    return out


def hsnet_draw(ds, fold: int, shot: int, n: int, classes: list[int], records: list[ImageRecord]):
    """The registered hsnet protocol's draw of ``n`` test episodes (seed 0) on a stand-in root."""
    request = DrawInput(ds, fold, shot, 0, n, "test", "interleaved", classes, records, records, "test lists")
    return get_protocol("hsnet").draw(request)


def real_like(dataset: str, fold: int, drop: str | None = None):
    """A stand-in for a real root: one val record per image HSNet lists (no files are read)."""
    if dataset == "pascal":
        names = {
            ln.split("__")[0] for ln in (HSNET_SPLITS / "pascal/val" / f"fold{fold}.txt").read_text().split()
        }
        image = "JPEGImages/{}.jpg"
    else:
        data = json.loads(gzip.decompress((HSNET_SPLITS / "coco/val" / f"fold{fold}.json.gz").read_bytes()))[
            "classes"
        ]
        names = {Path(p).stem for v in data.values() for p in v}
        image = "val2014/{}.jpg"
    records = [ImageRecord(n, image.format(n), f"labels/{n}.png", 10, 10) for n in sorted(names) if n != drop]
    return SimpleNamespace(dataset=dataset, root=Path(f"/real/{dataset}")), records


@pytest.mark.parametrize("fold", [0, 1, 2, 3])
@pytest.mark.parametrize("shot", [1, 5])
def test_pascal_episodes_are_hsnets(fold, shot):
    ds, records = real_like("pascal", fold)
    drawn = hsnet_draw(ds, fold, shot, 1000, NOVEL_PASCAL[fold], records)
    assert [(e.query, e.cls, list(e.supports)) for e in drawn.episodes] == replay_pascal(fold, shot, 1000, 0)
    assert drawn.params["lists"] == "published"


@pytest.mark.parametrize("fold", [0, 3])
@pytest.mark.parametrize("shot", [1, 5])
def test_coco_episodes_are_hsnets(fold, shot):
    ds, records = real_like("coco", fold)
    eps = hsnet_draw(ds, fold, shot, 1000, NOVEL_COCO[fold], records).episodes
    assert [(e.query, e.cls, list(e.supports)) for e in eps] == replay_coco(fold, shot, 1000, 0)
    counts = Counter(e.cls for e in eps)  # class-uniform, not image-uniform
    assert set(counts) == set(NOVEL_COCO[fold]) and max(counts.values()) < 90


def test_a_real_root_missing_a_listed_image_is_an_error_naming_it():
    ds, records = real_like("pascal", 0, drop="2007_000129")
    with pytest.raises(FssBenchError, match=r"fold0\.txt: image 2007_000129 is not in the val split"):
        hsnet_draw(ds, 0, 1, 10, NOVEL_PASCAL[0], records)


def test_synthetic_roots_use_lists_built_by_the_documented_rule(pascal_root, coco_root):
    from benchmark.data.prepared import PreparedDataset

    for root, fold, classes in ((pascal_root, 1, NOVEL_PASCAL[1]), (coco_root, 2, NOVEL_COCO[2])):
        ds = PreparedDataset(root)
        m = build_manifest(get_protocol("hsnet"), ManifestRequest(root, fold, 2, episodes=200))
        assert m.draw["lists"] == "derived" and m.seed == 0
        records = ds.records("val")
        counted = [(r.id, c) for r in records for c in classes if r.pixels.get(c, 0) >= 2048]
        classwise = {c: [i for i, k in counted if k == c] for c in classes}
        np.random.seed(0)
        want = []
        for idx in range(200):
            if ds.dataset == "pascal":
                q, c = sorted(counted)[idx % len(counted)]
            else:
                c = int(np.random.choice(sorted(k for k, v in classwise.items() if v), 1, replace=False)[0])
                q = np.random.choice(classwise[c], 1, replace=False)[0]
            sup = []
            while len(sup) < 2:
                s = np.random.choice(classwise[c], 1, replace=False)[0]
                if s != q:
                    sup.append(s)
            want.append((q, c, sup))
        assert [(e.query, e.cls, list(e.supports)) for e in m.episodes] == want
        ev = {"resolution": "resized", "size": 400, "ignore_255": ds.dataset == "pascal"}
        assert m.to_dict()["eval"] == ev and m.evaluation == Evaluation(
            "resized", 400, ds.dataset == "pascal"
        )


def test_resized_square_scoring_by_hand():
    # a 2x4 label: class 1 on the left half, 255 in the top-right corner
    target = np.array([[1, 1, 0, 255], [1, 1, 0, 0]], dtype=np.uint8)
    sq = scored_target(target, Evaluation("resized", 4, True))
    # nearest (floor(dst * in / out)): rows 0,0,1,1 of the source; columns 0,1,2,3
    assert sq.tolist() == [[1, 1, 0, 255], [1, 1, 0, 255], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert scored_target(target, Evaluation("resized", 4, False))[0, 3] == 0  # no ignore label: background
    assert scored_target(target, Evaluation()).tolist() == target.tolist()
    # a prediction covering the left three columns of the 4x4 square, 14 valid pixels:
    # fg: target 8 (cols 0-1), prediction 12 valid (cols 0-2) -> I 8, U 12
    # bg: target 6 (col 2, and col 3 rows 2-3), prediction 2 valid (col 3 rows 2-3) -> I 2, U 6
    logits = torch.full((4, 4), -5.0)
    logits[:, :3] = 5.0
    pred = prediction_at_label_size(logits, sq.shape, 0.5)
    assert tuple(int(x) for x in intersection_union(pred, sq)) == (2, 6, 8, 12)


def test_protocol_defaults_and_overrides():
    fssam, hsnet = get_protocol("fssam"), get_protocol("hsnet")
    assert fssam.evaluation("pascal") == Evaluation()
    assert get_protocol("fssam-exact").evaluation("coco") == Evaluation()
    assert hsnet.evaluation("pascal") == Evaluation("resized", 400, True)
    assert hsnet.evaluation("coco") == Evaluation("resized", 400, False)
    assert hsnet.evaluation("pascal", "original") == Evaluation("original", None, True)
    assert fssam.evaluation("coco", "resized", 473) == Evaluation("resized", 473, True)
    with pytest.raises(FssBenchError, match="applies to resolution resized only"):
        fssam.evaluation("pascal", "original", 400)


def _left_half(settings, ctx):
    from benchmark.methods.reference import ReferencePredictor

    def fn(query, supports, masks):  # logit +1 on the left half of the S x S input, -1 on the right
        b, _, h, w = query.shape
        out = -torch.ones(b, h, w)
        out[..., : w // 2] = 1.0
        return out

    return ReferencePredictor(fn, int(settings["image_size"]), ctx.device)


def test_a_cell_scores_hsnet_manifests_on_the_resized_square(pascal_root, tmp_path, monkeypatch):
    import torch.nn.functional as F

    from benchmark.data.images import read_label
    from benchmark.episodes.manifest import save_manifest
    from benchmark.evaluation.cell import CellSpec, evaluate_cell
    from benchmark.evaluation.feature_cache import FeatureCache
    from benchmark.methods import registry

    entry = registry.MethodEntry(
        "left_half", "left half foreground", {"image_size": 64}, _left_half, lambda s: {}
    )
    monkeypatch.setitem(registry._REGISTRY, "left_half", entry)
    m = build_manifest(get_protocol("hsnet"), ManifestRequest(pascal_root, 0, 1, episodes=4, eval_size=96))
    save_manifest(m, tmp_path / "m.json")
    spec = CellSpec("left_half", {"image_size": 64}, tmp_path / "m.json", pascal_root, "cpu")
    table = evaluate_cell(spec, FeatureCache(None)).table
    # the 64-px step upsampled (align_corners) to the 96-px square crosses 0 at x = 31.5 * 95 / 63 = 47.5
    pred = torch.zeros(96, 96, dtype=torch.bool)
    pred[:, :48] = True
    for e, row in zip(m.episodes, table.itertuples(), strict=True):
        label = torch.from_numpy(read_label(pascal_root / m.images[e.query][1]).astype(np.float32))
        sq = F.interpolate(label[None, None], size=(96, 96), mode="nearest")[0, 0]  # HSNet's resize
        valid, fg = sq != 255, sq == e.cls
        assert (row.I_fg, row.U_fg) == (int((pred & fg & valid).sum()), int(((pred | fg) & valid).sum()))
        assert 0 < row.I_fg < row.U_fg  # the prediction is neither empty nor everything here
