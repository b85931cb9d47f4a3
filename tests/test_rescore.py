"""Re-scoring from stored predictions and the per-class view, on a tiny real study (mean_colour)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.data.classes import novel_classes
from benchmark.data.images import read_label
from benchmark.episodes.manifest import load_manifest
from benchmark.evaluation.predictions import rle_to_mask
from reports.per_class import class_iou_ci, spread_order
from tests.test_mask_metrics import _reference_counts

EPISODES = 6


@pytest.fixture(scope="module")
def study(pascal_root, tmp_path_factory):
    """Two mean_colour variants, folds 0 and 1, 1-shot, one seed, reported once; every cell's
    stored predictions, per-episode table and manifest read back with MLflow's client."""
    tmp = tmp_path_factory.mktemp("rescore")
    spec = {
        "name": "resc",
        "data": {"pascal": str(pascal_root)},
        "folds": [0, 1],
        "shots": [1],
        "seeds": [321],
        "episodes": EPISODES,
        "model": {},
        "variants": {
            "colour": {"method": "mean_colour", "image_size": 48},
            "colour-low": {"method": "mean_colour", "image_size": 48, "threshold": 0.3},
        },
    }
    (tmp / "s.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert main(["-q", "run", str(tmp / "s.yaml"), "--work-dir", str(tmp / "w"), "--tracking-uri", uri]) == 0
    assert (
        main(["-q", "report", "--experiment", "resc", "--tracking-uri", uri, "--out", str(tmp / "out")]) == 0
    )
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resc")
    cells = {}
    for r in client.search_runs([exp.experiment_id], filter_string="tags.`fss.kind` = 'cell'"):
        rid, t = r.info.run_id, r.data.tags
        dl = tmp / "dl" / rid
        read = {
            a: pd.read_parquet(client.download_artifacts(rid, a, str(dl)))
            for a in ("episodes.parquet", "predictions.parquet")
        }
        manifest = load_manifest(Path(client.download_artifacts(rid, "manifest.json", str(dl))))
        cells[rid] = {"variant": t["fss.variant"], "fold": int(t["fss.fold"]), "manifest": manifest, **read}
    return tmp, uri, cells


def _independent(cell, root) -> pd.DataFrame:
    """Per episode, from the stored masks and the raw labels: boundary counts (scipy) and COCO's
    size bin of the label-size foreground area."""
    m = cell["manifest"]
    eps = {e.id: e for e in m.episodes}
    rows = []
    for rec in cell["predictions.parquet"].itertuples():
        ep = eps[rec.episode]
        label = read_label(root / m.images[ep.query][1])
        target = np.where(label == 255, 255, (label == ep.cls).astype(np.uint8)).astype(np.uint8)
        mask = rle_to_mask({"size": [rec.height, rec.width], "counts": rec.counts})
        area = int((label == ep.cls).sum())
        size = "small" if area < 1024 else ("medium" if area < 9216 else "large")
        rows.append((rec.episode, ep.cls, *_reference_counts(mask, target), area, size))
    return pd.DataFrame(rows, columns=["episode", "class", "I_bd", "U_bd", "area", "size_bin"])


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_rescored_counts_equal_the_cells_and_boundary_and_size_are_recomputed(study, pascal_root):
    tmp, _, cells = study
    for rid, cell in cells.items():
        got = pd.read_parquet(tmp / "out" / "rescored" / f"{rid}-v1.parquet")
        mine = got[["episode", "class", "I_bg", "U_bg", "I_fg", "U_fg"]].reset_index(drop=True)
        assert mine.equals(cell["episodes.parquet"][list(mine.columns)].reset_index(drop=True))
        ref = _independent(cell, pascal_root)
        assert got[list(ref.columns)].reset_index(drop=True).equals(ref)


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_the_rescored_table_equals_a_recomputation(study, pascal_root):
    tmp, _, cells = study
    csv = pd.read_csv(tmp / "out" / "tables" / "rescored-pascal-1shot.csv", index_col=0)
    for variant in ("colour", "colour-low"):
        boundary, small, n_small, folds = [], [], 0, []
        for cell in (c for c in cells.values() if c["variant"] == variant):
            ref = _independent(cell, pascal_root)
            classes = novel_classes("pascal", cell["fold"])
            ious = [
                ref[ref["class"] == c]["I_bd"].sum() / max(ref[ref["class"] == c]["U_bd"].sum(), 1)
                for c in classes
            ]  # a class without episodes counts 0, as in mIoU
            boundary.append(np.mean(ious))
            ep = cell["episodes.parquet"].merge(ref[["episode", "size_bin"]], on="episode")
            sel = ep[ep["size_bin"] == "small"]
            n_small += len(sel)
            if len(sel):
                small.append(
                    np.mean(
                        [
                            sel[sel["class"] == c]["I_fg"].sum()
                            / max(sel[sel["class"] == c]["U_fg"].sum(), 1)
                            for c in sorted(set(sel["class"]))
                        ]
                    )
                )
            folds.append(cell["fold"])
        assert sorted(folds) == [0, 1]
        row = csv.loc[variant]
        assert row["boundary_iou_pct"] == pytest.approx(100 * np.mean(boundary), abs=1e-9)
        assert row["small_episodes"] == n_small and row["cells_rescored"] == 2
        if small:
            assert row["small_miou_pct"] == pytest.approx(100 * np.mean(small), abs=1e-9)
    html = (tmp / "out" / "report.html").read_text()
    assert "Re-scored from stored predictions" in html and "classes by spread between variants" in html


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_a_second_report_reads_the_cache_and_a_run_without_predictions_is_named(study, monkeypatch):
    tmp, uri, cells = study
    import reports.rescore as rescore

    def fail(*a, **k):
        raise AssertionError("recomputed a cached run")

    monkeypatch.setattr(rescore, "rescore_episodes", fail)
    out = tmp / "out"
    assert main(["-q", "report", "--experiment", "resc", "--tracking-uri", uri, "--out", str(out)]) == 0
    # a run made before predictions were stored: its artifact removed, a fresh output folder
    rid = sorted(cells)[0]
    client = MlflowClient(uri)
    art = Path(client.get_run(rid).info.artifact_uri.removeprefix("file://")) / "predictions.parquet"
    art.unlink()
    monkeypatch.undo()
    out2 = tmp / "out2"
    assert main(["-q", "report", "--experiment", "resc", "--tracking-uri", uri, "--out", str(out2)]) == 0
    cell = cells[rid]
    note = (
        f"run {rid} ({cell['variant']}, fold {cell['fold']}, 1-shot) has no stored predictions: "
        "re-run the cell to re-score it"
    )
    assert note in (out2 / "report.md").read_text() and note in (out2 / "report.html").read_text()
    csv = pd.read_csv(out2 / "tables" / "rescored-pascal-1shot.csv", index_col=0)
    assert csv.loc[cell["variant"], "cells_rescored"] == 1
    assert not (out2 / "rescored" / f"{rid}-v1.parquet").exists()


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_a_prediction_that_disagrees_with_its_counts_names_the_run(study, tmp_path):
    from benchmark.records.tracking import Tracker
    from reports.collect import collect_experiments
    from reports.rescore import RescoreMismatch, rescore_experiment

    _, uri, cells = study
    tracker = Tracker(uri, create=False)
    data = collect_experiments(tracker, ["resc"], tmp_path / "dl")
    client = MlflowClient(uri)
    rid = next(r for r in cells if "predictions.parquet" in {a.path for a in client.list_artifacts(r)})
    table = data.episodes[rid]
    table.loc[table.index[0], "I_fg"] += 1
    with pytest.raises(RescoreMismatch, match=f"run {rid}, episode {int(table['episode'].iloc[0])}"):
        rescore_experiment(data, tracker, tmp_path / "cache")


# ------------------------------------------------------------------ the per-class view (pure)


def _episodes(variant, seed, cls, pairs, fold=0, run=None):
    return [
        {
            "variant": variant,
            "fold": fold,
            "seed": seed,
            "run_id": run or f"{variant}-{fold}-{seed}",
            "episode": i,
            "class": cls,
            "I_bg": 0,
            "U_bg": 0,
            "I_fg": i_fg,
            "U_fg": u_fg,
        }
        for i, (i_fg, u_fg) in enumerate(pairs)
    ]


def test_per_class_iou_ci_and_spread_order_by_hand():
    rows = []
    # class 1: variant a has episodes (1, 2) and (0, 2): IoU 1/4; a resample takes both of one (IoU
    # 1/2 or 0, each with chance 1/4) or one of each (1/4): the 95% CI is [0, 1/2]
    rows += _episodes("a", 0, 1, [(1, 2), (0, 2)])
    # variant b: two identical episodes of IoU 0.2: no variance, CI [0.2, 0.2]
    rows += _episodes("b", 0, 1, [(1, 5), (1, 5)])
    # class 2: a scores 0.9, b 0.2 (constant episodes): the larger spread, so class 2 comes first
    rows += _episodes("a", 0, 2, [(9, 10), (9, 10)])
    rows += _episodes("b", 0, 2, [(2, 10), (2, 10)])
    ci = class_iou_ci(pd.DataFrame(rows), n_boot=2000).set_index(["variant", "class"])
    assert ci.loc[("a", 1), "iou"] == pytest.approx(0.25)
    assert (ci.loc[("a", 1), "low"], ci.loc[("a", 1), "high"]) == (0.0, 0.5)
    assert ci.loc[("b", 1), ["iou", "low", "high"]].tolist() == pytest.approx([0.2] * 3)
    assert ci.loc[("a", 1), "episodes"] == 2
    order = spread_order(ci.reset_index())
    assert order.index.tolist() == [2, 1]
    assert order["spread"].tolist() == pytest.approx([0.7, 0.05])


def test_per_class_ci_over_two_seeds_by_hand():
    # one class, one variant, two seeds with constant episodes of IoU 0.5 and 0.3: the point is the
    # mean over seeds, 0.4; resampling the seeds gives 0.5, 0.4 or 0.3, so the CI is [0.3, 0.5]
    rows = _episodes("a", 1, 3, [(1, 2), (1, 2)]) + _episodes("a", 2, 3, [(3, 10), (3, 10), (3, 10)])
    ci = class_iou_ci(pd.DataFrame(rows), n_boot=2000).iloc[0]
    assert ci["iou"] == pytest.approx(0.4) and ci["episodes"] == 5
    assert (ci["low"], ci["high"]) == pytest.approx((0.3, 0.5))


def test_two_runs_of_one_cell_are_two_cells_not_repeated_episodes():
    """An experiment keeps the old and the new run of a cell whose key changed (a code change): the
    per-class CI takes each run as a cell of its own (as the main tables do) instead of failing on
    episode ids repeated within one cell."""
    rows = _episodes("a", 0, 1, [(1, 2), (1, 2)], run="old") + _episodes(
        "a", 0, 1, [(1, 4), (1, 4)], run="new"
    )
    ci = class_iou_ci(pd.DataFrame(rows), n_boot=200).iloc[0]
    # two cells of one seed, IoU 1/2 and 1/4, no variance within either: their mean, a zero-width CI
    assert ci["iou"] == pytest.approx(0.375) and ci["episodes"] == 4
    assert (ci["low"], ci["high"]) == pytest.approx((0.375, 0.375))


# ------------------------------------------------------------------ rescore_episodes alone


@pytest.mark.parametrize("protocol", ["fssam", "hsnet"])
def test_rescore_episodes_on_both_protocols(pascal_root, protocol):
    """Random masks at the scored size (the label's on fssam, 400 x 400 on hsnet): the counts, the
    boundary counts and the label-size area equal a recomputation from the raw labels."""
    from benchmark.data.prepared import PreparedDataset
    from benchmark.episodes import get_protocol
    from benchmark.episodes.manifests import ManifestRequest, build_manifest
    from benchmark.evaluation.loader import ImageStore, episode_target, scored_target
    from benchmark.evaluation.metrics import intersection_union
    from benchmark.evaluation.predictions import mask_to_rle
    from reports.rescore import RescoreMismatch, rescore_episodes

    m = build_manifest(get_protocol(protocol), ManifestRequest(pascal_root, 0, 1, episodes=5))
    rng = np.random.default_rng(1)
    preds, rows, expected = [], [], []
    for ep in m.episodes:
        label = read_label(pascal_root / m.images[ep.query][1])
        target = scored_target(episode_target(label, ep.cls), m.evaluation)
        assert target.shape == ((400, 400) if protocol == "hsnet" else label.shape)
        mask = rng.random(target.shape) < rng.uniform(0.1, 0.9)
        rle = mask_to_rle(mask)
        preds.append(
            {"episode": ep.id, "height": mask.shape[0], "width": mask.shape[1], "counts": rle["counts"]}
        )
        rows.append((ep.id, ep.cls, *intersection_union(mask, target)))
        expected.append((*_reference_counts(mask, target), int((label == ep.cls).sum())))
    predictions = pd.DataFrame(preds)
    table = pd.DataFrame(rows, columns=["episode", "class", "I_bg", "U_bg", "I_fg", "U_fg"])
    store = ImageStore(PreparedDataset(pascal_root))
    got = rescore_episodes(m, store, predictions, table, "r1")
    assert got[["episode", "class", "I_bg", "U_bg", "I_fg", "U_fg"]].equals(table)
    assert list(got[["I_bd", "U_bd", "area"]].itertuples(index=False, name=None)) == expected
    wrong = table.assign(U_bg=table["U_bg"] + 1)
    with pytest.raises(RescoreMismatch, match=f"run r1, episode {m.episodes[0].id}: the stored prediction"):
        rescore_episodes(m, store, predictions, wrong, "r1")
    small = predictions.assign(height=predictions["height"] - 1)
    with pytest.raises(RescoreMismatch, match="stored mask is"):
        rescore_episodes(m, store, small, table, "r1")
