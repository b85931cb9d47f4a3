"""Paths in study, search and training files resolve relative to the file that holds them; paths on
the command line against the working directory, and they replace the file's before any is looked at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.errors import FssBenchError
from benchmark.file_paths import absolute_path, resolve_paths, search_path_fields, study_path_fields
from benchmark.specs.search import load_search
from benchmark.specs.study import load_study
from benchmark.specs.train import load_train
from tests.helpers import TINY, TINY_128


@pytest.fixture
def project(pascal_root, tmp_path, monkeypatch) -> Path:
    """``project/{data/pascal, studies/, searches/, train/}`` and a working directory elsewhere."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "pascal").symlink_to(pascal_root, target_is_directory=True)
    for sub in ("studies", "searches", "train", "ckpt"):
        (root / sub).mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return root


def study_dict(data: str, **extra) -> dict:
    return {
        "name": "s",
        "data": {"pascal": data},
        "folds": [0],
        "shots": [1],
        "episodes": 2,
        "model": dict(TINY),
        "variants": {"fssam": {}},
        **extra,
    }


def write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_absolute_path_rules(tmp_path):
    base = tmp_path / "a" / "b"
    assert absolute_path("../data/x", base) == str(tmp_path / "a" / "data" / "x")  # normalised
    assert absolute_path("./x/../y", base) == str(base / "y")
    assert absolute_path("/abs/x", base) == "/abs/x"
    assert absolute_path("runs:/abc/checkpoint/best.pth", base) == "runs:/abc/checkpoint/best.pth"
    assert absolute_path("~/w.pt", base) == os.path.expanduser("~/w.pt")
    for value in (None, "", 3, True):
        assert absolute_path(value, base) == value
    # a template keeps its fields: they are filled per cell later
    assert absolute_path("exp/{dataset}/split{fold}.pth", base) == str(base / "exp/{dataset}/split{fold}.pth")


def test_the_path_fields_of_each_kind_of_file():
    raw = {
        "data": {"pascal": "p", "coco": "c"},
        "episodes": 3,
        "model": {"sam2_checkpoint": "s.pt", "image_size": 256, "dinov2_checkpoint": "d.pth"},
        "variants": {"a": {"fssam_checkpoint": "f.pth", "imr_iters": 2}, "b": {}, "c": None},
    }
    assert sorted(study_path_fields(raw)) == sorted(
        [
            ("data", "pascal"),
            ("data", "coco"),
            ("model", "sam2_checkpoint"),
            ("model", "dinov2_checkpoint"),
            ("variants", "a", "fssam_checkpoint"),
        ]
    )
    assert search_path_fields({"study": "s.yaml", "trials": 3}) == [("study",)]
    assert ("study", "data", "pascal") in search_path_fields({"study": raw})
    out = resolve_paths(raw, study_path_fields, Path("/base"))
    assert out["data"] == {"pascal": "/base/p", "coco": "/base/c"} and out["episodes"] == 3
    assert out["model"]["image_size"] == 256 and out["variants"]["a"]["imr_iters"] == 2
    assert raw["data"]["pascal"] == "p"  # a copy: the caller's dict is untouched


def test_a_study_file_finds_its_data_from_any_working_directory(project):
    path = write(project / "studies" / "s.yaml", study_dict("../data/pascal"))
    study = load_study(path)
    assert study.data["pascal"] == project / "data" / "pascal"
    assert Path.cwd() != project / "studies"  # not by chance: the test runs elsewhere
    # the same file run from its own folder gives the same study
    os.chdir(project / "studies")
    assert load_study(Path("s.yaml")).data == study.data


def test_an_override_replaces_the_file_path_before_it_is_resolved(project):
    # the file's path does not exist: the override replaces it, so it is never looked at
    path = write(project / "studies" / "s.yaml", study_dict("../nowhere"))
    with pytest.raises(FssBenchError, match=r"data\.pascal"):
        load_study(path)
    os.symlink(project / "data", Path.cwd() / "mydata")
    study = load_study(path, ["data.pascal=mydata/pascal"])  # relative to the working directory
    assert study.data["pascal"] == Path.cwd() / "mydata" / "pascal"
    study = load_study(path, ["data={pascal: mydata/pascal}"])  # a whole mapping likewise
    assert study.data["pascal"] == Path.cwd() / "mydata" / "pascal"


def test_checkpoints_resolve_relative_to_the_file(project):
    torch.save({}, project / "ckpt" / "best.pth")
    raw = study_dict(
        "../data/pascal",
        variants={"naive": {"method": "naive_sam2", "finetuned_checkpoint": "../ckpt/best.pth"}},
    )
    study = load_study(write(project / "studies" / "s.yaml", raw))
    assert study.variants[0].settings["finetuned_checkpoint"] == str(project / "ckpt" / "best.pth")
    # an MLflow artifact URI is not a path
    raw["variants"]["naive"]["finetuned_checkpoint"] = "runs:/0123abcd/checkpoint/best.pth"
    study = load_study(write(project / "studies" / "s.yaml", raw))
    assert study.variants[0].settings["finetuned_checkpoint"] == "runs:/0123abcd/checkpoint/best.pth"
    # the resolved study, which the parent run logs, names the folder the cells used
    assert study.resolved()["data"]["pascal"] == str(project / "data" / "pascal")


def search_dict(study) -> dict:
    return {
        "name": "q",
        "study": study,
        "kind": "test",
        "space": {"imr_iters": {"type": "int", "low": 0, "high": 2}},
    }


def test_a_search_file_finds_its_study_and_the_study_its_data(project):
    write(project / "studies" / "s.yaml", study_dict("../data/pascal"))
    path = write(project / "searches" / "q.yaml", search_dict("../studies/s.yaml"))
    spec = load_search(path)
    assert spec.study.data["pascal"] == project / "data" / "pascal"  # relative to the study file
    assert spec.study_file == str(project / "studies" / "s.yaml")
    # an inline study's paths are relative to the search file
    inline = write(project / "searches" / "inline.yaml", search_dict(study_dict("../data/pascal")))
    assert load_search(inline).study.data["pascal"] == project / "data" / "pascal"


def test_study_path_on_the_command_line_repoints_the_search(project):
    # the file names a study that does not exist; study=PATH (relative to the working directory) wins
    path = write(project / "searches" / "q.yaml", search_dict("../studies/missing.yaml"))
    with pytest.raises(
        FssBenchError, match=r"q.yaml: study: study file .*missing.yaml not found .*its folder"
    ):
        load_search(path)
    write(Path.cwd() / "mine.yaml", study_dict(str(project / "data" / "pascal"), episodes=7))
    spec = load_search(path, ["study=mine.yaml", "study.episodes=3"])
    assert spec.study_file == "mine.yaml" and spec.study.episodes == 3  # study.X reaches into it
    assert spec.study.data["pascal"] == project / "data" / "pascal"
    with pytest.raises(FssBenchError, match=r"override 'study=nope.yaml': study file nope.yaml not found"):
        load_search(path, ["study=nope.yaml"])
    # study.data.X=DIR on the command line: relative to the working directory
    os.symlink(project / "data", Path.cwd() / "d")
    spec = load_search(path, ["study=mine.yaml", "study.data.pascal=d/pascal"])
    assert spec.study.data["pascal"] == Path.cwd() / "d" / "pascal"


def test_a_training_file_finds_its_data_relative_to_itself(project):
    raw = {
        "name": "t",
        "data": {"pascal": "../data/pascal"},
        "model": dict(TINY_128),
        "train": {"max_iters": 2},
        "val": {"episodes": 2},
    }
    path = write(project / "train" / "t.yaml", raw)
    assert load_train(path).data_root == project / "data" / "pascal"
    os.symlink(project / "data", Path.cwd() / "d")
    assert load_train(path, ["data.pascal=d/pascal"]).data_root == Path.cwd() / "d" / "pascal"


def test_the_shipped_files_point_where_fetch_and_prepare_put_things():
    """Every shipped file's data roots and weights lie in the repository's data/, checkpoints/,
    exp/, fssbench-demo/ or fssbench-train/ (where `fetch`, `data prepare`, the demo and `train`, run in the
    repository root, put them), and every search's study exists."""
    repo = Path(__file__).resolve().parents[1]
    ablations = repo / "ablations"
    seen = 0
    for path in sorted(ablations.rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if path.parent.name == "searches":
            study = resolve_paths(raw, search_path_fields, path.parent)["study"]
            assert Path(study).is_file(), path
            continue
        resolved = resolve_paths(raw, study_path_fields, path.parent)
        for key in study_path_fields(resolved):
            value = resolved
            for k in key:
                value = value[k]
            top = Path(value).relative_to(repo).parts[0]
            assert top in ("data", "checkpoints", "exp", "fssbench-demo", "fssbench-train"), (
                path,
                key,
                value,
            )
            seen += 1
    assert seen >= 20
