"""The protocol effect: the same variants run under several protocols and scorings (one study file
and one experiment each), read together by `fssbench report`, paired by class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.jobs.run import StudyRunner
from benchmark.specs.study import load_study
from reports.collect import ExperimentData
from reports.protocol_effect import paired_class_bootstrap
from reports.references import Reference
from reports.scoring import Scoring
from reports.tables import main_table

# ------------------------------------------------------------------------ the bootstrap, by hand


def test_two_classes_give_the_two_differences_as_the_ci():
    # one fold, classes with differences a and b: a resample of 2 classes has mean a, (a+b)/2 or b
    # with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5% percentiles are a and b
    res = paired_class_bootstrap({0: np.array([0.1, 0.3])}, n_boot=4000)
    assert res["diff"] == pytest.approx(0.2) and res["classes"] == 2
    assert (res["low"], res["high"]) == (pytest.approx(0.1), pytest.approx(0.3))
    assert res["excludes_zero"]


def test_folds_are_averaged_and_resampled_separately():
    # constant differences within each fold: no spread, and the point is the mean of the fold means
    # (0.1 and 0.3 -> 0.2), not the mean over the 5 classes pooled (0.22)
    res = paired_class_bootstrap({0: np.array([0.1, 0.1]), 1: np.array([0.3, 0.3, 0.3])}, n_boot=500)
    assert res["diff"] == pytest.approx(0.2)
    assert res["low"] == pytest.approx(0.2) and res["high"] == pytest.approx(0.2)
    zero = paired_class_bootstrap({0: np.array([-0.1, 0.1])}, n_boot=2000)
    assert zero["low"] == pytest.approx(-0.1) and not zero["excludes_zero"]


def test_many_classes_give_the_normal_approximation():
    rng = np.random.default_rng(3)
    d = rng.normal(0.05, 0.1, 400)
    res = paired_class_bootstrap({0: d}, n_boot=4000)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    assert res["high"] - res["low"] == pytest.approx(2 * half, rel=0.1)
    assert (res["low"] + res["high"]) / 2 == pytest.approx(d.mean(), abs=0.2 * half)


# ------------------------------------------------------------------------ published rows and scoring


def test_a_published_number_is_compared_only_with_cells_scored_the_same_way():
    hsnet1024, fssam = Scoring("hsnet", "resized", 1024), Scoring("fssam", "original")

    def cells(scorings: dict[str, Scoring]) -> pd.DataFrame:
        rows = []
        for name, scoring in scorings.items():
            for f, m in enumerate([0.70, 0.76, 0.68, 0.74]):
                rows.append(
                    {
                        "variant": name,
                        "base_variant": "gfsam",
                        "scoring": scoring,
                        "dataset": "pascal",
                        "shot": 1,
                        "fold": f,
                        "seed": 0,
                        "miou": m + (0.01 if scoring == fssam else 0.0),
                        "run_id": f"{name}{f}",
                        "study": "s",
                        "random_init": False,
                        "manifest_sha256": f"{name}{f}",
                        "weights": ["w"],
                    }
                )
        return pd.DataFrame(rows)

    ref = Reference(
        "GF-SAM", "gfsam", "pascal", 1, "miou", 72.31, "logs", hsnet1024, (71.12, 75.70, 69.17, 73.25)
    )
    # the experiment ran gfsam under both: the published row goes with gfsam@hsnet-1024
    both = ExperimentData(
        "e", "1", cells({"gfsam@fssam-original": fssam, "gfsam@hsnet-1024": hsnet1024}), pd.DataFrame()
    )
    t = main_table(both, "pascal", "miou", [ref])
    assert t.rows[-2:] == ["GF-SAM (published)", "gfsam@hsnet-1024 − published"]
    cols = {c: t.columns.index(("1-shot", c)) for c in ("fold0", "fold1", "mean")}
    assert t.cells[-2][cols["fold0"]] == "71.1" and t.cells[-2][cols["mean"]] == "72.3"
    # ours: 70, 76, 68, 74 (mean 72.0); by hand: 70 - 71.12, 76 - 75.70, 72.0 - 72.31
    assert t.values[-1][cols["fold0"]] == pytest.approx(70 - 71.12)
    assert t.values[-1][cols["fold1"]] == pytest.approx(76 - 75.70)
    assert t.values[-1][cols["mean"]] == pytest.approx(72.0 - 72.31)
    assert any("protocol hsnet, scored at 1024 px" in f for f in t.footer)
    # only the suite's scoring: the number is shown, not compared, and the footer says why
    one = ExperimentData("e", "1", cells({"gfsam": fssam}), pd.DataFrame())
    t = main_table(one, "pascal", "miou", [ref])
    assert t.rows == ["gfsam", "GF-SAM (published)"]
    note = next(f for f in t.footer if f.startswith("Published"))
    assert (
        "Not compared: ours protocol fssam, scored at the label's size, the published number protocol hsnet"
        in note
    )


# ------------------------------------------------------------------------ end to end

SCORINGS = {  # study file -> (protocol, eval)
    "fssam": ("fssam", None),
    "hsnet64": ("hsnet", {"resolution": "resized", "size": 64}),
}


def class_iou_by_hand(table: pd.DataFrame, classes: list[int]) -> dict[int, float]:
    out = {}
    for c in classes:
        sel = table[table["class"] == c]
        u = sel["U_fg"].sum()
        out[c] = sel["I_fg"].sum() / u if u else 0.0
    return out


@pytest.fixture(scope="module")
def protocol_study(pascal_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocols")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    for name, (protocol, ev) in SCORINGS.items():
        study = {
            "name": f"proto-{name}",
            "data": {"pascal": str(pascal_root)},
            "protocol": protocol,
            "folds": [0, 1],
            "shots": [1],
            "episodes": 4,
            "model": {"image_size": 64},
            "variants": {"colour": {"method": "mean_colour"}, "allfg": {"method": "all_foreground"}},
            **({"eval": ev} if ev else {}),
        }
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(study))
        StudyRunner(
            load_study(tmp / f"{name}.yaml"),
            tracking_uri=uri,
            work_dir=tmp / "w",
            progress=False,
            qualitative=0,
        ).run()
    experiments = [f"proto-{n}" for n in SCORINGS]
    code = main(
        [
            "-q",
            "report",
            "--experiment",
            *experiments,
            "--tracking-uri",
            uri,
            "--out",
            str(tmp / "out"),
            "--no-qualitative",
        ]
    )
    assert code == 0
    # per (variant, scoring, fold): the per-episode table and the manifest's classes, read back from
    # MLflow independently of the report code
    client = MlflowClient(uri)
    tables = {}
    for name in SCORINGS:
        exp = client.get_experiment_by_name(f"proto-{name}")
        for r in client.search_runs([exp.experiment_id], filter_string="tags.`fss.kind` = 'cell'"):
            t, rid = r.data.tags, r.info.run_id
            ep = pd.read_parquet(client.download_artifacts(rid, "episodes.parquet", str(tmp / "dl" / rid)))
            manifest = json.loads(
                Path(client.download_artifacts(rid, "manifest.json", str(tmp / "dl" / rid))).read_text()
            )
            tables[(t["fss.variant"], name, int(t["fss.fold"]))] = (ep, manifest["classes"])
    return tmp / "out", tables


def test_the_report_keeps_the_scorings_apart_and_names_them(protocol_study):
    out, tables = protocol_study
    main_md = (out / "tables" / "main-pascal-miou.md").read_text()
    for v in ("colour", "allfg"):
        for tag in ("fssam-original", "hsnet-64"):
            assert f"| {v}@{tag} |" in main_md
        assert f"| {v} |" not in main_md  # never one row for numbers scored differently
    cells = pd.read_csv(out / "cells.csv")
    assert set(cells["scoring"]) == {"fssam-original", "hsnet-64"}
    assert set(cells["base_variant"]) == {"colour", "allfg"}


def test_the_protocol_effect_is_the_class_paired_difference(protocol_study):
    out, tables = protocol_study
    csv = pd.read_csv(out / "tables" / "protocol-effect-pascal-1shot.csv", index_col=0)
    assert set(csv.index) == {"colour", "allfg"}
    md = (out / "tables" / "protocol-effect-pascal-1shot.md").read_text()
    assert "Δ against fssam-original (paired by class)" in md and "resampled within each fold" in md
    for v in ("colour", "allfg"):
        ious = {}
        for name in SCORINGS:
            per_fold = {}
            for f in (0, 1):
                ep, classes = tables[(v, name, f)]
                per_fold[f] = class_iou_by_hand(ep, classes)
            ious[name] = per_fold
        fold_miou = {n: [np.mean(list(ious[n][f].values())) for f in (0, 1)] for n in SCORINGS}
        assert csv.loc[v, "fssam-original_miou_pct"] == pytest.approx(100 * np.mean(fold_miou["fssam"]))
        for name, tag in (("hsnet64", "hsnet-64"),):
            diffs = {
                f: np.array([ious[name][f][c] - ious["fssam"][f][c] for c in ious["fssam"][f]])
                for f in (0, 1)
            }
            want = np.mean([d.mean() for d in diffs.values()])
            # every fold has all its classes: the class-paired difference is the difference of the means
            assert want == pytest.approx(np.mean(fold_miou[name]) - np.mean(fold_miou["fssam"]))
            assert csv.loc[v, f"{tag}_miou_pct"] == pytest.approx(100 * np.mean(fold_miou[name]))
            assert csv.loc[v, f"{tag}_delta_pts"] == pytest.approx(100 * want, abs=1e-9)
            ci = paired_class_bootstrap(diffs)
            assert csv.loc[v, f"{tag}_ci_low_pts"] == pytest.approx(100 * ci["low"], abs=1e-9)
            assert csv.loc[v, f"{tag}_ci_high_pts"] == pytest.approx(100 * ci["high"], abs=1e-9)
            assert ci["low"] <= want <= ci["high"]


def test_a_cell_two_experiments_hold_counts_once(protocol_study, tmp_path):
    from benchmark.records.tracking import Tracker
    from reports.collect import collect_experiments

    out, tables = protocol_study
    tracker = Tracker(f"sqlite:///{out.parent / 'mlflow.db'}", create=False)
    once = collect_experiments(tracker, ["proto-fssam"], tmp_path / "a")
    twice = collect_experiments(tracker, ["proto-fssam", "proto-fssam"], tmp_path / "b")
    assert len(once.cells) == 4  # 2 variants x 2 folds, read back independently below
    assert len(twice.cells) == len(once.cells) and len(twice.per_class) == len(once.per_class)
    assert sorted(twice.cells["variant"]) == sorted(once.cells["variant"])  # one scoring: names kept
    assert sum(1 for (v, name, f) in tables if name == "fssam") == len(once.cells)
