"""Search files are validated before any work: every mistake names its field and the fix."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.errors import FssBenchError
from benchmark.specs.search import load_search, parse_search
from tests.helpers import ROOT, TINY


def base(root: Path) -> dict:
    return {
        "name": "s",
        "study": {
            "name": "st",
            "data": {"pascal": str(root)},
            "folds": [0, 1],
            "shots": [1, 5],
            "model": dict(TINY),
            "variants": {"fssam": {}, "naive": {"method": "naive_sam2"}},
        },
        "space": {"imr_iters": {"type": "int", "low": 0, "high": 6}},
    }


def with_(raw: dict, **changes) -> dict:
    out = copy.deepcopy(raw)
    for dotted, value in changes.items():
        cur = out
        keys = dotted.split("__")
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
        cur[keys[-1]] = value
    return out


def test_defaults(pascal_root):
    spec = parse_search(base(pascal_root), "s.yaml")
    assert spec.kind == "val" and spec.metric == "miou" and spec.direction == "maximize"
    assert spec.variant.name == "fssam"  # the first variant
    assert spec.sampler == {"type": "tpe", "seed": 0} and spec.pruner["type"] == "median"
    assert spec.trials == 20 and spec.report_every == 25 and spec.experiment == "s"
    assert spec.study.folds == [0, 1] and spec.study.shots == [1, 5]
    assert spec.space["imr_iters"].grid == tuple(range(7))


def test_objective_restricts_the_study(pascal_root):
    spec = parse_search(
        with_(base(pascal_root), objective={"folds": [1], "shots": [1]}, episodes=7), "s.yaml"
    )
    assert spec.study.folds == [1] and spec.study.shots == [1] and spec.study.episodes == 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sampel": {}}, r"s.yaml: sampel: unknown field \(did you mean 'sampler'\?\)"),
        ({"kind": "train"}, r"s.yaml: kind: 'train' is not one of \['val', 'test'\]"),
        ({"variant": "fsam"}, r"variant: 'fsam' is not a variant of the study \(did you mean 'fssam'\?\)"),
        ({"space": {}}, r"space: expected a non-empty mapping"),
        (
            {"space__imr_iter": {"type": "int", "low": 0, "high": 2}},
            r"space.imr_iter: not a switch of method 'fssam'.*did you mean 'imr_iters'",
        ),
        (
            {"space__sam2_checkpoint": {"type": "categorical", "choices": ["a"]}},
            r"space.sam2_checkpoint: .*cannot be searched",
        ),
        (
            {"space__imr_iters": {"type": "int", "low": -1, "high": 2}},
            r"space.imr_iters: the value -1 is refused: imr_iters must be an integer >= 0",
        ),
        (
            {"space__imr_iters": {"type": "int", "low": 3, "high": 2}},
            r"space.imr_iters: low 3 is above high 2",
        ),
        (
            {"space__imr_iters": {"type": "int", "low": 0.5, "high": 2}},
            r"space.imr_iters.low: expected an integer",
        ),
        (
            {"space__prior": {"type": "categorical", "choices": ["disc", "dsic"]}},
            r"space.prior: the value 'dsic' is refused: prior='dsic' is not one of",
        ),
        (
            {"space__threshold": {"type": "float", "low": 0.0, "high": 0.9}},
            r"space.threshold: the value 0.0 is refused: .*in \(0, 1\)",
        ),
        (
            {"space__scma_scale": {"type": "float", "low": 0.0, "high": 30.0, "log": True}},
            r"space.scma_scale.log: a log scale needs low > 0",
        ),
        (
            {"space__scma_scale": {"type": "flaot", "low": 1, "high": 3}},
            r"space.scma_scale.type: 'flaot' is not one of",
        ),
        (
            {"space__scma_scale": {"type": "float", "low": 1, "high": 3, "setp": 1}},
            r"space.scma_scale.setp: unknown field \(did you mean 'step'\?\)",
        ),
        (
            {"sampler": {"type": "grid"}, "space__scma_scale": {"type": "float", "low": 1, "high": 3}},
            r"space.scma_scale: a grid sampler needs its values: add grid",
        ),
        (
            {
                "sampler": {"type": "cmaes"},
                "space__prior": {"type": "categorical", "choices": ["disc", "fg"]},
            },
            r"sampler.type: cmaes samples numbers only",
        ),
        ({"sampler": {"type": "tpe", "sed": 1}}, r"sampler.sed: not an option of the tpe sampler"),
        ({"sampler": "bayes"}, r"sampler.type: 'bayes' is not one of \['tpe', 'random', 'cmaes', 'grid'\]"),
        (
            {"pruner": {"type": "median", "warmup": 3}},
            r"pruner.warmup: not an option of the median pruner; options: \['startup_trials', 'warmup_steps'\]",
        ),
        ({"pruner": {"type": "hyperband"}}, r"pruner.type: 'hyperband' is not one of"),
        ({"objective": {"metric": "acc"}}, r"objective.metric: 'acc' is not one of \['miou', 'fb_iou'\]"),
        (
            {"objective": {"folds": [7]}},
            r"s.yaml: objective.folds: 7 is out of range: each must be in 0\.\.3",
        ),
        (
            {"objective": {"datasets": ["coco"]}},
            r"objective.datasets: expected a non-empty list of the study's datasets \['pascal'\]",
        ),
        ({"trials": 0}, r"trials: expected a positive integer, got 0"),
        ({"study": "x.yaml"}, r"study: expected a study file path or an inline study mapping"),
    ],
)
def test_mistakes_name_their_field(pascal_root, changes, message):
    with pytest.raises(FssBenchError, match=message):
        parse_search(with_(base(pascal_root), **changes), "s.yaml")


def test_a_naive_variant_has_no_imr_switch(pascal_root):
    with pytest.raises(
        FssBenchError, match=r"space.imr_iters: not a switch of method 'naive_sam2' \(variant naive\)"
    ):
        parse_search(with_(base(pascal_root), variant="naive"), "s.yaml")
    spec = parse_search(
        with_(
            base(pascal_root),
            variant="naive",
            space={"threshold": {"type": "float", "low": 0.3, "high": 0.7}},
        ),
        "s.yaml",
    )
    assert spec.variant.method == "naive_sam2"  # every method has the threshold


def test_a_study_path_and_overrides_into_it(pascal_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = base(pascal_root)
    Path("study.yaml").write_text(yaml.safe_dump(raw.pop("study")))
    Path("search.yaml").write_text(yaml.safe_dump({**raw, "study": "study.yaml"}))
    spec = load_search(Path("search.yaml"), ["trials=3", "study.episodes=5", "space.imr_iters.high=2"])
    assert spec.trials == 3 and spec.study.episodes == 5 and spec.space["imr_iters"].high == 2
    assert spec.study_file == "study.yaml" and spec.study_raw["episodes"] == 5
    with pytest.raises(
        FssBenchError, match=r"command-line override 'study.folds=\[9\]'|override 'folds=\[9\]'"
    ):
        load_search(Path("search.yaml"), ["study.folds=[9]"])
    with pytest.raises(FssBenchError, match=r"command-line override 'trials=-1'"):
        load_search(Path("search.yaml"), ["trials=-1"])
    Path("bad.yaml").write_text(yaml.safe_dump({**raw, "study": "missing.yaml"}))
    with pytest.raises(FssBenchError, match=r"bad.yaml: study: study file missing.yaml not found"):
        load_search(Path("bad.yaml"))


def test_the_identity_ignores_sampler_and_trials_but_not_the_space(pascal_root):
    a = parse_search(base(pascal_root), "s.yaml")
    b = parse_search(with_(base(pascal_root), trials=99, sampler={"type": "random", "seed": 4}), "s.yaml")
    c = parse_search(
        with_(base(pascal_root), space__imr_iters={"type": "int", "low": 0, "high": 5}), "s.yaml"
    )
    d = parse_search(with_(base(pascal_root), episodes=9), "s.yaml")
    assert a.sha256 == b.sha256 and a.sha256 != c.sha256 and a.sha256 != d.sha256


def test_cli_refuses_test_tuning_before_any_work(pascal_root, tmp_path):
    raw = with_(base(pascal_root), kind="test")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark.cli",
            "search",
            str(path),
            "--work-dir",
            str(tmp_path / "w"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        "kind: test would tune on the test episodes" in proc.stderr and "--allow-test-tuning" in proc.stderr
    )
    assert not (tmp_path / "w").exists() and not (tmp_path / "m.db").exists()
