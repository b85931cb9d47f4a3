"""The README's Quickstart and Python API example are what CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_quickstart_is_exactly_two_commands():
    block = re.search(r"## Quickstart\n\n```bash\n(.*?)```", README, re.S)
    assert block is not None
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) == 2
    assert lines[0].endswith("fssbench demo") and lines[1].endswith("python -m pytest")
    ci = (Path(__file__).resolve().parents[1] / ".ci/run").read_text()
    assert "Quickstart" in ci  # .ci/run executes that second line


def test_python_api_example_runs():
    block = re.search(r"### Python API\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    exec(compile(block.group(1), "README.md", "exec"), {})


def test_adding_a_method_example_runs(pascal_root, tmp_path, monkeypatch):
    import benchmark.methods.registry as registry
    from benchmark.episodes import get_protocol
    from benchmark.episodes.manifest import save_manifest
    from benchmark.episodes.manifests import ManifestRequest, build_manifest
    from benchmark.evaluation.cell import CellSpec, evaluate_cell
    from benchmark.evaluation.feature_cache import FeatureCache

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # unregistered afterwards
    block = re.search(r"## Adding a method\n.*?```python\n(.*?)```", README, re.S)
    assert block is not None
    exec(compile(block.group(1), "README.md", "exec"), {})
    manifest = build_manifest(
        get_protocol("fssam"), ManifestRequest(pascal_root, 0, 1, seed=321, episodes=3, dataset="pascal")
    )
    save_manifest(manifest, tmp_path / "m.json")
    spec = CellSpec("darker_colour", {"image_size": 128}, tmp_path / "m.json", pascal_root, "cpu")
    result = evaluate_cell(spec, FeatureCache(None))
    assert result.summary["n_episodes"] == 3 and 0 <= result.summary["miou"] <= 1


def test_adding_a_protocol_example_runs(pascal_root, tmp_path, monkeypatch):
    import benchmark.episodes.registry as registry
    from benchmark.data.classes import novel_classes
    from benchmark.data.lists import fold_pool
    from benchmark.data.prepared import PreparedDataset
    from benchmark.episodes.manifest import load_manifest
    from benchmark.evaluation.cell import evaluate_cell
    from benchmark.evaluation.feature_cache import FeatureCache
    from benchmark.plan import study_cells, study_manifests
    from benchmark.specs.study import load_study

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # unregistered afterwards
    block = re.search(r"## Adding an episode protocol\n.*?```python\n(.*?)```", README, re.S)
    assert block is not None
    exec(compile(block.group(1), "README.md", "exec"), {})
    assert "first-supports" in registry.protocol_names()
    study_file = tmp_path / "s.yaml"
    study_file.write_text(
        f"name: s\ndata: {{pascal: {pascal_root}}}\nprotocol: first-supports\nfolds: [1]\nshots: [2]\n"
        "episodes: 7\nmodel: {random_init: true}\nvariants: {mean: {method: mean_colour}}\n"
    )
    study = load_study(study_file)
    assert study.seeds == [0]  # the protocol's default seed
    (path,) = study_manifests(study, tmp_path / "work").values()
    assert path.name == "pascal-fold1-2shot-first-supports-seed0-n7.json"
    m = load_manifest(path)
    assert m.protocol == "first-supports" and len(m.episodes) == 7 and m.draw is None
    # the draw the example describes: queries in list order, the first K other images of the first class
    pool = fold_pool(PreparedDataset(pascal_root).records("val"), novel_classes("pascal", 1), False)
    assert [e.query for e in m.episodes] == [r.id for r in pool.images[:7]]
    for e in m.episodes:
        assert e.cls == next(r for r in pool.images if r.id == e.query).present(m.classes)[0]
        assert list(e.supports) == [r.id for r in pool.per_class[e.cls] if r.id != e.query][:2]
    (cell,) = study_cells(study, {("pascal", 1, 2, 0): path})
    result = evaluate_cell(cell.spec, FeatureCache(None))
    assert result.summary["n_episodes"] == 7 and 0 <= result.summary["miou"] <= 1


def test_real_data_and_weights_is_three_commands_that_parse(monkeypatch):
    import shlex

    import yaml

    from benchmark.cli import build_parser
    from benchmark.fetch.sources import WEIGHTS
    from benchmark.file_paths import resolve_paths, study_path_fields
    from benchmark.specs.overrides import apply_overrides

    block = re.search(r"## Real data and weights\n\n```bash\n(.*?)```", README, re.S)
    assert block is not None
    lines = [ln.split("  #")[0] for ln in block.group(1).splitlines() if ln.strip()]
    assert [shlex.split(ln)[:2] for ln in lines] == [["fssbench", "fetch"]] * 2 + [["fssbench", "run"]]
    weights, data, run = (build_parser().parse_args(shlex.split(ln)[1:]) for ln in lines)
    assert set(weights.names) <= set(WEIGHTS) and (data.dataset, data.prepare) == ("pascal", "data/pascal")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the commands run in the repository root
    study_file = root / run.study
    study = resolve_paths(yaml.safe_load(study_file.read_text()), study_path_fields, study_file.parent)
    study = apply_overrides(study, run.overrides, study_path_fields)
    assert set(study["data"]) == {"pascal"} and set(study["variants"]) == {"fssam", "naive-sam2"}
    assert study["data"]["pascal"] == str(root / data.prepare)
    # the fetched files are where the study (its paths relative to its own folder) looks for them
    assert study["model"]["sam2_checkpoint"] == str(root / weights.out / WEIGHTS["sam2-s"].source.filename)
    assert study["model"]["dinov2_checkpoint"] == str(
        root / weights.out / WEIGHTS["dinov2-vitb14"].source.filename
    )
    register = re.search(r"(fssbench fetch register ~\S+ --as \S+)", README)
    args = build_parser().parse_args(shlex.split(register.group(1))[1:])
    assert args.as_ == "fssam/pascal/split0/1shot"
