"""``fssbench search``: a real Optuna search on synthetic data with tiny random-init models.

The expectations are computed independently of the search engine: the median-pruning rule is
replayed from the reported values, a trial's objective is recomputed with the cell function alone,
and MLflow's records are compared trial by trial with Optuna's.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from benchmark.errors import FssBenchError
from benchmark.evaluation.cell import CellSpec, evaluate_cell
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.jobs.run import StudyRunner
from benchmark.jobs.search import SearchRunner, best_study_raw, redact
from benchmark.specs.search import load_search, parse_search
from benchmark.specs.study import load_study
from tests.helpers import TINY, floor_search

EPISODES = 8


def search_dict(root: Path, **extra) -> dict:
    return {
        "name": "tiny-search",
        "study": {
            "name": "tiny-study",
            "data": {"pascal": str(root)},
            "folds": [0],
            "shots": [1],
            "episodes": 6,
            "model": dict(TINY),
            "variants": {"fssam": {}, "naive": {"method": "naive_sam2"}},
        },
        "variant": "fssam",
        "episodes": EPISODES,
        "space": {
            "imr_iters": {"type": "int", "low": 0, "high": 3},
            "threshold": {"type": "float", "low": 0.02, "high": 0.98},
        },
        "objective": {"metric": "miou", "direction": "maximize"},
        "sampler": {"type": "random", "seed": 3},
        "pruner": {"type": "median", "startup_trials": 2, "warmup_steps": 3},
        "report_every": 2,
        "trials": 6,
        **extra,
    }


def runner(spec, tmp: Path, **kw) -> SearchRunner:
    return SearchRunner(
        spec,
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        work_dir=tmp / "work",
        progress=False,
        log=lambda msg: None,
        **kw,
    )


@pytest.fixture(scope="module")
def six_trials(pascal_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    spec = parse_search(search_dict(pascal_root), source="tiny.yaml")
    r = runner(spec, tmp)
    outcome = r.run()
    return spec, r, outcome, tmp


def test_six_trials_run_and_at_least_one_is_pruned_by_the_median_rule(six_trials):
    spec, r, outcome, tmp = six_trials
    study = optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{tmp / 'optuna.db'}")
    trials = study.get_trials()
    assert len(trials) == 6
    states = [t.state for t in trials]
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert TrialState.PRUNED in states
    for t in trials:
        steps = sorted(t.intermediate_values)
        # reports every 2 episodes; a pruned trial stops at the step it was pruned at
        assert steps == list(range(2, steps[-1] + 1, 2))
        assert t.user_attrs["episodes_run"] == steps[-1]
        if t.state == TrialState.COMPLETE:
            assert steps[-1] == EPISODES
            assert t.value == pytest.approx(t.intermediate_values[EPISODES])
        else:
            assert steps[-1] < EPISODES
        # the median rule replayed from the stored values: a pruned trial was below the median at
        # its last step and not before; a completed trial was never below it
        prunes = [median_rule_prunes(trials, t, s) for s in steps]
        expected = [False] * (len(steps) - 1) + [t.state == TrialState.PRUNED]
        assert prunes == expected, (t.number, steps, prunes)
    # the warmup was live: some trial was below the median at step 2 (< warmup 3) and ran on
    assert any(median_rule_prunes(trials, t, 2, warmup=0) for t in trials if 4 in t.intermediate_values)


def median_rule_prunes(trials, t, step: int, startup: int = 2, warmup: int = 3) -> bool:
    """Optuna's MedianPruner rule (its documentation, written out): at a step of at least
    ``warmup``, once ``startup`` trials have completed, prune when the trial's best intermediate
    value up to that step is below the median of the completed trials' values at that step. One
    worker runs the trials in order, so the completed trials are those numbered before ``t``."""
    done = [u for u in trials[: t.number] if u.state == TrialState.COMPLETE]
    if len(done) < startup or step < warmup:
        return False
    at_step = [u.intermediate_values[step] for u in done if step in u.intermediate_values]
    best = max(v for k, v in t.intermediate_values.items() if k <= step)
    return bool(at_step) and best < statistics.median(at_step)


def test_a_trials_value_is_the_miou_of_its_predictions_on_the_val_manifest(pascal_root, tmp_path):
    import json
    import math

    import numpy as np
    from PIL import Image

    spec = parse_search(floor_search(pascal_root), source="floor.yaml")
    runner(spec, tmp_path).run()
    (path,) = (tmp_path / "work" / "manifests").glob("*-val.json")
    manifest = json.loads(path.read_text())
    assert manifest["kind"] == "val" and manifest["num_episodes"] == EPISODES
    # every pixel foreground: per episode I_fg = pixels of the class, U_fg = pixels not ignored (255)
    inter = {c: 0 for c in manifest["classes"]}
    union = {c: 0 for c in manifest["classes"]}
    for e in manifest["episodes"]:
        label = np.array(Image.open(pascal_root / manifest["images"][e["query"]][1]))
        inter[e["class"]] += int((label == e["class"]).sum())
        union[e["class"]] += int((label != 255).sum())
    all_fg = sum(inter[c] / union[c] if union[c] else 0.0 for c in inter) / len(inter)  # zero union: 0
    assert 0.0 < all_fg < 1.0
    study = optuna.load_study(study_name="floor-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    sides = set()
    for t in study.trials:
        foreground = 1 / (1 + math.exp(-1)) >= t.params["threshold"]
        sides.add(foreground)
        assert t.state == TrialState.COMPLETE
        assert t.value == pytest.approx(all_fg if foreground else 0.0, abs=1e-12), t.params
    assert sides == {True, False}  # both kinds of trial were drawn


def test_mlflow_holds_one_nested_run_per_trial_number_with_optunas_state(six_trials):
    spec, r, outcome, tmp = six_trials
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny-search")
    parents = client.search_runs([exp.experiment_id], "tags.`fss.kind` = 'search'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["fss.optuna_study"] == "tiny-search"
    assert parent.data.tags["fss.tuned_on_test"] == "false"
    runs = client.search_runs([exp.experiment_id], "tags.`fss.kind` = 'trial'")
    by_number = {int(x.data.tags["fss.trial_number"]): x for x in runs}
    assert sorted(by_number) == list(range(6)) and len(runs) == 6
    for t in optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{tmp / 'optuna.db'}").trials:
        run = by_number[t.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["fss.trial_state"] == t.state.name
        assert run.data.tags["fss.optuna_storage"].endswith("optuna.db")
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert {k: float(v) for k, v in run.data.params.items()} == pytest.approx(t.params)
        curve = client.get_metric_history(run.info.run_id, "running_miou")
        assert {int(m.step): m.value for m in curve} == pytest.approx(
            {int(k): v for k, v in t.intermediate_values.items()}
        )
        assert run.data.metrics["episodes_run"] == t.user_attrs["episodes_run"]
        if t.state == TrialState.COMPLETE:
            assert run.data.metrics["objective"] == pytest.approx(t.value)
        # the provenance a cell run has: commit, versions, code, manifests and weights per cell
        tags = run.data.tags
        assert tags["fss.git_commit"] and json.loads(tags["fss.versions"])["torch"]
        assert len(tags["fss.code_sha256"]) == 64 and tags["mlflow.source.name"] == "tiny.yaml"
        (label,) = json.loads(tags["fss.manifest_sha256s"])  # one cell: pascal fold 0, 1 shot
        assert label == "pascal.fold0.1shot.seed321"
        manifest = next((tmp / "work" / "manifests").glob("*-val.json"))
        assert json.loads(tags["fss.manifest_sha256s"])[label] == json.loads(manifest.read_text())["sha256"]
        assert json.loads(tags["fss.weights"])[label] == {
            "sam2": "random-init:seed0",
            "dinov2": "random-init:seed1",
        }


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_outputs_plots_and_the_best_params_study_file_runs(six_trials, pascal_root):
    spec, r, outcome, tmp = six_trials
    folder = tmp / "work" / "searches" / "tiny-search"
    for name in ("history", "importances", "slice", "contour"):
        assert (folder / f"{name}.png").stat().st_size > 1000, name
    best_file = outcome.outputs["best_study"]
    text = best_file.read_text()
    assert text.startswith("# Best parameters of search 'tiny-search'") and "validation manifests" in text
    raw = yaml.safe_load(text)
    assert raw == best_study_raw(spec, outcome.best)
    assert raw["variants"]["fssam-tuned"] == outcome.best["params"]
    assert raw["episodes"] == 6  # the study's test episodes, not the search's validation count
    study = load_study(best_file)
    cells = StudyRunner(
        study,
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        work_dir=tmp / "run",
        progress=False,
        qualitative=0,
    ).run()
    tuned = cells[cells["variant"] == "fssam-tuned"]
    assert len(tuned) == 1 and tuned["status"].iloc[0] == "run"
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    run = client.get_run(tuned["run_id"].iloc[0])
    assert float(run.data.params["threshold"]) == pytest.approx(outcome.best["params"]["threshold"])
    assert "kind" not in run.data.params  # scored on test manifests: the runner builds test kinds only
    assert run.data.tags["fss.manifest_sha256"] != ""


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_a_resumed_search_counts_what_is_left_and_keeps_its_parent_run(pascal_root, tmp_path):
    spec = parse_search(search_dict(pascal_root, pruner={"type": "none"}), source="tiny.yaml")
    first = runner(spec, tmp_path, trials=2).run()
    assert first.ran_here == 2
    again = runner(spec, tmp_path, trials=4).run()
    assert again.ran_here == 2 and again.parent_run_id == first.parent_run_id
    study = optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert runner(spec, tmp_path, trials=4).run().ran_here == 0  # nothing left
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny-search")
    assert len(client.search_runs([exp.experiment_id], "tags.`fss.kind` = 'search'")) == 1
    numbers = [
        r.data.tags["fss.trial_number"]
        for r in client.search_runs([exp.experiment_id], "tags.`fss.kind` = 'trial'")
    ]
    assert sorted(numbers) == ["0", "1", "2", "3"]
    # a different search under the same study name is refused, naming the way out
    other = parse_search(
        search_dict(
            pascal_root, pruner={"type": "none"}, space={"imr_iters": {"type": "int", "low": 0, "high": 2}}
        ),
        source="other.yaml",
    )
    with pytest.raises(FssBenchError, match="created by a different search.*--study-name"):
        runner(other, tmp_path, trials=5).run()


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_test_tuning_is_refused_and_with_the_flag_tagged_everywhere(pascal_root, tmp_path):
    spec = parse_search(search_dict(pascal_root, kind="test", trials=2), source="t.yaml")
    with pytest.raises(FssBenchError, match=r"t.yaml: kind: test .*--allow-test-tuning"):
        runner(spec, tmp_path)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()
    outcome = runner(spec, tmp_path, allow_test_tuning=True).run()
    study = optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.user_attrs["fss.tuned_on_test"] is True
    assert all(t.user_attrs["fss.tuned_on_test"] is True for t in study.trials)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny-search")
    runs = [
        run
        for kind in ("search", "trial")
        for run in client.search_runs([exp.experiment_id], f"tags.`fss.kind` = '{kind}'")
    ]
    assert len(runs) == 3 and all(x.data.tags["fss.tuned_on_test"] == "true" for x in runs)
    assert "TUNED ON TEST" in outcome.outputs["best_study"].read_text()
    manifests = list((tmp_path / "work" / "manifests").glob("*.json"))
    assert manifests and not any(p.stem.endswith("-val") for p in manifests)
    from reports.build import build_report

    rep = build_report("tiny-search", tmp_path / "rep", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for page in (rep.markdown, rep.html):
        assert "TUNED ON TEST EPISODES" in page.read_text() and "RANDOM-INIT" in page.read_text()
    assert "Search tiny-search: trials" in rep.markdown.read_text()
    from tests.test_report_latex import compile_tex, require_pdflatex

    tex = rep.out / "tables" / "search-tiny-search.tex"
    assert "TUNED ON TEST" in tex.read_text()
    compile_tex(require_pdflatex(), tex, tmp_path / "latex")


def test_a_grid_walks_every_point_once(pascal_root, tmp_path):
    spec = parse_search(
        search_dict(
            pascal_root,
            episodes=2,
            sampler={"type": "grid"},
            pruner={"type": "none"},
            trials=None,
            space={
                "imr_iters": {"type": "int", "low": 0, "high": 1},
                "scma_scale": {"type": "float", "low": 1.0, "high": 30.0, "grid": [1.0, 30.0]},
            },
        ),
        source="grid.yaml",
    )
    assert spec.trials == 4
    outcome = runner(spec, tmp_path).run()
    points = sorted((t["param.imr_iters"], t["param.scma_scale"]) for t in outcome.trials)
    assert points == [(0, 1.0), (0, 30.0), (1, 1.0), (1, 30.0)]


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_wilcoxon_pruning_reports_each_chunk_s_own_miou(pascal_root, tmp_path):
    spec = parse_search(
        search_dict(pascal_root, trials=2, pruner={"type": "wilcoxon", "p_threshold": 0.1}, report_every=3),
        source="w.yaml",
    )
    outcome = runner(spec, tmp_path).run()
    study = optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    t = study.trials[0]
    assert t.state == TrialState.COMPLETE
    manifest = next((tmp_path / "work" / "manifests").glob("*-val.json"))
    table = evaluate_cell(
        CellSpec("fssam", spec.variant.settings | t.params, manifest, pascal_root, "cpu", "c"),
        FeatureCache(None),
    ).table.sort_values("episode")
    rows = table.to_dict("records")
    expected = {}
    for i in range(0, EPISODES, 3):  # chunks of 3 episodes (the last one shorter), by index
        chunk = rows[i : i + 3]
        ious = []
        for c in sorted({r["class"] for r in chunk}):  # classes seen in the chunk
            inter = sum(r["I_fg"] for r in chunk if r["class"] == c)
            union = sum(r["U_fg"] for r in chunk if r["class"] == c)
            ious.append(inter / union if union else 0.0)
        expected[i // 3] = sum(ious) / len(ious)
    assert t.intermediate_values == pytest.approx(expected)
    assert outcome.best is not None


def test_storage_urls_are_redacted_and_checked(tmp_path):
    assert redact("postgresql://fss:secret@db.lab:5432/optuna") == "postgresql://fss:***@db.lab:5432/optuna"
    assert redact("sqlite:////x/optuna.db") == "sqlite:////x/optuna.db"
    from benchmark.jobs.search import open_storage

    with pytest.raises(FssBenchError, match="expected an RDB URL"):
        open_storage("redis://host")
    storage = open_storage(f"journal:{tmp_path / 'j.log'}")
    optuna.create_study(study_name="j", storage=storage).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2
    )
    assert (
        len(optuna.load_study(study_name="j", storage=open_storage(f"journal:{tmp_path / 'j.log'}")).trials)
        == 2
    )


def test_the_shipped_search_files_are_valid(pascal_root, coco_root):
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "ablations" / "searches").glob("*.yaml"))
    assert {p.stem for p in files} >= {"fssam-inference-pascal", "imr-scma-grid", "demo"}
    for path in files:
        raw = yaml.safe_load(path.read_text())
        study = yaml.safe_load((path.parent / raw["study"]).read_text())  # relative to the search file
        over = [f"study.data.pascal={pascal_root}", "study.model.random_init=true"]
        if study.get("model", {}).get("fssam_checkpoint"):  # random init refuses a trained checkpoint
            over.append("study.model.fssam_checkpoint=null")
        if "coco" in study["data"]:
            over.append(f"study.data.coco={coco_root}")
        spec = load_search(path, over)  # from any working directory (here the test's own)
        assert spec.kind == "val" and spec.space


def test_the_shipped_demo_search_is_the_one_the_demo_runs():
    from benchmark.file_paths import resolve_paths, study_path_fields
    from benchmark.jobs.demo import demo_search, demo_study

    root = Path(__file__).resolve().parents[1]
    searches = root / "ablations" / "searches"
    shipped = yaml.safe_load((searches / "demo.yaml").read_text())
    assert (searches / shipped["study"]).resolve() == root / "ablations" / "demo.yaml"
    # its study finds the data of a demo run in the repository root
    study = demo_study(root / "fssbench-demo" / "data" / "pascal", 24)
    study_file = searches / shipped["study"]
    shipped_study = resolve_paths(
        yaml.safe_load(study_file.read_text()), study_path_fields, study_file.parent
    )
    assert shipped_study == study
    assert {**shipped, "study": study} == demo_search(study, 24)


def failing_cell(monkeypatch, fails: set[int]) -> list[int]:
    """Make the cell function (a dependency of the search) raise on the calls numbered in ``fails``
    (0-based); the other calls run the real one. Returns the list of call numbers made."""
    import benchmark.engines.local

    calls: list[int] = []
    real = benchmark.engines.local.evaluate_cell

    def cell(*args, **kwargs):
        calls.append(len(calls))
        if calls[-1] in fails:
            raise RuntimeError(f"cell call {calls[-1]} broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmark.engines.local, "evaluate_cell", cell)
    return calls


def cli_search(tmp: Path, raw: dict, *extra: str) -> int:
    from benchmark.cli import main

    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return main(["-q", "search", str(path), "--work-dir", str(tmp / "work"), "--tracking-uri", uri, *extra])


def test_three_failures_in_a_row_stop_the_worker_with_exit_status_1(
    pascal_root, tmp_path, monkeypatch, capsys
):
    failing_cell(monkeypatch, fails=set(range(100)))
    assert cli_search(tmp_path, floor_search(pascal_root, episodes=2)) == 1
    assert "3 trial(s) failed in a row" in capsys.readouterr().err
    study = optuna.load_study(study_name="floor-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3  # stopped at the third
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("floor-search")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`fss.kind` = 'search'")
    assert parent.info.status == "FAILED"


def test_failures_not_three_in_a_row_neither_count_as_trials_nor_fail_the_exit_status(
    pascal_root, tmp_path, monkeypatch
):
    # trials 0 and 2 fail: --trials 2 finished trials take four trials, and the worker exits 0
    calls = failing_cell(monkeypatch, fails={0, 2})
    assert cli_search(tmp_path, floor_search(pascal_root, episodes=2, trials=2)) == 0
    study = optuna.load_study(study_name="floor-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE] * 2
    assert len(calls) == 4


def test_a_search_whose_last_trial_failed_once_exits_0(pascal_root, tmp_path, monkeypatch):
    # a grid of two points: the second (last) trial fails, then the grid is walked and the worker ends
    failing_cell(monkeypatch, fails={1})
    raw = floor_search(
        pascal_root,
        episodes=2,
        trials=None,
        sampler={"type": "grid"},
        space={"threshold": {"type": "float", "low": 0.3, "high": 0.6, "grid": [0.3, 0.6]}},
    )
    assert cli_search(tmp_path, raw) == 0
    study = optuna.load_study(study_name="floor-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]


def test_ran_here_counts_this_workers_trials_only(pascal_root, tmp_path, monkeypatch):
    """Another worker finishes a trial while this one runs its first: it counts towards --trials,
    not towards this worker's ``ran_here``."""
    from optuna.distributions import FloatDistribution

    import benchmark.engines.local

    real = benchmark.engines.local.evaluate_cell

    def cell_while_another_worker_finishes_a_trial(*args, **kwargs):
        study = optuna.load_study(study_name="floor-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
        if len(study.trials) == 1:
            study.add_trial(
                optuna.trial.create_trial(
                    params={"threshold": 0.5},
                    distributions={"threshold": FloatDistribution(0.3, 0.95)},
                    value=0.25,
                    user_attrs={"worker": "elsewhere"},
                )
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmark.engines.local, "evaluate_cell", cell_while_another_worker_finishes_a_trial)
    spec = parse_search(floor_search(pascal_root, episodes=2, trials=3), source="floor.yaml")
    outcome = runner(spec, tmp_path).run()
    assert [t["number"] for t in outcome.trials] == [0, 1, 2] and outcome.ran_here == 2
    study = optuna.load_study(study_name="floor-search", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.trials[1].user_attrs["worker"] == "elsewhere"
    assert {t.user_attrs["worker"] for t in (study.trials[0], study.trials[2])} != {"elsewhere"}


def test_the_study_lock_of_a_file_storage_excludes_a_second_worker(tmp_path):
    import threading

    from benchmark.jobs.search import StudyLock

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first, second = StudyLock(url, None, "s"), StudyLock(url, None, "s")  # two workers' locks
    events: list[str] = []
    with first:
        with first:  # re-entrant in one worker
            pass

        def other() -> None:
            with second:
                events.append("second in")

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(0.5)
        events.append("first out")
    thread.join(10)
    assert events == ["first out", "second in"]
    impatient = StudyLock(url, None, "s", timeout_s=0.2)
    with first, pytest.raises(FssBenchError, match=r"another worker of Optuna study 's' has held"):
        impatient.__enter__()


def test_search_plots_are_in_percent_name_the_study_and_skip_what_shows_nothing(tmp_path, monkeypatch):
    import types

    import optuna
    from matplotlib.figure import Figure
    from optuna.distributions import FloatDistribution, IntDistribution

    from benchmark.jobs.search import save_plots

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="optuna-s1", direction="maximize")
    dists = {"threshold": FloatDistribution(0.1, 0.9), "imr_iters": IntDistribution(0, 5)}
    for th, value in [(0.2, 0.31), (0.5, 0.42), (0.7, 0.38), (0.4, 0.45)]:
        # every trial drew imr_iters 3: a contour over it would be empty
        study.add_trial(
            optuna.trial.create_trial(
                params={"threshold": th, "imr_iters": 3}, distributions=dists, value=value
            )
        )
    spec = types.SimpleNamespace(
        space={"threshold": None, "imr_iters": None},
        metric="miou",
        name="s",
        tuned_on_test=False,
        variant=types.SimpleNamespace(settings={"random_init": False}),
    )
    seen = {}

    def record(fig, path, **kwargs):
        ax = fig.axes[0]
        seen[Path(path).stem] = (
            fig._suptitle.get_text(),
            ax.get_ylabel(),
            [list(line.get_ydata()) for line in ax.lines]
            + [list(c.get_offsets()[:, 1]) for c in ax.collections if len(c.get_offsets())],
        )
        Path(path).write_bytes(b"png")

    monkeypatch.setattr(Figure, "savefig", record)
    out, notes = save_plots(study, tmp_path, spec)
    assert (
        "contour" not in out
        and "contour plot skipped: every completed trial drew one value of imr_iters (3)" in notes
    )
    assert set(out) == {"history", "importances", "slice"}
    title, ylabel, lines = seen["history"]
    assert title == "s (Optuna study optuna-s1): history" and ylabel == "miou (%)"
    values = sorted(float(v) for y in lines for v in y)
    assert values and values[-1] == pytest.approx(45.0)  # percent, not 0.45
    # no completed trial: nothing is drawn, each plot says why
    empty = optuna.create_study(study_name="optuna-s2")
    out, notes = save_plots(empty, tmp_path, spec)
    assert out == {} and all(n.endswith("skipped: no trial completed") for n in notes) and len(notes) == 4


def test_a_sqlite_storage_is_in_wal_mode_so_a_reader_left_open_blocks_no_commit(tmp_path):
    """A worker interrupted while it reads the study's trials leaves its read open while it records
    the interrupt: in SQLite's rollback-journal mode that read makes every commit fail with
    "database is locked" (seen in CI); the storage is put in WAL mode, where it blocks none."""
    import sqlite3

    from benchmark.jobs.search.storage import open_storage

    path = tmp_path / "optuna.db"
    storage = open_storage(f"sqlite:///{path}")
    study = optuna.create_study(study_name="wal", storage=storage)
    trial = study.ask()
    reader = sqlite3.connect(path, timeout=0.5)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = reader.execute("SELECT * FROM sqlite_master")
    assert rows.fetchone() is not None  # a statement read halfway: its read stays open
    writer = sqlite3.connect(path, timeout=0.5)
    writer.execute("CREATE TABLE probe (x)")
    writer.commit()  # in rollback-journal mode: "database is locked" after 0.5 s
    trial.set_user_attr("interrupted", True)  # through the storage, with the read still open
    assert study.trials[0].user_attrs == {"interrupted": True}
    reader.close()
    writer.close()


def test_an_interrupt_that_cannot_be_recorded_is_logged_and_still_ends_the_worker():
    """Recording the interrupt is best effort: a storage that refuses the write must not turn
    Ctrl-C into a failed trial and a worker that carries on (exit 0 instead of 130)."""
    from benchmark.jobs.search.objective import TrialObjective

    class LockedTrial:
        number = 7

        def set_user_attr(self, key, value):
            raise optuna.exceptions.StorageInternalError("database is locked")

    class Search:
        logged: list[str] = []

        def log(self, text):
            self.logged.append(text)

    objective = TrialObjective.__new__(TrialObjective)
    objective.search = Search()
    objective.interrupted(LockedTrial(), "run-id", episodes=3)  # does not raise
    assert len(Search.logged) == 1
    assert Search.logged[0].startswith("trial 7: could not record the interrupt (")
    assert "database is locked" in Search.logged[0] and "heartbeat is stale" in Search.logged[0]
