"""Every shipped study file is valid (pointed at synthetic data and random weights), and one runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.errors import FssBenchError
from benchmark.jobs.run import StudyRunner
from benchmark.specs.study import load_study

ABLATIONS = sorted((Path(__file__).resolve().parents[1] / "ablations").glob("*.yaml"))
FIELD = sorted((Path(__file__).resolve().parents[1] / "ablations" / "field").rglob("*.yaml"))
"""The field baselines' studies (SAM ViT-H, DINOv2-L): validated here, run only where real weights are."""
SCALE = sorted((Path(__file__).resolve().parents[1] / "ablations" / "scale").glob("*.yaml"))
"""The harness's scale grids (model-free variants; run at real size by `fssbench profile --footprint`)."""
TINY = [
    "model.sam2_size=t",
    "model.image_size=256",
    "model.dinov2=vits14",
    "model.dinov2_input_size=224",
    "model.random_init=true",
]


def overrides_for(path: Path, pascal_root: Path, coco_root: Path | None) -> list[str]:
    import yaml

    raw = yaml.safe_load(path.read_text())
    out = [f"data.pascal={pascal_root}"]
    if "coco" in raw["data"]:
        out.append(f"data.coco={coco_root}")
    for name, switches in (raw.get("variants") or {}).items():  # trained weights do not exist here
        if (switches or {}).get("finetuned_checkpoint"):
            out.append(f"variants.{name}.finetuned_checkpoint=null")
    if raw.get("model", {}).get("fssam_checkpoint"):  # random init refuses the authors' trained model
        out.append("model.fssam_checkpoint=null")
    return out + ["model.random_init=true"]


@pytest.mark.parametrize("path", ABLATIONS + FIELD + SCALE, ids=[p.stem for p in ABLATIONS + FIELD + SCALE])
def test_study_file_is_valid(path, pascal_root, coco_root):
    study = load_study(path, overrides_for(path, pascal_root, coco_root))
    assert study.variants and (study.random_init or path in SCALE)  # the scale grids have no model
    for v in study.variants:  # random init drops checkpoints
        assert not any(v.settings.get(k) for k in ("sam2_checkpoint", "sam_checkpoint", "dinov2_checkpoint"))


def test_the_field_studies_run_every_method_under_every_scoring(pascal_root, coco_root):
    methods = {"fssam", "naive_sam2", "gfsam", "persam", "persam_f", "matcher"}
    scorings = set()
    for path in [p for p in FIELD if p.stem != "field-demo"]:  # the demo: tiny models, PASCAL only
        study = load_study(path, overrides_for(path, pascal_root, coco_root))
        assert {v.method for v in study.variants} == methods, path
        assert set(study.data) == {"pascal", "coco"} and study.folds == [0, 1, 2, 3]
        scorings.add((study.protocol, (study.eval_size or 400) if study.protocol == "hsnet" else None))
    assert scorings == {("fssam", None), ("hsnet", 400), ("hsnet", 1024), ("hsnet", 518)}


def test_shipped_study_files_cover_the_paper_tables():
    names = {p.stem for p in ABLATIONS}
    assert {
        "main-table",
        "component-ablation",
        "prior-ablation",
        "imr-iterations",
        "backbone-sizes",
        "component-prior-ablation",
        "demo",
    } <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_study_file_runs(path, pascal_root, coco_root, tmp_path):
    extra = [*TINY, "episodes=2", "folds=[0]", "shots=[1]"]
    raw_overrides = overrides_for(path, pascal_root, coco_root) + extra
    study = load_study(path, raw_overrides)
    for v in study.variants:  # shrink the size variants too
        v.settings.update(sam2_size="t", dinov2="vits14", image_size=256, dinov2_input_size=224)
    cells = StudyRunner(
        study,
        tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
        work_dir=tmp_path / "w",
        progress=False,
        qualitative=0,
    ).run()
    # shrunk size variants can coincide with another variant's cell: those are skipped as done
    assert cells["status"].isin(["run", "skipped (done)"]).all() and (cells["status"] == "run").any()


def test_the_shipped_demo_study_is_the_one_the_demo_runs(tmp_path):
    import yaml

    from benchmark.file_paths import resolve_paths, study_path_fields
    from benchmark.jobs.demo import demo_study

    root = Path(__file__).resolve().parents[1]
    shipped = yaml.safe_load((root / "ablations" / "demo.yaml").read_text())
    # its data path, relative to the file, finds the data of a demo run in the repository root
    shipped = resolve_paths(shipped, study_path_fields, root / "ablations")
    assert shipped == demo_study(root / "fssbench-demo" / "data" / "pascal", 24)


def test_random_init_refuses_a_trained_checkpoint_it_would_replace(pascal_root, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        f"name: e\ndata: {{pascal: {pascal_root}}}\nfolds: [0]\nshots: [1]\nepisodes: 2\n"
        "model: {fssam_checkpoint: 'missing/best_{shot}shot.pth'}\nvariants: {fssam: {}}\n"
    )
    with pytest.raises(
        FssBenchError, match=r"variants.fssam: random_init is true but fssam_checkpoint is"
    ) as e:
        load_study(path, [*TINY])
    assert "model.fssam_checkpoint=null" in str(e.value)
    study = load_study(path, [*TINY, "model.fssam_checkpoint=null"])  # the fix the message names
    assert study.random_init and not study.variants[0].settings.get("fssam_checkpoint")


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["fssam", "hsnet"])
def test_the_field_demo_runs_every_method_on_the_same_manifests(protocol, pascal_root, tmp_path):
    path = next(p for p in FIELD if p.stem == "field-demo")
    overrides = [f"data.pascal={pascal_root}", f"protocol={protocol}", "episodes=2", "shots=[1,5]"]
    cells = StudyRunner(
        load_study(path, overrides),
        tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
        work_dir=tmp_path / "w",
        progress=False,
        qualitative=0,
    ).run()
    assert (cells["status"] == "run").all()
    assert set(cells["variant"]) == {"fssam", "naive-sam2", "gfsam", "persam", "persam-f", "matcher"}
    assert cells["miou_pct"].between(0, 100).all()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    manifests: dict[int, set[str]] = {}
    for run_id, shot in zip(cells["run_id"], cells["shot"], strict=True):
        manifests.setdefault(shot, set()).add(client.get_run(run_id).data.tags["fss.manifest_sha256"])
    assert all(len(shas) == 1 for shas in manifests.values()) and len(manifests) == 2  # one per shot
