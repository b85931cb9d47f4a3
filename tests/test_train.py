"""``fssbench train``: episodes, fine-tuned checkpoints, a short real training run, exact resume,
scoring the result with ``fssbench run``, and the training file's validation."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from benchmark.data.classes import base_classes
from benchmark.data.prepared import PreparedDataset
from benchmark.errors import FssBenchError
from benchmark.methods import build_method, get_method
from benchmark.runner import StudyRunner
from benchmark.study import parse_study
from benchmark.train_data import batch_positions, draw_episode, train_set
from benchmark.train_file import parse_train
from benchmark.trainer import Trainer
from fssam.errors import FSSAMError
from fssam.finetune import apply_finetuned, read_finetuned, save_finetuned
from tests.helpers import TINY_128


def train_dict(root, **extra) -> dict:
    raw = {
        "name": "tiny-train",
        "method": "fssam",
        "data": {"pascal": str(root)},
        "fold": 0,
        "shot": 1,
        "model": dict(TINY_128),
        "train": {"batch_size": 2, "max_iters": 4, "checkpoint_every": 2},
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
    for name in ("loss", "lr", "grad_norm"):
        assert [m.step for m in client.get_metric_history(outcome.run_id, name)] == [1, 2, 3, 4]
    lrs = [m.value for m in client.get_metric_history(outcome.run_id, "lr")]
    ts = train_set(PreparedDataset(spec.data_root), 0, 1)
    total = 300 * (len(ts) // 2)  # epochs x iterations per epoch (batch 2, one process)
    assert lrs == pytest.approx([1e-3 * (1 - i / total) ** 0.9 for i in range(4)])  # poly, per iteration
    assert [m.step for m in client.get_metric_history(outcome.run_id, "val_miou")] == [2, 4]
    sha = run.data.tags["fss.checkpoint_sha256"]
    from fssam.hashing import file_sha256

    assert sha == file_sha256(tmp / "out" / "best.pth")
    assert {a.path for a in client.list_artifacts(outcome.run_id, "checkpoint")} == {
        "checkpoint/best.pth",
        "checkpoint/best.pth.json",
    }


def test_resume_reaches_bitwise_the_same_weights(trained, pascal_root, tmp_path):
    spec, _, _, tmp = trained
    half = parse_train(train_dict(pascal_root, train={"max_iters": 2}), "tiny.yaml")
    assert half.sha256 == spec.sha256  # max_iters is not part of what the weights depend on
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
        ({"val": {"every": "sometimes"}}, r"val.every \(iterations, or 'epoch'\)"),
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

    from benchmark.train_file import load_train

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
    coco = load_train(
        root / "ablations" / "train" / "coco.yaml", [f"data={{coco: {coco_root}}}", "model.random_init=true"]
    )
    assert coco.train["epochs"] == 75 and coco.val["patience"] == 25 and coco.augment.scale == (0.8, 1.25)


def test_export_to_the_authors_layout_round_trips_losslessly(pascal_root, tmp_path):
    from benchmark.methods.fssam import fssam_config
    from benchmark.trainer import export_checkpoint
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
    from benchmark.trainer import export_checkpoint
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
