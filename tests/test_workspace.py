"""The workspace (one place for the cache, pool, stages, hashes, locks and cell folders) and the
one function that records a cell's outcome in MLflow."""

from types import SimpleNamespace

import numpy as np
import pytest
from filelock import Timeout
from PIL import Image

from benchmark.errors import FssBenchError
from benchmark.records.cells import CellOutcome, record_outcome
from benchmark.records.tracking import CELL_KEY_TAG, Tracker
from benchmark.specs.study import CacheSettings
from benchmark.workspace import Workspace


def test_a_worker_rebuilds_the_drivers_workspace_from_its_settings(tmp_path):
    driver = Workspace.for_study(
        CacheSettings(stages_gb=0.5), tmp_path / "work", memory_cache_bytes=1 << 20, cache_max_bytes=1 << 30
    )
    worker = Workspace(**driver.settings())
    assert worker.work_dir == driver.work_dir == (tmp_path / "work").absolute()
    assert worker.cache.directory == driver.cache.directory == driver.work_dir / "feature-cache"
    assert (worker.cache.memory_bytes, worker.cache.max_disk_bytes) == (1 << 20, 1 << 30)
    assert worker.stages is not None and worker.stages_bytes == driver.stages_bytes == 1 << 29
    assert worker.hashes.path == driver.work_dir / "checkpoint-hashes.json"


def test_no_cache_turns_off_the_feature_cache_and_the_shared_stages_everywhere(tmp_path):
    driver = Workspace.for_study(CacheSettings(stages_gb=1.0), tmp_path, use_cache=False)
    assert not driver.cache.enabled and driver.stages is None
    worker = Workspace(**driver.settings())
    assert worker.cache.directory is None and not worker.cache.enabled and worker.stages is None


def test_cell_folders_and_locks_are_named_by_the_cell_key(tmp_path):
    key = "0123456789abcdef0123456789abcdef"
    ws, other = Workspace(tmp_path), Workspace(tmp_path)
    assert ws.journal_path(key) == tmp_path / "cells" / key[:20] / "episodes.jsonl"
    assert ws.artifacts_dir(key).parent == ws.cell_dir(key)
    # another process (or engine, or trial) on the same folder waits
    with ws.cell_lock(key), pytest.raises(Timeout):
        other.cell_lock(key).acquire(timeout=0)
    with other.cell_lock(key):  # released: free again
        pass


def test_images_are_checked_once_and_a_corrupt_one_is_named(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a.jpg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "a.png")
    ws = Workspace(tmp_path / "work")
    ws.check_images([(SimpleNamespace(images={"a": ("a.jpg", "a.png")}), root)])  # a manifest's images
    assert (tmp_path / "work" / "images-checked.json").is_file()
    (root / "b.jpg").write_bytes(b"not a jpeg")
    (root / "b.png").write_bytes((root / "a.png").read_bytes())
    with pytest.raises(FssBenchError, match="b.jpg"):
        ws.check_images([(SimpleNamespace(images={"a": ("a.jpg", "a.png"), "b": ("b.jpg", "b.png")}), root)])


def test_one_function_records_a_finished_and_a_killed_cell(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment_id("records")
    parent = tracker.start_parent(exp, "parent", {}, {})
    done = tracker.start_cell(exp, parent, "done", {"p": 1}, {CELL_KEY_TAG: "k1"})
    artifact = tmp_path / "note.txt"
    artifact.write_text("x")
    record_outcome(tracker, done, CellOutcome.finished({"miou": 0.25}, [(artifact, "extra")], "cpu-rss"))
    run = tracker.client.get_run(done)
    assert run.info.status == "FINISHED" and run.data.metrics == {"miou": 0.25}
    assert run.data.tags["fss.peak_mem_kind"] == "cpu-rss" and run.data.tags["fss.logged"] == "true"
    assert [a.path for a in tracker.client.list_artifacts(done, "extra")] == ["extra/note.txt"]
    killed = tracker.start_cell(exp, parent, "killed", {"p": 2}, {CELL_KEY_TAG: "k2"})
    record_outcome(tracker, killed, CellOutcome.failed("interrupted", status="KILLED"))
    run = tracker.client.get_run(killed)
    assert run.info.status == "KILLED" and run.data.tags["fss.error"] == "interrupted"
    assert not run.data.metrics


def test_the_study_s_disk_cache_bound_holds_for_runs_and_searches_alike(pascal_root, tmp_path):
    """``cache.max_gb`` bounds the disk cache of every job built on the study (the search used to
    ignore it); an explicit bound (``--cache-max-gb``) wins."""
    from benchmark.jobs.search import SearchRunner
    from benchmark.specs.search import parse_search
    from tests.helpers import floor_search

    bounded = CacheSettings(max_gb=0.5)
    assert Workspace.for_study(bounded, tmp_path).cache.max_disk_bytes == 1 << 29
    assert Workspace.for_study(bounded, tmp_path, cache_max_bytes=1 << 20).cache.max_disk_bytes == 1 << 20
    assert Workspace.for_study(CacheSettings(), tmp_path).cache.max_disk_bytes is None
    raw = floor_search(pascal_root)
    raw["study"]["cache"] = {"max_gb": 0.25}
    spec = parse_search(raw, "s.yaml")
    runner = SearchRunner(spec, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", work_dir=tmp_path / "w")
    assert runner.workspace.cache.max_disk_bytes == 1 << 28
