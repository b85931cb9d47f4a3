"""The cell function and the local engine around it: keys before models, skipping without loading,
failure isolation, a second implementation of one cell's numbers, bounded memory."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

import benchmark.methods.registry as registry
from baselines.naive_sam2 import NaiveSAM2
from baselines.trivial import mean_colour
from benchmark.cli import main
from benchmark.data.images import read_label
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import save_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.cell import (
    CellSpec,
    CheckpointHashes,
    PeakMemory,
    cell_key,
    code_files,
    evaluate_cell,
)
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.loader import LRU, ImageStore
from benchmark.jobs.run import StudyRunner
from benchmark.methods import FewShotMethod, MethodEntry, build_method, get_method, register
from benchmark.methods.reference import ReferencePredictor
from benchmark.specs.study import load_study
from fssam import FSSAM
from tests.helpers import TINY


def write_study(folder: Path, root: Path, variants: dict, model: dict | None = None, **kw) -> Path:
    d = {"name": kw.pop("name", "cells"), "data": {"pascal": str(root)}, "folds": [0], "shots": [1]}
    d |= {"episodes": 4, "model": model if model is not None else TINY, "variants": variants, **kw}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return list(client.search_runs([exp.experiment_id], max_results=1000))


# ------------------------------------------------------------------------------------- interface


def test_every_method_satisfies_the_protocol():
    fssam = build_method("fssam", get_method("fssam").resolve(TINY), torch.device("cpu"))
    naive_entry = get_method("naive_sam2")
    naive_settings = naive_entry.resolve({k: v for k, v in TINY.items() if k in naive_entry.defaults})
    naive = build_method("naive_sam2", naive_settings, torch.device("cpu"))
    ref = build_method("mean_colour", {"image_size": 64}, torch.device("cpu"))
    assert isinstance(fssam, FSSAM) and isinstance(naive, NaiveSAM2) and isinstance(ref, ReferencePredictor)
    for m in (fssam, naive, ref):
        assert isinstance(m, FewShotMethod)
    assert set(fssam.encoders) == {"sam2", "dino"} and set(naive.encoders) == {"sam2"}
    # the baseline and FSSAM share SAM 2's image encoder identity, hence cached features
    assert fssam.encoders["sam2"].identity() == naive.encoders["sam2"].identity()


def test_each_method_validates_its_own_switches(pascal_root, tmp_path):
    study = write_study(tmp_path, pascal_root, {"naive": {"method": "naive_sam2", "imr_iters": 2}})
    with pytest.raises(
        Exception, match=r"variants\.naive\.imr_iters: unknown switch for method 'naive_sam2'"
    ):
        load_study(study)
    # a model-level default only some methods accept goes to those methods only
    study = write_study(
        tmp_path, pascal_root, {"fssam": {}, "naive": {"method": "naive_sam2"}}, {**TINY, "imr_iters": 1}
    )
    s = load_study(study)
    assert s.variants[0].settings["imr_iters"] == 1 and "imr_iters" not in s.variants[1].settings
    assert s.variants[1].settings["round_memory_to_bf16"] is True  # defaults are filled in
    study = write_study(tmp_path, pascal_root, {"fssam": {}}, {**TINY, "imr_iter": 1})
    with pytest.raises(Exception, match=r"model\.imr_iter: unknown setting for every method"):
        load_study(study)


# ------------------------------------------------------------------------------------ cell keys


def test_checkpoint_hashes_are_cached_by_path_size_and_mtime(tmp_path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"weights v1")
    store = tmp_path / "hashes.json"
    h = CheckpointHashes(store)
    assert h.sha256(ckpt) == hashlib.sha256(b"weights v1").hexdigest() and h.computed == 1
    again = CheckpointHashes(store)  # a later process
    assert again.sha256(ckpt) == hashlib.sha256(b"weights v1").hexdigest() and again.computed == 0
    ckpt.write_bytes(b"weights v2 (changed)")
    os.utime(ckpt, ns=(1, 1))
    assert again.sha256(ckpt) == hashlib.sha256(b"weights v2 (changed)").hexdigest() and again.computed == 1


def test_cell_key_covers_what_changes_numbers_and_nothing_else(tmp_path):
    settings = get_method("fssam").resolve(TINY)
    spec = CellSpec("fssam", settings, tmp_path / "m.json", tmp_path, "cpu")
    base = cell_key(spec, "a" * 64, {"sam2": "s", "dinov2": "d"})

    def key(**kw):
        s = dataclasses.replace(spec, settings={**settings, **kw.pop("settings", {})}, **kw)
        return cell_key(s, kw.get("manifest", "a" * 64), {"sam2": "s", "dinov2": "d"})

    assert key(settings={"imr_iters": 2}) != base
    assert key(settings={"scma_scale": 5.0}) != base
    assert cell_key(spec, "b" * 64, {"sam2": "s", "dinov2": "d"}) != base  # another manifest
    assert cell_key(spec, "a" * 64, {"sam2": "s2", "dinov2": "d"}) != base  # other weights
    # not: where the checkpoint lies, the device name, the requested precision when the effective one is equal
    assert key(settings={"sam2_checkpoint": "/elsewhere/same-file.pt"}) == base
    assert key(device="auto") == base if not torch.cuda.is_available() else True
    assert key(settings={"precision": "fp32"}) == base if not torch.cuda.is_available() else True
    names = {str(f.relative_to(Path(__file__).resolve().parents[1])) for f in code_files()}
    assert (
        "fssam/model.py" in names
        and "benchmark/evaluation/metrics.py" in names
        and "benchmark/evaluation/loader.py" in names
    )
    assert "fssam/train.py" not in names and not any(
        n.startswith(("benchmark/jobs/", "benchmark/engines/")) for n in names
    )  # cannot change a prediction


# ---------------------------------------------------------------------------- skipping and resume


@pytest.fixture(scope="module")
def finished_study(pascal_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    study = write_study(tmp, pascal_root, {"fssam": {}, "naive": {"method": "naive_sam2"}})
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    StudyRunner(
        load_study(study), tracking_uri=uri, work_dir=tmp / "work", progress=False, qualitative=0
    ).run()
    return tmp, study, uri


def test_rerun_of_a_finished_study_builds_no_model_and_starts_no_run(finished_study, monkeypatch):
    tmp, study, uri = finished_study
    before = runs(uri, "cells")

    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell built a model")

    # every way to a model fails (the registry entries stay as they are: they are part of the key)
    import fssam.dinov2
    import fssam.sam2_adapter

    monkeypatch.setattr(fssam.sam2_adapter, "build_sam2_model", refuse)
    monkeypatch.setattr(fssam.dinov2, "build_dinov2", refuse)
    monkeypatch.setattr(FSSAM, "__init__", refuse)
    monkeypatch.setattr(NaiveSAM2, "__init__", refuse)
    said = []
    runner = StudyRunner(
        load_study(study), tracking_uri=uri, work_dir=tmp / "work", progress=False, log=said.append
    )
    cells = runner.run()
    assert list(cells["status"]) == ["skipped (done)"] * 2
    assert said == ["2 of 2 cells already finished, skipped"]
    assert runner.cache.stats.misses == 0 and runner.hashes.computed == 0
    assert len(runs(uri, "cells")) == len(before)  # no empty parent run


def test_evaluate_cell_resumes_from_its_journal_without_counting_twice(pascal_root, tmp_path):
    manifest = build_manifest(
        get_protocol("fssam"), ManifestRequest(pascal_root, 0, 1, seed=321, episodes=6, dataset="pascal")
    )
    path = tmp_path / "m.json"
    save_manifest(manifest, path)
    spec = CellSpec("mean_colour", {"image_size": 64}, path, pascal_root, "cpu", "ref")
    whole = evaluate_cell(spec, FeatureCache(None))
    journal = tmp_path / "j.jsonl"
    seen = []

    def stop_after_two(done, total):
        seen.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_cell(spec, FeatureCache(None), journal_path=journal, on_episode=stop_after_two)
    starts = []
    resumed = evaluate_cell(
        spec, FeatureCache(None), journal_path=journal, on_start=lambda d, t: starts.append((d, t))
    )
    assert starts == [(2, 6)] and resumed.episodes_run == 4 and resumed.episodes_resumed == 2
    assert resumed.table.equals(whole.table) and resumed.summary["miou"] == whole.summary["miou"]


def test_evaluate_cell_matches_a_second_implementation(pascal_root, tmp_path):
    """mean_colour through the harness == the same episodes scored here from the raw files."""
    manifest = build_manifest(
        get_protocol("fssam"), ManifestRequest(pascal_root, 0, 5, seed=321, episodes=5, dataset="pascal")
    )
    path = tmp_path / "m.json"
    save_manifest(manifest, path)
    result = evaluate_cell(
        CellSpec("mean_colour", {"image_size": 96}, path, pascal_root, "cpu"), FeatureCache(None)
    )
    ds = PreparedDataset(pascal_root)

    def img(rel):
        x = torch.from_numpy(np.array(Image.open(pascal_root / rel).convert("RGB"))).permute(2, 0, 1)
        return F.interpolate(x[None].float(), size=(96, 96), mode="bilinear", align_corners=False)[0]

    for ep, row in zip(manifest.episodes, result.table.itertuples(), strict=True):
        q_img, q_lab = manifest.images[ep.query]
        label = ds.load_label(q_lab)
        sup = torch.stack([img(manifest.images[s][0]) for s in ep.supports])
        masks = []
        for s in ep.supports:
            lab = torch.from_numpy(ds.load_label(manifest.images[s][1]).astype(np.int64))
            m = torch.where(lab == 255, 255, (lab == ep.cls).long()).float()
            masks.append(F.interpolate(m[None, None], size=(96, 96), mode="nearest")[0, 0].long())
        logits = mean_colour(img(q_img)[None], sup[None], torch.stack(masks)[None])[0]
        up = F.interpolate(logits[None, None], size=label.shape, mode="bilinear", align_corners=True)[0, 0]
        pred, valid = up.numpy() >= 0, label != 255
        fg = label == ep.cls
        assert row.I_fg == int((pred & fg & valid).sum()) and row.U_fg == int(((pred | fg) & valid).sum())
        assert row.I_bg == int((~pred & ~fg & valid).sum()) and row.U_bg == int(((~pred | ~fg) & valid).sum())


# ----------------------------------------------------------------------------- failure isolation


FAIL = {"on": True}


def _explodes(settings, ctx):
    def fn(query, supports, masks):
        if FAIL["on"]:
            raise RuntimeError("boom: a synthetic failure")
        return mean_colour(query, supports, masks)

    return ReferencePredictor(fn, int(settings["image_size"]), ctx.device)


@pytest.fixture
def explodes(monkeypatch):
    """A new method is one entry plus one registration (here: one that fails while FAIL is on)."""
    entry = MethodEntry("explodes", "fails on purpose", {"image_size": 64}, _explodes, lambda s: {})
    monkeypatch.setitem(registry._REGISTRY, "explodes", entry)
    FAIL["on"] = True
    assert register(entry) is entry  # registering the same entry again is harmless
    return entry


def test_a_failing_cell_is_recorded_and_the_study_goes_on(pascal_root, tmp_path, explodes, capsys):
    variants = {"bad": {"method": "explodes"}, "ok": {"method": "mean_colour", "image_size": 64}}
    study = write_study(tmp_path, pascal_root, variants, model={}, name="fail")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["-q", "run", str(study), "--work-dir", str(tmp_path / "work"), "--tracking-uri", uri]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 cell(s) FAILED" in err and "bad/pascal/fold0/1shot/seed321: RuntimeError: boom" in err
    by_variant = {r.data.tags.get("fss.variant"): r for r in runs(uri, "fail")}
    assert by_variant["bad"].info.status == "FAILED" and "boom" in by_variant["bad"].data.tags["fss.error"]
    assert by_variant["ok"].info.status == "FINISHED"
    assert by_variant[None].info.status == "FAILED"  # the parent says the study had failures
    # the cause fixed, a rerun retries only the failed cell; it ends with exactly one run
    FAIL["on"] = False
    assert main(args) == 0
    cells = [r for r in runs(uri, "fail") if r.data.tags.get("fss.kind") == "cell"]
    assert sorted((r.data.tags["fss.variant"], r.info.status) for r in cells) == [
        ("bad", "FINISHED"),
        ("ok", "FINISHED"),
    ]


def test_fail_fast_stops_at_the_first_failure(pascal_root, tmp_path, explodes):
    variants = {"bad": {"method": "explodes"}, "ok": {"method": "mean_colour", "image_size": 64}}
    study = write_study(tmp_path, pascal_root, variants, model={}, name="fast")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (
        main(
            ["-q", "run", str(study), "--work-dir", str(tmp_path / "w"), "--tracking-uri", uri, "--fail-fast"]
        )
        == 2
    )
    cells = [r for r in runs(uri, "fast") if r.data.tags.get("fss.kind") == "cell"]
    assert [(r.data.tags["fss.variant"], r.info.status) for r in cells] == [("bad", "FAILED")]


def test_an_unreadable_image_fails_before_any_run_naming_the_file(pascal_root, tmp_path):
    root = tmp_path / "pascal"
    shutil.copytree(pascal_root, root, symlinks=False)
    manifest = build_manifest(
        get_protocol("fssam"), ManifestRequest(root, 0, 1, seed=321, episodes=4, dataset="pascal")
    )
    bad = manifest.images[manifest.episodes[0].query][0]
    (root / bad).write_bytes(b"\xff\xd8 not a jpeg")
    study = write_study(
        tmp_path, root, {"ref": {"method": "mean_colour", "image_size": 64}}, model={}, name="img"
    )
    runner = StudyRunner(
        load_study(study),
        tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
        work_dir=tmp_path / "w",
        progress=False,
        log=lambda *a: None,
    )
    with pytest.raises(FssBenchError, match=re.escape(str(root / bad)) + ".*fssbench data check"):
        runner.run()
    assert not (tmp_path / "m.db").exists()  # found before the store was created
    # the good files are remembered: a second check decodes only what changed
    from benchmark.data.image_check import check_files

    (root / bad).write_bytes((pascal_root / bad).read_bytes())
    pairs = [(root / i, root / lab) for i, lab in manifest.images.values()]
    assert check_files(pairs, tmp_path / "w" / "images-checked.json") == 1


# ---------------------------------------------------------------------------------------- memory


def test_peak_memory_is_the_growth_during_the_block_not_the_process_maximum():
    big = np.ones(300 * 2**20 // 8)  # 300 MiB, freed before the measured block
    del big
    with PeakMemory(torch.device("cpu")) as small:
        x = np.ones(2**20)
        del x
    with PeakMemory(torch.device("cpu")) as large:
        y = np.ones(200 * 2**20 // 8)  # 200 MiB
        y[::512] = 2.0
        import time

        time.sleep(0.05)
        del y
    assert small.kind == "rss_growth"
    sizes = (small.peak_bytes / 2**20, large.peak_bytes / 2**20)
    # the 300 MiB spike before the block is not counted (the process maximum would include it); the
    # margin leaves room for pages a loaded machine swaps back in during the block
    assert small.peak_bytes < 250 * 2**20 and large.peak_bytes >= 150 * 2**20, f"MiB: {sizes}"


def test_label_and_hash_memos_are_bounded(pascal_root):
    labels = sorted(
        p.relative_to(pascal_root).as_posix() for p in (pascal_root / "SegmentationClassAug").glob("*.png")
    )
    arrays = [read_label(pascal_root / rel) for rel in labels[:10]]
    budget = sum(a.nbytes + 100 for a in arrays[7:10])  # room for the last three decoded labels
    store = ImageStore(PreparedDataset(pascal_root), max_label_bytes=budget)
    for rel in labels[:10]:
        store.label(rel)
    assert store.raw_labels.used <= budget and store.cache.used == 0  # decoded labels apart
    assert [
        rel for rel in labels[:10] if any(k[0] == "label" and k[2] == rel for k in store.raw_labels._items)
    ] == labels[7:10]
    lru = LRU(2)
    lru.get_or_make("a", lambda: 1)
    lru.get_or_make("b", lambda: 2)
    lru.get_or_make("a", lambda: pytest.fail("recomputed"))  # a is now the most recent
    lru.get_or_make("c", lambda: 3)
    assert list(lru) == ["a", "c"]


def test_two_variants_with_the_same_cell_run_it_once(pascal_root, tmp_path):
    same = {"method": "mean_colour", "image_size": 64}
    study = write_study(tmp_path, pascal_root, {"a": same, "b": dict(same)}, model={}, name="twins")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cells = StudyRunner(load_study(study), tracking_uri=uri, work_dir=tmp_path / "w", progress=False).run()
    assert list(cells["status"]) == ["run", "skipped (done)"] and cells["cell_key"].nunique() == 1
    (run,) = [r for r in runs(uri, "twins") if r.data.tags.get("fss.kind") == "cell"]
    assert run.data.tags["fss.variant"] == "a" and run.data.tags["fss.also_variants"] == "b"
    # the reports count the one cell for both variants
    from benchmark.records.tracking import Tracker
    from reports.collect import collect_experiment

    data = collect_experiment(Tracker(uri, create=False), "twins", tmp_path / "dl")
    assert list(data.cells["variant"]) == ["a", "b"] and data.cells["run_id"].nunique() == 1
    assert set(data.per_class["variant"]) == {"a", "b"}


def test_a_failed_cell_shared_by_two_variants_fails_once(pascal_root, tmp_path, explodes):
    study = write_study(
        tmp_path, pascal_root, {"a": {"method": "explodes"}, "b": {"method": "explodes"}}, model={}
    )
    runner = StudyRunner(
        load_study(study),
        tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
        work_dir=tmp_path / "w",
        progress=False,
        log=lambda *a: None,
    )
    cells = runner.run()
    assert list(cells["status"]) == ["failed", "failed"] and len(runner.failures) == 1
    assert (
        len(
            [
                r
                for r in runs(f"sqlite:///{tmp_path / 'm.db'}", "cells")
                if r.data.tags.get("fss.kind") == "cell"
            ]
        )
        == 1
    )


def test_force_reruns_each_finished_cell_exactly_once(pascal_root, tmp_path):
    same = {"method": "mean_colour", "image_size": 64}
    study = write_study(tmp_path, pascal_root, {"a": same, "b": dict(same)}, model={}, name="force")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    first = StudyRunner(load_study(study), tracking_uri=uri, work_dir=tmp_path / "w", progress=False).run()
    again = StudyRunner(
        load_study(study), tracking_uri=uri, work_dir=tmp_path / "w", progress=False, force=True
    )
    cells = again.run()
    assert list(cells["status"]) == ["run", "skipped (done)"]  # the twin is not forced a second time
    finished = [r for r in runs(uri, "force") if r.data.tags.get("fss.kind") == "cell"]
    assert len(finished) == 1 and finished[0].info.run_id != first["run_id"].iloc[0]


def test_cell_key_covers_package_versions_and_a_user_methods_own_file(tmp_path, monkeypatch, explodes):
    import benchmark.evaluation.cell as cell

    spec = CellSpec("explodes", {"image_size": 64}, tmp_path / "m.json", tmp_path, "cpu")
    base = cell_key(spec, "a" * 64, {})
    assert cell.method_code_hash(explodes) == hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    assert cell.method_code_hash(get_method("fssam")) is None  # already in code_files()
    monkeypatch.setattr(cell, "number_package_versions", lambda: {"torch": "99.0"})
    assert cell_key(spec, "a" * 64, {}) != base


def test_redirected_output_has_no_nested_bars_or_store_creation_chatter(pascal_root, tmp_path, capfd):
    study = write_study(tmp_path, pascal_root, {"ref": {"method": "mean_colour", "image_size": 64}}, model={})
    uri = f"sqlite:///{tmp_path / 'new' / 'm.db'}"  # a store that does not exist yet
    assert main(["run", str(study), "--work-dir", str(tmp_path / "w"), "--tracking-uri", uri]) == 0
    out, err = capfd.readouterr()
    assert "\x1b[A" not in err and "ref/pascal/fold0/1shot/seed321:" not in err  # only the study bar
    assert "Creating initial MLflow database tables" not in err + out
    assert "mIoU (%)" in out
