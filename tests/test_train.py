"""``fssbench train``: episodes, fine-tuned checkpoints, a short real training run, exact resume,
scoring the result with ``fssbench run``, and the training file's validation."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from benchmark.data.classes import base_classes
from benchmark.data.prepared import PreparedDataset
from benchmark.errors import FssBenchError
from benchmark.jobs.run import StudyRunner
from benchmark.jobs.train.data import batch_positions, draw_episode, train_set
from benchmark.jobs.train.job import Trainer
from benchmark.methods import build_method, get_method
from benchmark.specs.study import parse_study
from benchmark.specs.train import parse_train
from fssam.errors import FSSAMError
from fssam.finetune import apply_finetuned, read_finetuned, save_finetuned
from tests.helpers import ROOT, TINY_128


def train_dict(root, **extra) -> dict:
    raw = {
        "name": "tiny-train",
        "method": "fssam",
        "data": {"pascal": str(root)},
        "fold": 0,
        "shot": 1,
        "model": dict(TINY_128),
        "train": {"batch_size": 2, "max_iters": 4, "checkpoint_every": 2, "workers": 2},
        "val": {"episodes": 4, "every": 2, "patience": 5},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def test_training_episodes_are_base_class_and_a_pure_function_of_position(pascal_root):
    ts = train_set(PreparedDataset(pascal_root), 0, 1)
    base = set(base_classes("pascal", 0))
    assert ts.classes == sorted(base) and len(ts) > 0
    for rec in ts.pool.images:  # filter_intersection: nothing but base classes in a training image
        assert set(rec.pixels) <= base
    seen = set()
    for pos in range(len(ts)):
        ep = draw_episode(ts, 321, 0, pos, 1)
        assert ep == draw_episode(ts, 321, 0, pos, 1)
        assert ep.cls in base and ep.supports[0] != ep.query
        query = next(r for r in ts.pool.images if r.id == ep.query)
        assert ep.cls in query.counted(ts.classes)
        assert ep.supports[0] in {r.id for r in ts.pool.per_class[ep.cls]}
        seen.add(ep.query)
    assert seen == {r.id for r in ts.pool.images}  # an epoch visits every image once as the query
    assert draw_episode(ts, 321, 1, 0, 1) != draw_episode(ts, 321, 0, 0, 1) or len(ts) == 1
    # two processes with batch 1 see exactly the global batch of one process with batch 2
    for g in range(3):
        assert batch_positions(g, 1, 2, 0) + batch_positions(g, 1, 2, 1) == batch_positions(g, 2, 1, 0)


def test_a_finetuned_checkpoint_round_trips_and_refuses_another_architecture(tmp_path):
    entry = get_method("fssam")
    settings = entry.resolve(dict(TINY_128))
    model = build_method("fssam", dict(settings), torch.device("cpu"))
    trained = copy.deepcopy(model.sam2)
    with torch.no_grad():
        for p in trained.sam_mask_decoder.parameters():
            p.add_(0.5)
    from benchmark.methods.fssam import fssam_config

    path = tmp_path / "ft.pth"
    save_finetuned(trained, path, "fssam", fssam_config(settings), {"iteration": 3})
    assert read_finetuned(path)["meta"] == {"iteration": 3}
    fresh = apply_finetuned(copy.deepcopy(model.sam2), path, fssam_config(settings))
    for (k, a), (_, b) in zip(fresh.state_dict().items(), trained.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    other = fssam_config(entry.resolve({**TINY_128, "image_size": 192}))
    with pytest.raises(
        FSSAMError, match="trained on SAM 2 2.0-t at 128 px, but this model is 2.0-t at 192 px"
    ):
        apply_finetuned(copy.deepcopy(model.sam2), path, other)
    torch.save({"model": {}}, tmp_path / "meta.pt")
    with pytest.raises(FSSAMError, match="not a fine-tuned checkpoint"):
        apply_finetuned(copy.deepcopy(model.sam2), tmp_path / "meta.pt", fssam_config(settings))


@pytest.fixture(scope="module")
def trained(pascal_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    spec = parse_train(train_dict(pascal_root), "tiny.yaml")
    trainer = Trainer(
        spec, tmp / "out", tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", progress=False, log=lambda m: None
    )
    outcome = trainer.run()
    return spec, trainer, outcome, tmp


def test_only_the_trainable_modules_change(trained):
    spec, trainer, outcome, tmp = trained
    assert outcome.iterations_run == 4 and outcome.trainable_params > 0 and outcome.frozen_params > 0
    base = build_method("fssam", dict(spec.settings), torch.device("cpu"))
    from benchmark.methods.fssam import fssam_config

    after = apply_finetuned(copy.deepcopy(base.sam2), tmp / "out" / "last.pth", fssam_config(spec.settings))
    trainable = ("sam_mask_decoder.", "memory_encoder.", "memory_attention.")
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, base.sam2.state_dict()[k])}
    assert changed and all(k.startswith(trainable) for k in changed)
    assert any(k.startswith("memory_attention.") for k in changed) and any(
        k.startswith("sam_mask_decoder.") for k in changed
    )


def test_mlflow_records_the_curves_validation_and_checkpoint(trained):
    spec, trainer, outcome, tmp = trained
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["fss.kind"] == "train"
    assert run.data.tags["fss.random_init"] == "true" and run.data.tags["fss.tuned_on_test"] == "false"
    # provenance: the base weights, the data root and the validation manifest it selected on
    tags = run.data.tags
    assert (
        tags["fss.weights.sam2"] == "random-init:seed0" and tags["fss.weights.dinov2"] == "random-init:seed1"
    )
    assert tags["fss.data_root"] == str(spec.data_root) == run.data.params["data_root"]
    (val,) = (tmp / "out" / "manifests").glob("val-fold0-1shot-*.json")
    assert tags["fss.val_manifest_sha256"] == json.loads(val.read_text())["sha256"]
    assert tags["mlflow.source.name"] == spec.source
    for name in ("loss", "lr", "grad_norm"):
        assert [m.step for m in client.get_metric_history(outcome.run_id, name)] == [1, 2, 3, 4]
    lrs = [m.value for m in sorted(client.get_metric_history(outcome.run_id, "lr"), key=lambda m: m.step)]
    ts = train_set(PreparedDataset(spec.data_root), 0, 1)
    assert len(ts) // 2 == 41  # iterations per epoch (batch 2, one process): max_iter = 300 x 41 = 12300
    # the release: lr = 1e-3 (1 - current_iter / 12300) ** 0.9 with current_iter = i + 1 for step i,
    # e.g. step 0: (12299 / 12300) ** 0.9 = exp(0.9 ln(1 - 1/12300)) = 0.99992683
    expected = [9.999268289708418e-4, 9.998536573467465e-4, 9.997804851276607e-4, 9.997073123135312e-4]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)
    assert [m.step for m in client.get_metric_history(outcome.run_id, "val_miou")] == [2, 4]
    sha = run.data.tags["fss.checkpoint_sha256"]
    from fssam.hashing import file_sha256

    assert sha == file_sha256(tmp / "out" / "best.pth")
    assert {a.path for a in client.list_artifacts(outcome.run_id, "checkpoint")} == {
        "checkpoint/best.pth",
        "checkpoint/best.pth.json",
    }


def validator_for(spec, out, manifest):
    from benchmark.jobs.train.distributed import Collectives
    from benchmark.jobs.train.validation import Validator
    from benchmark.workspace import Workspace

    cpu = torch.device("cpu")
    return Validator(spec, out, cpu, manifest, Workspace(out), Collectives(cpu, 1), 0, lambda m: None)


def test_validation_through_the_engine_scores_what_the_cell_function_scores(trained, tmp_path):
    # the validation's cell runs on the local engine with the live model: the value is the cell
    # function's, called directly on the same model and manifest, and the one best.pth was kept for
    from benchmark.evaluation.cell import CellSpec, evaluate_cell
    from benchmark.evaluation.feature_cache import FeatureCache

    spec, _, outcome, tmp = trained
    (manifest,) = (tmp / "out" / "manifests").glob("val-fold0-1shot-*.json")
    settings = {**spec.settings, "finetuned_checkpoint": str(outcome.best_checkpoint)}
    model = build_method(spec.method, settings, torch.device("cpu"))
    validator = validator_for(spec, tmp_path / "out", manifest)
    value = validator.score(model)
    assert all(m.training for m in model.trainable_modules().values())  # back to training mode
    model.eval()
    cell = CellSpec(spec.method, dict(spec.settings), manifest, spec.data_root, "cpu", "val")
    direct = evaluate_cell(cell, FeatureCache(None), key="direct", method=model).summary["miou"]
    assert 0 < value == direct == outcome.best_value
    assert validator.score(model) == value  # scored again, not resumed: the job keeps no journal
    assert not (tmp_path / "out" / "cells").exists() and (tmp_path / "out" / "locks").is_dir()


def test_a_failed_validation_fails_the_training_with_its_error_and_traceback(trained, tmp_path):
    from benchmark.jobs.train.validation import ValidationFailed

    spec, _, outcome, tmp = trained
    (manifest,) = (tmp / "out" / "manifests").glob("val-fold0-1shot-*.json")
    model = build_method(spec.method, dict(spec.settings), torch.device("cpu"))

    def broken(*args, **kwargs):
        raise RuntimeError("the model broke")

    model.predict = broken
    validator = validator_for(spec, tmp_path / "out", manifest)
    with pytest.raises(ValidationFailed, match=r"(?s)RuntimeError: the model broke\nTraceback .*in broken"):
        validator.score(model)
    assert all(m.training for m in model.trainable_modules().values())


def test_resume_reaches_bitwise_the_same_weights(trained, pascal_root, tmp_path):
    spec, _, _, tmp = trained
    # the first half in this process (no loader workers), the rest with 2 workers, as the fixture ran
    half = parse_train(train_dict(pascal_root, train={"max_iters": 2, "workers": 0}), "tiny.yaml")
    assert half.sha256 == spec.sha256  # max_iters and workers are not part of what the weights depend on
    out = tmp_path / "out"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Trainer(half, out, tracking_uri=uri, progress=False, log=lambda m: None).run()
    resumed = Trainer(spec, out, tracking_uri=uri, resume=True, progress=False, log=lambda m: None).run()
    assert resumed.iterations_run == 2
    a = read_finetuned(out / "last.pth")["modules"]
    b = read_finetuned(tmp / "out" / "last.pth")["modules"]
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    losses = MlflowClient(uri).get_metric_history(resumed.run_id, "loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]  # one run, every step once
    other = parse_train(train_dict(pascal_root, train={"lr": 0.01}), "tiny.yaml")
    with pytest.raises(FssBenchError, match="written by a different training config"):
        Trainer(other, out, tracking_uri=uri, resume=True, progress=False).run()


def test_a_trained_checkpoint_is_scored_by_fssbench_run(trained, pascal_root, tmp_path):
    spec, trainer, outcome, tmp = trained
    study = parse_study(
        {
            "name": "scored",
            "data": {"pascal": str(pascal_root)},
            "folds": [0],
            "shots": [1],
            "episodes": 3,
            "model": dict(TINY_128),
            "variants": {
                "frozen": {},
                "finetuned": {"finetuned_checkpoint": str(outcome.best_checkpoint)},
                "naive": {"method": "naive_sam2"},
            },
        }
    )
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cells = StudyRunner(study, tracking_uri=uri, work_dir=tmp_path / "w", progress=False, qualitative=0).run()
    assert (cells["status"] == "run").all() and cells["cell_key"].nunique() == 3
    run = MlflowClient(uri).get_run(cells[cells["variant"] == "finetuned"]["run_id"].iloc[0])
    from fssam.hashing import file_sha256

    assert run.data.tags["fss.weights.finetuned"] == file_sha256(outcome.best_checkpoint)
    assert run.data.tags["fss.trained_by"] == outcome.run_id


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"method": "mean_colour"},
            r"method: 'mean_colour' cannot be trained; trainable: \['fssam', 'naive_sam2'\]",
        ),
        ({"trian": {}}, r"trian: unknown field \(did you mean 'train'\?\)"),
        ({"train": {"lr": -1}}, r"train.lr: expected a number >= 0"),
        ({"train": {"bach_size": 2}}, r"train.bach_size: unknown field \(did you mean 'batch_size'\?\)"),
        ({"train": {"augment": {"scale": [1.2, 0.9]}}}, r"train.augment.scale: expected \[low, high\]"),
        ({"val": {"every": "sometimes"}}, r"val.every \(iterations, 'authors' or 'epoch'\)"),
        ({"train": {"workers": -1}}, r"train.workers: expected an integer >= 0, got -1"),
        ({"train": {"dist_timeout_s": 0}}, r"train.dist_timeout_s: expected an integer >= 1"),
        (
            {"model": {**TINY_128, "fssam_checkpoint": "x.pth"}},
            r"model.fssam_checkpoint: training starts from",
        ),
        (
            {"model": {**TINY_128, "imr_iter": 2}},
            r"model.imr_iter: unknown setting for every trainable method \(did you mean 'imr_iters'\?\)",
        ),
        ({"fold": 4}, r"fold: 4 is out of range"),
    ],
)
def test_training_file_mistakes_name_their_field(pascal_root, changes, message):
    with pytest.raises(FssBenchError, match=message):
        parse_train(train_dict(pascal_root, **changes), "t.yaml")


def test_selecting_on_test_is_refused_without_the_flag(pascal_root, tmp_path):
    spec = parse_train(train_dict(pascal_root, val={"kind": "test"}), "t.yaml")
    with pytest.raises(FssBenchError, match=r"t.yaml: val.kind: test would select .*--select-on-test"):
        Trainer(spec, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_the_shipped_training_files_are_valid(pascal_root, coco_root):
    from pathlib import Path

    from benchmark.specs.train import load_train

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "ablations" / "train").glob("*.yaml"))
    assert {p.stem for p in files} >= {"pascal", "coco", "demo"}
    for path in files:
        ds = next(iter(yaml.safe_load(path.read_text())["data"]))
        spec = load_train(
            path, [f"data={{{ds}: {pascal_root if ds == 'pascal' else coco_root}}}", "model.random_init=true"]
        )
        assert spec.method == "fssam"
    pascal = load_train(
        root / "ablations" / "train" / "pascal.yaml",
        [f"data={{pascal: {pascal_root}}}", "model.random_init=true"],
    )
    assert pascal.train["epochs"] == 300 and pascal.val["patience"] == 100 and pascal.train["lr"] == 1e-3
    assert pascal.augment.scale == (0.9, 1.1) and pascal.augment.crop == 512
    assert pascal.val["every"] == "authors" and pascal.train["workers"] == 4
    coco = load_train(
        root / "ablations" / "train" / "coco.yaml", [f"data={{coco: {coco_root}}}", "model.random_init=true"]
    )
    assert coco.train["epochs"] == 75 and coco.val["patience"] == 25 and coco.augment.scale == (0.8, 1.25)
    assert coco.val["every"] == "authors"


def test_export_to_the_authors_layout_round_trips_losslessly(pascal_root, tmp_path):
    from benchmark.jobs.train.export import export_checkpoint
    from benchmark.methods.fssam import fssam_config
    from fssam.model import FSSAM

    spec = parse_train(train_dict(pascal_root, model={**TINY_128, "dinov2_input_size": 518}), "t.yaml")
    model = build_method("fssam", dict(spec.settings), torch.device("cpu"))
    with torch.no_grad():
        for p in model.sam2.memory_attention.parameters():
            p.mul_(1.5)
    save_finetuned(model.sam2, tmp_path / "ft.pth", "fssam", fssam_config(spec.settings), {"iteration": 7})
    out = export_checkpoint(spec, tmp_path / "ft.pth", tmp_path / "authors.pth")
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["epoch"] == 7 and set(raw) == {"epoch", "state_dict"}
    assert all(k.startswith(("sam2.", "dino.")) for k in raw["state_dict"])
    back = FSSAM.from_authors_checkpoint(
        out, "sam2_hiera_t", image_size=128, dinov2="vits14", dinov2_input_size=518
    )
    for (k, a), (_, b) in zip(back.sam2.state_dict().items(), model.sam2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    for (k, a), (_, b) in zip(back.dino.state_dict().items(), model.dino.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    small = parse_train(train_dict(pascal_root), "t.yaml")  # 112 px DINOv2: no Meta grid to export
    with pytest.raises(FssBenchError, match="needs its 37x37 grid"):
        export_checkpoint(small, tmp_path / "ft.pth", tmp_path / "x.pth")


def test_a_fold_without_training_images_names_the_list(pascal_root, monkeypatch):
    ds = PreparedDataset(pascal_root)
    monkeypatch.setattr(ds, "records", lambda split: [])
    with pytest.raises(
        FssBenchError, match=r"records_train.json \(base classes of fold 0\): no training image"
    ):
        train_set(ds, 0, 1)


def test_a_trained_checkpoint_is_scored_by_its_mlflow_uri(trained, pascal_root, tmp_path):
    spec, trainer, outcome, tmp = trained
    uri = f"sqlite:///{tmp / 'mlflow.db'}"  # the store the training logged to
    study = parse_study(
        {
            "name": "by-uri",
            "data": {"pascal": str(pascal_root)},
            "folds": [0],
            "shots": [1],
            "episodes": 2,
            "model": dict(TINY_128),
            "variants": {"ft": {"finetuned_checkpoint": f"runs:/{outcome.run_id}/checkpoint/best.pth"}},
        }
    )
    cells = StudyRunner(study, tracking_uri=uri, work_dir=tmp_path / "w", progress=False, qualitative=0).run()
    assert (cells["status"] == "run").all()
    run = MlflowClient(uri).get_run(cells["run_id"].iloc[0])
    from fssam.hashing import file_sha256

    assert run.data.tags["fss.weights.finetuned"] == file_sha256(outcome.best_checkpoint)
    assert run.data.tags["fss.trained_by"] == outcome.run_id
    with pytest.raises(FssBenchError, match=r"variants.ft.finetuned_checkpoint: 'runs:/x' is not an MLflow"):
        parse_study({**study.raw, "variants": {"ft": {"finetuned_checkpoint": "runs:/x"}}})


def test_a_base_checkpoint_of_another_size_fails_before_anything_is_written(pascal_root, tmp_path):
    from fssam.sam2_adapter import build_sam2_model

    small = build_sam2_model("2.0", "s", 128, random_init=True, seed=0)  # a SAM 2-S file for a SAM 2-T model
    torch.save({"model": small.state_dict()}, tmp_path / "sam2_s.pt")
    raw = train_dict(
        pascal_root,
        model={"random_init": False, "prior": "none", "sam2_checkpoint": str(tmp_path / "sam2_s.pt")},
    )
    spec = parse_train(raw, "t.yaml")
    with pytest.raises(FssBenchError, match=r"t.yaml: model: .*sam2_s.pt"):
        Trainer(spec, tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", progress=False).run()
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.db").exists()


def test_naive_sam2_trains_with_the_same_file_and_exports_to_meta_s_layout(pascal_root, tmp_path):
    from benchmark.jobs.train.export import export_checkpoint
    from fssam.sam2_adapter import build_sam2_model

    raw = train_dict(
        pascal_root, method="naive_sam2", train={"max_iters": 1}, val={"every": 1, "episodes": 2}
    )
    spec = parse_train(raw, "t.yaml")  # the FSSAM-only settings of the file (dinov2...) are left to FSSAM
    assert spec.method == "naive_sam2" and "dinov2" not in spec.settings
    outcome = Trainer(
        spec, tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", progress=False
    ).run()
    base = build_method("naive_sam2", dict(spec.settings), torch.device("cpu"))
    sam = base.sam2  # the three modules FSSAM trains, counted here from SAM 2 itself
    expected = sum(
        p.numel()
        for m in (sam.sam_mask_decoder, sam.memory_encoder, sam.memory_attention)
        for p in m.parameters()
    )
    assert outcome.iterations_run == 1 and outcome.trainable_params == expected
    assert outcome.frozen_params == sum(p.numel() for p in sam.parameters()) - expected
    out = export_checkpoint(spec, outcome.best_checkpoint, tmp_path / "naive.pt")
    loaded = build_sam2_model("2.0", "t", 128, checkpoint=out)  # what sam2_checkpoint reads
    from benchmark.methods.fssam import fssam_config

    trained = apply_finetuned(base.sam2, outcome.best_checkpoint, fssam_config(spec.settings))
    for (k, a), (_, b) in zip(loaded.state_dict().items(), trained.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_a_corrupt_training_state_is_one_line_not_a_traceback(pascal_root, tmp_path):
    spec = parse_train(train_dict(pascal_root), "t.yaml")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train-state.pt").write_bytes(b"not a torch file")
    with pytest.raises(FssBenchError, match=r"train-state.pt: unreadable training state"):
        Trainer(
            spec, tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", resume=True, progress=False
        ).run()


# ------------------------------------------------------------------ the authors' recipe, multi-GPU


def test_poly_lr_counts_iterations_from_one_as_the_release_does():
    from fssam.train import poly_lr

    # the release (util.poly_learning_rate with current_iter = epoch * len(loader) + i + 1):
    # lr = base_lr * (1 - current_iter / max_iter) ** power; with max_iter = 4, power 0.9:
    # step 0: 1e-3 * 0.75 ** 0.9 = 7.718895e-4; step 1: 1e-3 * 0.5 ** 0.9 = 5.358867e-4; step 3 (last): 0
    assert poly_lr(1e-3, 1, 4, 0.9) == pytest.approx(7.718895067235705e-4, rel=1e-12)
    assert poly_lr(1e-3, 2, 4, 0.9) == pytest.approx(5.358867312681466e-4, rel=1e-12)
    assert poly_lr(1e-3, 4, 4, 0.9) == 0.0
    with pytest.raises(ValueError, match="current_iter 5 is outside"):
        poly_lr(1e-3, 5, 4)


def test_the_authors_validation_cadence():
    from benchmark.jobs.train.validation import validation_due

    def due(per_epoch, epochs, every, upto):
        return [d for d in range(1, upto + 1) if validation_due(d, per_epoch, epochs, every)]

    # epochs <= 100 (COCO's 75): every epoch's end, and after the step of index round(n / 2)
    assert due(5, 75, "authors", 15) == [3, 5, 8, 10, 13, 15]  # round(2.5) = 2: the 3rd step
    assert due(4, 75, "authors", 8) == [3, 4, 7, 8]  # round(2) = 2
    assert due(7, 75, "authors", 7) == [5, 7]  # round(3.5) = 4: the 5th step
    assert due(2, 75, "authors", 4) == [2, 4]  # round(1) = 1 is the last step: validated once
    # epochs > 100 (PASCAL's 300): epoch ends only, mid-epoch too from epoch index 101 on
    assert due(4, 300, "authors", 412) == [4 * e for e in range(1, 102)] + [407, 408, 411, 412]
    assert due(5, 75, "epoch", 15) == [5, 10, 15]
    assert due(5, 75, 4, 15) == [4, 8, 12]


@pytest.fixture
def four_image_epochs(monkeypatch):
    """The fold's train list cut to its first 4 queries (supports still drawn from the whole list):
    with batch 1, an epoch is 4 iterations."""
    import benchmark.jobs.train.job as job_module
    from benchmark.data.lists import FoldPool
    from benchmark.jobs.train.data import TrainSet

    real = job_module.train_set

    def first_four(root, fold, shot, split="interleaved", holdout_fraction=None):
        ts = real(root, fold, shot, split, holdout_fraction)
        cut = TrainSet(ts.dataset, ts.fold, ts.classes, FoldPool(ts.pool.images[:4], ts.pool.per_class))
        cut.__dict__["by_id"] = ts.by_id  # every image of the list, the supports' too
        return cut

    monkeypatch.setattr(job_module, "train_set", first_four)


def scripted_validation(monkeypatch, values: list[float]) -> None:
    """Validation returns ``values`` in turn (the cadence and the patience are under test, not the model):
    the cell function under the local engine, which the validation runs its cell on, is scripted."""
    import types

    import benchmark.engines.local as local_engine

    left = list(values)

    def scripted(*args, **kwargs):
        assert kwargs["method"] is not None and kwargs["journal_path"] is None  # the live model, no journal
        return types.SimpleNamespace(
            summary={"miou": left.pop(0)}, metrics={}, artifacts=[], peak_memory_kind="", run_stats=dict
        )

    monkeypatch.setattr(local_engine, "evaluate_cell", scripted)


def steps_of(uri: str, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, name))


@pytest.mark.slow  # 8 iterations
def test_mid_epoch_validation_and_patience_in_epochs_as_the_release(
    pascal_root, tmp_path, monkeypatch, four_image_epochs
):
    # 4 epochs of 4 iterations (max_iter 16); validations after 3 (mid-epoch: the step of index
    # round(4 / 2) = 2) and 4, then 7 and 8
    scripted_validation(monkeypatch, [0.5, 0.4, 0.3, 0.2])
    raw = train_dict(
        pascal_root,
        train={"batch_size": 1, "epochs": 4, "max_iters": None, "workers": 2, "checkpoint_every": 100},
        val={"every": "authors", "episodes": 2, "patience": 1},
    )
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    outcome = Trainer(parse_train(raw, "t.yaml"), tmp_path / "out", tracking_uri=uri, progress=False).run()
    assert steps_of(uri, outcome.run_id, "val_miou") == [(3, 0.5), (4, 0.4), (7, 0.3), (8, 0.2)]
    # epoch 0 improved (mid-epoch: kept as best.pth), epoch 1 did not: patience 1 (epoch) stops
    # after it; counting validations, the first worse one (iteration 4) would have stopped it
    assert outcome.stopped_early and outcome.iterations_run == 8
    assert (outcome.best_iteration, outcome.best_value) == (3, 0.5)
    assert read_finetuned(tmp_path / "out" / "best.pth")["meta"]["iteration"] == 3
    state = torch.load(tmp_path / "out" / "train-state.pt", weights_only=False)
    assert state["bad"] == 1 and state["global_iter"] == 8
    # 1e-3 (1 - (i + 1) / 16) ** 0.9 at steps i = 0, 1, 7: 1e-3 x (15/16, 14/16, 8/16) ** 0.9
    lrs = dict(steps_of(uri, outcome.run_id, "lr"))
    assert [lrs[1], lrs[2], lrs[8]] == pytest.approx(
        [9.435700528992709e-4, 8.867623542572073e-4, 5.358867312681466e-4], rel=1e-12
    )


def test_the_loader_gives_the_same_batches_with_0_and_2_workers(pascal_root):
    from benchmark.evaluation.loader import ImageStore
    from benchmark.jobs.train.data import TrainBatches, collate, load_train_episode, train_loader
    from fssam.augment import AugmentConfig

    ts = train_set(PreparedDataset(pascal_root), 0, 2)
    store = ImageStore(PreparedDataset(pascal_root))
    aug = AugmentConfig(crop=64)
    per_epoch = len(ts) // 4  # batch 2 x 2 processes
    batches = TrainBatches(store, ts, 321, 2, aug, per_epoch, batch=2, world=2, rank=1)
    start, stop = per_epoch - 1, per_epoch + 1  # the last batch of epoch 0 and the first of epoch 1
    # what the step loop drew before: rank 1 of global batch g takes positions 4g + 2, 4g + 3
    expected = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the loader builds samples with one thread, whatever the machine
    for it in range(start, stop):
        epoch, g = divmod(it, per_epoch)
        positions = [4 * g + 2, 4 * g + 3]
        expected.append(
            collate(
                [
                    load_train_episode(store, ts, draw_episode(ts, 321, epoch, p, 2), 321, epoch, aug)
                    for p in positions
                ]
            )
        )
    torch.set_num_threads(threads)
    rng_before = torch.get_rng_state()
    for workers in (0, 2):
        got = list(train_loader(batches, start, stop, workers))
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert a.keys() == b.keys() and a["supports"].shape == (2, 2, 3, 64, 64)
            for k in a:
                assert torch.equal(a[k], b[k]), (workers, k)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the loader draws from its own generator


def test_collectives_place_every_tensor_on_the_model_device(monkeypatch):
    from benchmark.jobs.train.distributed import Collectives

    seen = []
    monkeypatch.setattr(torch.distributed, "broadcast", lambda t, src: seen.append(("broadcast", t.device)))
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: seen.append(("all_reduce", t.device)))
    coll = Collectives("meta", world=2)  # any device but the CPU the inputs are on
    out = coll.broadcast(torch.zeros(1, dtype=torch.float64), 0)
    mean = coll.mean(torch.ones(3))
    assert seen == [("broadcast", torch.device("meta")), ("all_reduce", torch.device("meta"))]
    assert out.device.type == "meta" and mean.device.type == "meta" and mean.shape == (3,)


def test_the_trainer_runs_collectives_only_through_collectives():
    """Outside ``init_distributed`` and ``Collectives``, no module of the training package calls a
    ``torch.distributed`` collective (one that made its own tensor could put it on the CPU, which
    NCCL refuses)."""
    import ast

    collectives = {"broadcast", "all_reduce", "all_gather", "all_gather_object", "broadcast_object_list"}
    collectives |= {"reduce", "gather", "scatter", "barrier", "reduce_scatter", "all_to_all"}
    modules = sorted((ROOT / "benchmark" / "jobs" / "train").glob("*.py"))
    assert {p.name for p in modules} >= {"distributed.py", "job.py", "loop.py", "validation.py", "state.py"}
    found = []
    for path in modules:
        for top in ast.parse(path.read_text()).body:
            if isinstance(top, (ast.FunctionDef, ast.ClassDef)) and top.name in (
                "init_distributed",
                "Collectives",
            ):
                continue
            for node in ast.walk(top):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.distributed"):
                    found.append(f"{path.name}: from {node.module} import")
                if isinstance(node, ast.Import) and any(
                    a.name.startswith("torch.distributed") for a in node.names
                ):
                    found.append(f"{path.name}: import torch.distributed")  # an alias would hide its calls
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in collectives
                    and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "distributed"
                ):
                    found.append(f"{path.name}: torch.distributed.{node.attr}")
    assert found == []


def test_collectives_between_two_processes(tmp_path):
    import socket
    from datetime import timedelta

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from tests.dist_workers import collectives_worker

    mp.spawn(collectives_worker, args=(port, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["refused"] == "No backend type associated with device type cpu"
        assert got["timeout"] == timedelta(seconds=1234)  # train.dist_timeout_s
        assert torch.equal(got["value"], torch.tensor([0.4375], dtype=torch.float64))  # process 0's
        assert torch.equal(got["mean"], torch.tensor([2.0, -0.5]))  # ([1, 0] + [3, -1]) / 2
        assert got["gathered"] == [{"rank": 0}, {"rank": 1}]


def test_k_shot_training_trains_the_k_shot_path_its_checkpoint_is_scored_with(
    pascal_root, tmp_path, monkeypatch, four_image_epochs
):
    import fssam.model as fssam_model

    released = []
    real = fssam_model.Calibration

    def recording(*args, **kwargs):
        calibration = real(*args, **kwargs)
        released.append(calibration.released)
        return calibration

    monkeypatch.setattr(fssam_model, "Calibration", recording)
    scripted_validation(monkeypatch, [0.5])  # the model runs for the training step only
    raw = train_dict(
        pascal_root,
        shot=2,
        model={"kshot_mode": "released"},  # the release's FSSAM5s recipe (its bug B2)
        train={"batch_size": 1, "max_iters": 1, "workers": 0},
        val={"every": 1, "episodes": 2},
    )
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    outcome = Trainer(parse_train(raw, "t.yaml"), tmp_path / "out", tracking_uri=uri, progress=False).run()
    assert released == [True]  # the training step's SCMA ran the released K-shot path
    assert read_finetuned(outcome.best_checkpoint)["meta"]["kshot_mode"] == "released"
    assert MlflowClient(uri).get_run(outcome.run_id).data.params["kshot_mode"] == "released"
    # a study cell scoring the checkpoint runs the path it was trained with (read off best.pth.json),
    # unless the study names one; by default a K-shot training trains `intended`
    record = json.loads((tmp_path / "out" / "best.pth.json").read_text())
    assert record["kshot_mode"] == "released"

    def cell_mode(variant: dict, shot: int = 2) -> str:
        study = parse_study(
            {
                "name": "k",
                "data": {"pascal": str(pascal_root)},
                "folds": [0],
                "shots": [shot],
                "episodes": 2,
                "model": dict(TINY_128),
                "variants": {"ft": {"finetuned_checkpoint": str(outcome.best_checkpoint), **variant}},
            }
        )
        return study.variants[0].cell_settings("pascal", 0, shot)["kshot_mode"]

    assert cell_mode({}) == "released"
    assert cell_mode({"kshot_mode": "intended"}) == "intended"  # the study's own choice wins
    assert parse_train(train_dict(pascal_root, shot=2), "t.yaml").settings["kshot_mode"] == "intended"
    record["kshot_mode"] = "intended"  # a checkpoint trained the default way
    (tmp_path / "out" / "best.pth.json").write_text(json.dumps(record))
    assert cell_mode({}) == "intended"


def test_loader_workers_are_capped_at_the_cpus_the_process_may_use(monkeypatch):
    import os

    from benchmark.jobs.train.data import loader_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [loader_workers(n) for n in (0, 1, 2, 4)] == [0, 1, 2, 2]


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_training_messages_start_their_own_lines_in_a_redirected_log(pascal_root, tmp_path):
    """``fssbench train ... > log 2>&1``: the validation lines are not glued onto the progress bar's."""
    import subprocess
    import sys

    raw = train_dict(pascal_root, train={"max_iters": 2, "workers": 0}, val={"every": 1, "episodes": 2})
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "benchmark.cli", "train", str(path), "--out", str(tmp_path / "out")]
    cmd += ["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    with open(tmp_path / "log", "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, cwd=tmp_path)
    lines = (tmp_path / "log").read_text().replace("\r", "\n").split("\n")
    validations = [ln for ln in lines if "validation mIoU" in ln and "best validation" not in ln]
    assert len(validations) == 2 and all(ln.startswith("iteration ") for ln in validations), validations
