"""`fssbench compare`: two experiments' same cells side by side, the difference checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.data.classes import novel_classes
from benchmark.jobs.run import StudyRunner
from benchmark.specs.study import load_study


def class_wise_miou(table: pd.DataFrame, classes: list[int]) -> float:
    ious = []
    for c in classes:
        sel = table[table["class"] == c]
        ious.append(sel["I_fg"].sum() / sel["U_fg"].sum() if sel["U_fg"].sum() else 0.0)
    return float(np.mean(ious))


def test_compare_two_experiments(pascal_root, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    for name, size in (("exp-a", 64), ("exp-b", 128)):  # "two code versions" of one variant
        d = {"name": name, "data": {"pascal": str(pascal_root)}, "folds": [0, 1], "shots": [1], "episodes": 6}
        d |= {"model": {}, "variants": {"ref": {"method": "mean_colour", "image_size": size}}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(d))
        StudyRunner(
            load_study(tmp_path / f"{name}.yaml"),
            tracking_uri=uri,
            work_dir=tmp_path / "w",
            progress=False,
            qualitative=0,
        ).run()
    out = tmp_path / "cmp"
    assert main(["compare", "exp-a", "exp-b", "--tracking-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # independent: per fold, class-wise mIoU of each from the per-episode tables, then the mean difference
    client = MlflowClient(uri)
    miou = {}
    for name in ("exp-a", "exp-b"):
        exp = client.get_experiment_by_name(name)
        for r in client.search_runs([exp.experiment_id], filter_string="tags.`fss.kind` = 'cell'"):
            fold = int(r.data.tags["fss.fold"])
            path = client.download_artifacts(r.info.run_id, "episodes.parquet", str(tmp_path / r.info.run_id))
            miou[(name, fold)] = class_wise_miou(pd.read_parquet(path), novel_classes("pascal", fold))
    diff = np.mean([miou[("exp-b", f)] - miou[("exp-a", f)] for f in (0, 1)])
    a_mean = np.mean([miou[("exp-a", f)] for f in (0, 1)])
    row = next(line for line in printed.splitlines() if line.startswith("| ref / pascal / 1-shot"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) == pytest.approx(100 * a_mean, abs=0.05)
    assert float(cells[3].rstrip(" *")) == pytest.approx(100 * diff, abs=0.05)
    low, high = (float(x) for x in cells[4].strip("[]").split(","))
    assert low <= 100 * diff + 0.05 and 100 * diff - 0.05 <= high and cells[5] == "2"
    assert (out / "compare-exp-a-vs-exp-b.tex").is_file() and (out / "compare-exp-a-vs-exp-b.csv").is_file()
    assert main(["compare", "exp-a", "--tracking-uri", uri]) == 2  # one experiment: nothing to compare
