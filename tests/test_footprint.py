"""``fssbench profile --footprint``: one run of a study, measured (wall, RSS, harness, store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.jobs.profile.footprint import (
    PeakRSS,
    folder_bytes,
    harness_by_variant,
    harness_split,
    store_counts,
)
from benchmark.specs.study import load_study

GRID = Path(__file__).resolve().parents[1] / "ablations" / "scale"


def test_peak_rss_sees_a_short_lived_allocation():
    import mmap
    import time

    size = 64 * 2**20
    with PeakRSS(interval=0.005) as rss:
        block = mmap.mmap(-1, size)  # fresh pages (a heap allocation could reuse resident ones)
        block.write(b"\1" * size)  # touched: resident now
        time.sleep(0.1)
        block.close()
    assert rss.peak - rss.start >= 60 * 2**20


def test_store_counts_match_what_was_logged(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("x", artifact_location=(tmp_path / "art").as_uri())
    for r in range(2):
        run = client.create_run(exp, tags={"t": "1"})
        for p in ("a", "b", "c"):
            client.log_param(run.info.run_id, p, r)
        client.log_metric(run.info.run_id, "m", 1.0, step=0)
        client.log_metric(run.info.run_id, "m", 2.0, step=1)
        client.log_metric(run.info.run_id, "n", 1.0)
    counts = store_counts(tmp_path / "mlflow.db")
    # 2 runs x 3 params; 2 metrics per run (latest values), 3 logged points per run
    assert counts["runs"] == 2 and counts["params"] == 6
    assert counts["metrics"] == 4 and counts["metric_points"] == 6
    assert counts["tags"] >= 2  # ours, and MLflow's own (run name, user...)


def test_folder_bytes_counts_files_not_links(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"12345")
    (tmp_path / "y").write_bytes(b"123")
    (tmp_path / "link").symlink_to(tmp_path / "y")
    assert folder_bytes(tmp_path) == (8, 2)
    assert folder_bytes(tmp_path / "missing") == (0, 0)


def test_harness_is_the_cells_time_less_the_model():
    import pandas as pd

    cells = pd.DataFrame(
        [
            {"status": "run", "episodes_run": 10, "seconds": 1.0, "episode_path_s": 0.5, "encode_s": 0.1},
            {"status": "run", "episodes_run": 30, "seconds": 2.0, "episode_path_s": 1.0, "encode_s": 0.2},
            {
                "status": "skipped (done)",
                "episodes_run": 0,
                "seconds": 5.0,
                "episode_path_s": 0,
                "encode_s": 0,
            },
        ]
    )
    s = harness_split(cells)
    assert s["forwards"] == 40 and s["cells_s"] == 3.0
    assert np.isclose(s["model"], 1.8 / 40) and np.isclose(s["harness"], 1.2 / 40)
    assert np.isclose(s["model"] + s["harness"], s["per_forward"])
    cells["variant"] = ["b", "a", "b"]
    by = harness_by_variant(cells)
    assert list(by) == ["b", "a"]  # the cells' order; the skipped cell counts nowhere
    assert by["b"]["forwards"] == 10 and np.isclose(by["b"]["harness"], 0.4 / 10)
    assert by["a"]["forwards"] == 30 and np.isclose(by["a"]["harness"], 0.8 / 30)


def test_the_scale_grid_runs_and_is_measured(pascal_root, tmp_path, capsys):
    from benchmark.jobs.profile.footprint import measure_footprint, print_footprint

    study = load_study(
        GRID / "pascal-grid.yaml", [f"data.pascal={pascal_root}", "folds=[0]", "shots=[1]", "episodes=2"]
    )
    assert len(study.variants) == 8 and {v.method for v in study.variants} == {
        "mean_colour",
        "all_foreground",
    }
    r = measure_footprint(study, tmp_path / "fp", progress=False)
    assert r["cells"] == 8 and r["failed"] == 0 and r["split"]["forwards"] == 8 * 2
    assert r["store"]["runs"] == 8 + 1  # a child run per cell under the invocation's parent
    assert r["cache"] == []  # the reference methods' pixels are never cached
    assert r["rss_peak"] >= r["rss_start"] > 0 and r["artifacts"] > 0
    assert not list((tmp_path / "fp").iterdir())  # the throwaway folder is gone
    print_footprint(study, r)
    out = capsys.readouterr().out
    assert "harness per episode" in out and "9 runs" in out
    assert all(f"  {v.name}: harness " in out for v in study.variants)  # a line per variant


def test_cache_bytes_per_image_are_the_feature_shapes(pascal_root, tmp_path):
    from benchmark.jobs.profile.footprint import cache_bytes_per_image

    study = load_study(
        Path(__file__).resolve().parents[1] / "ablations" / "demo.yaml",
        [f"data.pascal={pascal_root}", "model.image_size=128", "model.dinov2_input_size=112"],
    )
    table = cache_bytes_per_image(study, tmp_path).set_index("encoder")
    # SAM 2 at S = 128: the FPN levels (32, S/4, S/4), (64, S/8, S/8), (256, S/16, S/16)
    sam2 = (32 * 32 * 32 + 64 * 16 * 16 + 256 * 8 * 8) / 2**20
    # DINOv2-S/14 at 112: 8 x 8 patch tokens of 384 channels
    dino = 384 * 8 * 8 / 2**20
    (s,) = [e for e in table.index if e.startswith("sam2")]
    (d,) = [e for e in table.index if e.startswith("dinov2")]
    for enc, floats in ((s, sam2), (d, dino)):
        assert floats * 4 <= table.loc[enc, "fp32"] < floats * 4 + 0.01  # + the safetensors header
        assert floats * 2 <= table.loc[enc, "bf16"] < floats * 2 + 0.01
    assert table.loc[s, "variants"].split(", ") == [v.name for v in study.variants]
    assert "naive-sam2" not in table.loc[d, "variants"]
