"""K-shot modes: HSNet's voting for any method, the FSSAM5s checkpoints' released path by default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import save_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.cell import CellSpec, evaluate_cell
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.features import Featurizer
from benchmark.evaluation.loader import ImageStore, load_episode
from benchmark.evaluation.predict import predict_episode, voted_mask
from benchmark.methods import build_method, get_method


def test_voted_mask_by_hand():
    masks = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 0, 0]], [[1, 1, 1, 0]]], dtype=torch.bool)  # K=3, 1x4
    # votes 3, 2, 1, 0; max vote 3 -> 1, 0.67, 0.33, 0 -> kept where >= 0.5
    assert voted_mask(masks).tolist() == [[True, True, False, False]]
    assert voted_mask(torch.zeros(2, 2, 2, dtype=torch.bool)).tolist() == [[False, False], [False, False]]
    # one shot out of two: its vote is the maximum, so the mask is that shot's
    two = torch.tensor([[[1, 0]], [[0, 0]]], dtype=torch.bool)
    assert voted_mask(two).tolist() == [[True, False]]


def test_a_voting_cell_equals_k_one_shot_predictions_voted_by_hand(pascal_root, tmp_path):
    from benchmark.data.prepared import PreparedDataset
    from benchmark.evaluation.loader import episode_target
    from benchmark.evaluation.metrics import intersection_union, prediction_at_label_size

    m = build_manifest(get_protocol("fssam"), ManifestRequest(pascal_root, 0, 3, episodes=6))
    save_manifest(m, tmp_path / "m.json")
    settings = get_method("mean_colour").resolve({"image_size": 64, "kshot": "voting"})
    table = evaluate_cell(
        CellSpec("mean_colour", settings, tmp_path / "m.json", pascal_root, "cpu"), FeatureCache(None)
    ).table
    method = build_method("mean_colour", settings, torch.device("cpu"))
    feat = Featurizer(method, FeatureCache(None))
    store = ImageStore(PreparedDataset(pascal_root))
    for ep, row in zip(m.episodes, table.itertuples(), strict=True):
        masks = []
        for s in ep.supports:  # each support alone, as its own 1-shot episode
            one = type(ep)(ep.id, ep.query, ep.cls, (s,))
            data = load_episode(store, m.images, one, 64)
            masks.append(
                prediction_at_label_size(
                    predict_episode(method, feat, data)[0], data.query_target.shape, 0.5
                ).numpy()
            )
        votes = np.sum(masks, axis=0)
        pred = votes / max(votes.max(), 1) >= 0.5
        target = episode_target(store.label(m.images[ep.query][1]), ep.cls)
        i_bg, u_bg, i_fg, u_fg = intersection_union(torch.from_numpy(pred), target)
        assert (row.I_fg, row.U_fg, row.I_bg, row.U_bg) == (i_fg, u_fg, i_bg, u_bg)
    joint = evaluate_cell(
        CellSpec(
            "mean_colour",
            get_method("mean_colour").resolve({"image_size": 64}),
            tmp_path / "m.json",
            pascal_root,
            "cpu",
        ),
        FeatureCache(None),
    ).table
    assert not joint[["I_fg", "U_fg"]].equals(table[["I_fg", "U_fg"]])
    with pytest.raises(FssBenchError, match="kshot: 'vote' is not one of"):
        get_method("mean_colour").resolve({"kshot": "vote"})


def test_fssam5s_checkpoints_run_the_released_kshot_path_unless_the_study_says_otherwise(
    pascal_root, tmp_path
):
    from benchmark.specs.study import load_study

    for arch, shot in (("FSSAM", 1), ("FSSAM5s", 5)):
        path = tmp_path / "exp" / "pascal" / arch / "split0" / "small" / "snapshot" / f"best_{shot}shot.pth"
        path.parent.mkdir(parents=True)
        torch.save({"state_dict": {}}, path)  # existence and format are checked at load, not the keys
    study = tmp_path / "s.yaml"
    study.write_text(
        f"name: s\ndata: {{pascal: {pascal_root}}}\nfolds: [0]\nshots: [1, 5]\n"
        f"model: {{fssam_checkpoint: '{tmp_path}/exp/{{dataset}}/{{arch}}/split{{fold}}/small/snapshot/best_{{shot}}shot.pth'}}\n"
        "variants: {fssam: {}}\n"
    )
    (v,) = load_study(study).variants
    assert v.cell_settings("pascal", 0, 1)["kshot_mode"] == "intended"  # one shot: no K-shot path
    assert v.cell_settings("pascal", 0, 5)["kshot_mode"] == "released"
    with pytest.warns(
        UserWarning, match=r"kshot_mode intended with the authors' FSSAM5s checkpoints \(\[5\]-shot"
    ):
        (v,) = load_study(study, ["variants.fssam.kshot_mode=intended"]).variants
    assert v.cell_settings("pascal", 0, 5)["kshot_mode"] == "intended"
    (v,) = load_study(study, ["model.fssam_checkpoint=null", "model.random_init=true"]).variants
    assert v.cell_settings("pascal", 0, 5)["kshot_mode"] == "intended"  # no FSSAM5s checkpoint loaded


def _fssam5s_files(tmp_path) -> str:
    """The authors' layout of checkpoints under ``tmp_path/exp``; returns the study's template."""
    for arch, shot in (("FSSAM", 1), ("FSSAM5s", 5)):
        path = tmp_path / "exp" / "pascal" / arch / "split0" / "small" / "snapshot" / f"best_{shot}shot.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {}}, path)
    return f"{tmp_path}/exp/{{dataset}}/{{arch}}/split{{fold}}/small/snapshot/best_{{shot}}shot.pth"


def test_a_search_cell_runs_the_fssam5s_checkpoint_as_a_study_cell_does(pascal_root, tmp_path):
    from benchmark.jobs.search import SearchCell, SearchRunner
    from benchmark.specs.search import parse_search

    def search(space: dict) -> SearchRunner:
        spec = parse_search(
            {
                "name": "s",
                "study": {
                    "name": "s",
                    "data": {"pascal": str(pascal_root)},
                    "folds": [0],
                    "shots": [5],
                    "model": {"fssam_checkpoint": _fssam5s_files(tmp_path)},
                    "variants": {"fssam": {}},
                },
                "space": space,
                "trials": 1,
            },
            source="s.yaml",
        )
        return SearchRunner(spec, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", work_dir=tmp_path / "w")

    cell = SearchCell("pascal", 0, 5, 321, tmp_path / "m.json")
    r = search({"threshold": {"type": "float", "low": 0.1, "high": 0.9}})
    settings = {**r.spec.variant.settings, "threshold": 0.3}
    spec = r.cell_spec(cell, settings)
    assert spec.settings["kshot_mode"] == "released"
    assert spec.settings["threshold"] == 0.3
    assert spec.settings["fssam_checkpoint"].endswith("/pascal/FSSAM5s/split0/small/snapshot/best_5shot.pth")
    # a searched kshot_mode is the trial's choice, never replaced
    r = search({"kshot_mode": {"type": "categorical", "choices": ["intended", "released"]}})
    spec = r.cell_spec(cell, {**r.spec.variant.settings, "kshot_mode": "intended"})
    assert spec.settings["kshot_mode"] == "intended"


def test_a_fixed_checkpoint_outside_the_fssam5s_folder_keeps_the_intended_path(pascal_root, tmp_path):
    from benchmark.specs.study import load_study
    from benchmark.specs.variants import loads_fssam5s

    own = tmp_path / "mine.pth"
    torch.save({"state_dict": {}}, own)
    study = tmp_path / "s.yaml"
    study.write_text(
        f"name: s\ndata: {{pascal: {pascal_root}}}\nfolds: [0]\nshots: [5]\n"
        f"model: {{fssam_checkpoint: '{own}'}}\nvariants: {{fssam: {{}}}}\n"
    )
    (v,) = load_study(study).variants
    assert v.cell_settings("pascal", 0, 5)["kshot_mode"] == "intended"  # a model of one's own
    assert not loads_fssam5s("fssam", {"fssam_checkpoint": str(own)}, 5)
    assert loads_fssam5s("fssam", {"fssam_checkpoint": "exp/pascal/FSSAM5s/split0/x.pth"}, 5)
    assert not loads_fssam5s("fssam", {"fssam_checkpoint": "exp/pascal/FSSAM5s/split0/x.pth"}, 1)
    assert not loads_fssam5s("naive_sam2", {"fssam_checkpoint": "exp/pascal/FSSAM5s/x.pth"}, 5)


def test_the_qualitative_figure_shows_the_voted_prediction_the_cell_scored(pascal_root, tmp_path):
    import yaml

    from benchmark.jobs.run import StudyRunner
    from benchmark.records.tracking import Tracker
    from benchmark.specs.study import load_study
    from reports.collect import collect_experiment
    from reports.episodes import episode_panels

    study = {
        "name": "vote",
        "data": {"pascal": str(pascal_root)},
        "folds": [0],
        "shots": [3],
        "episodes": 5,
        "model": {"random_init": True},
        "variants": {"mc": {"method": "mean_colour", "image_size": 64, "kshot": "voting"}},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    StudyRunner(
        load_study(tmp_path / "s.yaml"), tracking_uri=uri, work_dir=tmp_path / "w", progress=False
    ).run()
    tracker = Tracker(uri, create=False)
    data = collect_experiment(tracker, "vote", tmp_path / "c")
    (rid,) = data.cells["run_id"]
    table = data.episodes[rid]
    panels = episode_panels(data, tracker, rid, [int(e) for e in table["episode"]])
    for panel, row in zip(panels, table.itertuples(), strict=True):
        assert "prediction by voting" in panel.title
        valid, fg = panel.gt != 255, panel.gt == 1
        # the panel's prediction is the mask the cell scored: the same intersection and union
        assert int((panel.pred & fg & valid).sum()) == row.I_fg
        assert int(((panel.pred | fg) & valid).sum()) == row.U_fg
        assert panel.iou == pytest.approx(row.I_fg / row.U_fg if row.U_fg else 0.0)
