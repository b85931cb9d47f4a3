"""Multi-seed numbers (BAM's seed draw, the bootstrap over seeds and episodes) and published rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.errors import FssBenchError
from benchmark.evaluation.metrics import MetricsError, miou, seed_bootstrap_ci
from benchmark.specs.study import bam_seeds
from reports.collect import ExperimentData
from reports.references import DEFAULT_REFERENCES, Reference, load_references
from reports.tables import main_table


def const_table(iou_by_class: dict[int, tuple[int, int]], per_class: int = 4) -> pd.DataFrame:
    """Episodes that are identical within each class: (I_fg, U_fg) per class, so no episode variance."""
    rows = [
        {"class": c, "I_bg": 5, "U_bg": 10, "I_fg": i, "U_fg": u}
        for c, (i, u) in iou_by_class.items()
        for _ in range(per_class)
    ]
    return pd.DataFrame([{"episode": n, **r} for n, r in enumerate(rows)])


def test_bam_seeds_are_numpys_draw_after_seeding_the_base():
    np.random.seed(123)
    assert (
        bam_seeds({"count": 5, "base": 123})
        == list(np.random.randint(0, 1000, 5))
        == [510, 365, 382, 322, 988]
    )
    assert bam_seeds([1, 2]) == [1, 2]
    with pytest.raises(FssBenchError, match="seeds: expected a list of integers or"):
        bam_seeds({"count": 5})


def test_seed_bootstrap_by_hand():
    # one fold per seed; seed A scores 0.5 (class 1: 5/10), seed B 0.25 (class 1: 1/4); no episode variance
    a, b = const_table({1: (5, 10)}), const_table({1: (1, 4)})
    res = seed_bootstrap_ci({1: [(a, [1])], 2: [(b, [1])]}, n_boot=2000)
    assert res["point"] == pytest.approx(0.375) and res["seeds"] == 2
    # resampling 2 seeds gives means 0.5, 0.375 or 0.25, each end with probability 1/4
    assert (res["low"], res["high"]) == (pytest.approx(0.25), pytest.approx(0.5))
    # one seed: only episode variance; a single-valued table has none
    one = seed_bootstrap_ci({1: [(a, [1])]}, n_boot=200)
    assert one["low"] == one["high"] == pytest.approx(0.5) == pytest.approx(miou(a, [1]))
    # two folds: the fold mean
    two = seed_bootstrap_ci({1: [(a, [1]), (b, [1])]}, n_boot=200)
    assert two["point"] == pytest.approx(0.375) and two["low"] == pytest.approx(0.375)


def test_references_file_is_validated_and_the_shipped_one_has_sources(tmp_path):
    refs = load_references(DEFAULT_REFERENCES)
    assert refs and all(r.source for r in refs)
    assert Reference("FSSAM", "fssam", "pascal", 1, "miou", 81.0, refs[0].source) in refs
    bad = tmp_path / "r.yaml"
    bad.write_text("- {method: X, variant: x, dataset: pascal, shot: 1, metric: miou, value: 1.0}\n")
    with pytest.raises(FssBenchError, match="entry 1: expected the fields"):
        load_references(bad)


def test_the_published_row_and_its_difference_on_four_folds():
    cells = pd.DataFrame(
        [
            {
                "variant": "fssam",
                "dataset": "pascal",
                "shot": 1,
                "fold": f,
                "seed": 321,
                "miou": m,
                "run_id": f"r{f}",
                "study": "s",
                "random_init": False,
                "manifest_sha256": f"m{f}",
                "weights": ["w"],
            }
            for f, m in enumerate([0.80, 0.84, 0.78, 0.82])
        ]
    )
    data = ExperimentData("e", "1", cells, pd.DataFrame())
    ref = Reference("FSSAM", "fssam", "pascal", 1, "miou", 81.0, "the paper")
    t = main_table(data, "pascal", "miou", [ref])
    assert t.rows == ["fssam", "FSSAM (published)", "fssam − published"]
    mean = t.columns.index(("1-shot", "mean"))
    assert t.cells[0][mean] == "81.0" and t.cells[1][mean] == "81.0" and t.cells[2][mean] == "0.0"
    ref2 = Reference("FSSAM", "fssam", "pascal", 1, "miou", 80.0, "the paper")
    assert main_table(data, "pascal", "miou", [ref2]).cells[2][mean] == "+1.0"
    assert not any(b for row in t.bold[1:] for b in row)  # published rows never take the bold
    assert main_table(data, "pascal", "miou", []).rows == ["fssam"]


def test_seeds_drawn_twice_in_a_resample_are_two_independent_episode_draws():
    # S seeds with the same table: the mean over S independent episode resamples has the spread of one
    # seed's resample divided by sqrt(S); reusing one resample for a seed drawn twice would give
    # sqrt((2S - 1) / S^2) (0.44 at S = 10, against 0.32)
    rng = np.random.default_rng(5)
    rows = []
    for n in range(60):
        u = int(rng.integers(20, 40))
        rows.append(
            {"episode": n, "class": 1, "I_bg": 5, "U_bg": 10, "I_fg": int(rng.integers(0, u + 1)), "U_fg": u}
        )
    table = pd.DataFrame(rows)
    one = seed_bootstrap_ci({0: [(table, [1])]}, n_boot=4000)
    many = seed_bootstrap_ci({s: [(table, [1])] for s in range(10)}, n_boot=4000)
    ratio = (many["high"] - many["low"]) / (one["high"] - one["low"])
    assert ratio == pytest.approx(1 / np.sqrt(10), abs=0.04)


def test_seeds_must_cover_the_same_folds():
    a = const_table({1: (5, 10)})
    with pytest.raises(MetricsError, match="every seed needs the same folds.*seed 2: 1 cells"):
        seed_bootstrap_ci({1: [(a, [1]), (a, [1])], 2: [(a, [1])]})


def test_a_main_table_whose_seeds_ran_different_folds_shows_no_std_or_ci():
    def cell(f: int, seed: int, m: float) -> dict:
        return {
            "variant": "fssam",
            "dataset": "pascal",
            "shot": 1,
            "fold": f,
            "seed": seed,
            "miou": m,
            "run_id": f"r{f}{seed}",
            "study": "s",
            "random_init": False,
            "manifest_sha256": f"m{f}",
            "weights": ["w"],
        }

    # seed 1 ran folds 0 and 1, seed 2 fold 0 only: their fold means are not comparable
    cells = pd.DataFrame([cell(0, 1, 0.8), cell(1, 1, 0.6), cell(0, 2, 0.7)])
    t = main_table(ExperimentData("e", "1", cells, pd.DataFrame()), "pascal", "miou", [])
    mean = t.columns.index(("1-shot", "mean (2 of 4 folds)"))
    # fold 0: (80 + 70) / 2 = 75, fold 1: 60; the mean of the fold values, with no ± and no CI
    assert t.cells[0][mean] == "67.5" and t.cells[0][mean + 1] == "–"
    assert any("the seeds ran different folds" in line for line in t.footer)


def test_on_fewer_than_four_folds_the_published_mean_has_a_column_of_its_own():
    cells = pd.DataFrame(
        [
            {
                "variant": "fssam",
                "dataset": "pascal",
                "shot": 1,
                "fold": 0,
                "seed": 321,
                "miou": 0.70,
                "run_id": "r0",
                "study": "s",
                "random_init": False,
                "manifest_sha256": "m0",
                "weights": ["w"],
            }
        ]
    )
    data = ExperimentData("e", "1", cells, pd.DataFrame())
    t = main_table(
        data, "pascal", "miou", [Reference("FSSAM", "fssam", "pascal", 1, "miou", 81.0, "the paper")]
    )
    assert t.columns == [
        ("1-shot", "fold0"),
        ("1-shot", "mean (1 of 4 folds)"),
        ("1-shot", "mean of 4 folds (published)"),
    ]
    assert t.rows == ["fssam", "FSSAM (published)", "fssam − published"]
    assert t.cells == [["70.0", "70.0", "–"], ["–", "–", "81.0"], ["–", "–", "–"]]
    assert len(t.values[0]) == len(t.bold[0]) == 3
