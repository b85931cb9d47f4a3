"""Errors before any work, naming what to change: options, YAML, overrides, devices, checkpoints."""

from __future__ import annotations

import argparse

import pytest
import torch
import yaml

from benchmark.cli import build_parser, main
from tests.helpers import TINY


def study(tmp_path, root, **kw):
    d = {"name": "e", "data": {"pascal": str(root)}, "folds": [0], "shots": [1], "episodes": 2, "model": TINY}
    d |= {"variants": {"fssam": {}}, **kw}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def run(tmp_path, path, *extra):
    args = ["-q", "run", str(path), *extra, "--work-dir", str(tmp_path / "w"), "--tracking-uri"]
    return main([*args, f"sqlite:///{tmp_path / 'db' / 'm.db'}"])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def nothing_created(tmp_path) -> bool:
    return not (tmp_path / "w").exists() and not (tmp_path / "db").exists()


def test_demo_options_are_checked_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--episodes", "0", "--out", str(tmp_path / "demo")])
    assert exit_.value.code == 2 and not (tmp_path / "demo").exists()
    assert "argument --episodes: expected a positive integer, got 0" in capsys.readouterr().err


def test_every_option_has_help_and_run_has_device():
    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield path, action

    missing = [f"{path} {a.dest}" for path, a in walk(build_parser(), "fssbench") if not a.help]
    assert missing == []
    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    text = run_parser.format_help()
    assert "--device" in text and "(default: fssbench-runs)" in text


def test_yaml_syntax_error_names_line_and_column(tmp_path, capsys):
    bad = tmp_path / "s.yaml"
    bad.write_text("name: e\nfolds: [0, 1\nshots: [1]\n")
    assert main(["-q", "run", str(bad), "--work-dir", str(tmp_path / "w")]) == 2
    line = one_error_line(capsys)
    assert f"{bad}:3:" in line and "not valid YAML" in line


def test_an_override_typo_is_blamed_on_the_command_line_with_a_suggestion(pascal_root, tmp_path, capsys):
    path = study(tmp_path, pascal_root)
    assert run(tmp_path, path, "episdoes=3") == 2
    line = one_error_line(capsys)
    assert "command-line override 'episdoes=3'" in line and "did you mean 'episodes'?" in line
    assert run(tmp_path, path, "variants.fssam.imr_iter=2") == 2
    line = one_error_line(capsys)
    assert "command-line override 'variants.fssam.imr_iter=2'" in line and "did you mean 'imr_iters'?" in line
    assert nothing_created(tmp_path)


def test_a_bad_value_in_the_file_names_the_file(pascal_root, tmp_path, capsys):
    assert run(tmp_path, study(tmp_path, pascal_root, folds=[4])) == 2
    assert one_error_line(capsys).startswith(
        f"fssbench: error: {tmp_path / 's.yaml'}: folds: 4 is out of range"
    )
    assert run(tmp_path, study(tmp_path, pascal_root, protocl="fssam")) == 2
    assert "did you mean 'protocol'?" in one_error_line(capsys)
    assert nothing_created(tmp_path)


def test_a_missing_checkpoint_says_how_to_get_one(pascal_root, tmp_path, capsys):
    model = {
        **TINY,
        "random_init": False,
        "sam2_checkpoint": "/nope/sam2_hiera_tiny.pt",
        "dinov2_checkpoint": "/x",
    }
    assert run(tmp_path, study(tmp_path, pascal_root, model=model)) == 2
    line = one_error_line(capsys)
    assert "/nope/sam2_hiera_tiny.pt not found" in line and "README: Real data and weights" in line
    assert nothing_created(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_names_the_field_or_option(pascal_root, tmp_path, capsys):
    assert run(tmp_path, study(tmp_path, pascal_root, model={**TINY, "device": "cuda"})) == 2
    assert "s.yaml: model.device: device 'cuda' asked for, but CUDA is not available" in one_error_line(
        capsys
    )
    assert run(tmp_path, study(tmp_path, pascal_root), "--device", "cuda:0") == 2
    assert "--device: device 'cuda:0' asked for" in one_error_line(capsys)
    assert nothing_created(tmp_path)


def test_help_and_study_validation_import_neither_torch_nor_mlflow():
    """So that `fssbench --help` and validation errors answer in about a second."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, benchmark.cli, benchmark.specs.study, benchmark.specs.search; print(sorted({'torch', 'mlflow', 'sam2'} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_report_on_a_missing_store_creates_nothing_and_names_it(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    assert (
        main(["-q", "report", "--experiment", "x", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 2
    )
    line = one_error_line(capsys)
    assert f"tracking store {uri} does not exist" in line
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "r").exists()


def test_a_checkpoint_of_the_wrong_size_fails_before_anything_is_created(pascal_root, tmp_path, capsys):
    from fssam.sam2_adapter import build_sam2_model

    tiny = build_sam2_model("2.0", "t", 256, random_init=True, seed=0)
    ckpt = tmp_path / "sam2_hiera_small.pt"  # named like the small model, holds the tiny one
    torch.save({"model": tiny.state_dict()}, ckpt)
    model = {"sam2_size": "s", "image_size": 256, "sam2_checkpoint": str(ckpt), "prior": "none"}
    assert run(tmp_path, study(tmp_path, pascal_root, model=model)) == 2
    line = one_error_line(capsys)
    assert "variants.fssam (fssam/pascal/fold0/1shot/seed321)" in line
    assert "sam2_hiera_small.pt does not fit SAM 2 2.0 size s" in line
    # no tracking store and no run; only the (content-addressed) manifests and the hash cache exist
    assert not (tmp_path / "db").exists() and not (tmp_path / "w" / "cells").exists()


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("sqlite:///{tmp}/afile/mlflow.db", "{tmp}/afile is a file, not a folder"),
        ("sqlite:///{tmp}/text.db", "{tmp}/text.db is not a SQLite database"),
        ("file://{tmp}/mlruns", "MLflow's file store (file:// or a plain path) is in maintenance mode"),
        ("{tmp}/mlruns", "MLflow's file store (file:// or a plain path) is in maintenance mode"),
        ("sqlite:///{tmp}/folder", "{tmp}/folder is a folder; name a file in it"),
    ],
)
@pytest.mark.parametrize("command", ["run", "report"])
def test_a_tracking_store_fssbench_cannot_use_is_one_line_and_creates_nothing(
    pascal_root, tmp_path, capsys, uri, says, command
):
    (tmp_path / "afile").write_text("a file, not a folder\n")
    (tmp_path / "text.db").write_text("not a database\n")
    (tmp_path / "folder").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    uri = uri.format(tmp=tmp_path)
    if command == "run":
        args = ["-q", "run", str(study(tmp_path, pascal_root)), "--work-dir", str(tmp_path / "w")]
        before.append("s.yaml")
    else:
        args = ["-q", "report", "--experiment", "x", "--out", str(tmp_path / "r")]
    assert main([*args, "--tracking-uri", uri]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"fssbench: error: --tracking-uri {uri}: ") and says.format(tmp=tmp_path) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # no store, lock, work or out folder
    assert (tmp_path / "text.db").read_text() == "not a database\n"


def test_a_work_dir_that_is_a_file_is_one_line_and_creates_nothing(pascal_root, tmp_path, capsys):
    path = study(tmp_path, pascal_root)
    (tmp_path / "w").write_text("a file\n")
    uri = f"sqlite:///{tmp_path / 'db' / 'm.db'}"
    for work in (tmp_path / "w", tmp_path / "w" / "sub"):
        assert main(["-q", "run", str(path), "--work-dir", str(work), "--tracking-uri", uri]) == 2
        line = one_error_line(capsys)
        assert line.startswith(f"fssbench: error: --work-dir {work} ") and "name a folder" in line
    assert not (tmp_path / "db").exists() and (tmp_path / "w").read_text() == "a file\n"


def test_a_bad_shard_is_refused_at_parse_time_without_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\nfrom benchmark.cli import main\n"
        "try:\n    main(['run', 'missing.yaml', '--shard', '3/2'])\nexcept SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.split() == ["2", "False"], out
    assert "argument --shard: expected I/N with 0 <= I < N, e.g. 0/2, got '3/2'" in out.stderr
    assert build_parser().parse_args(["run", "s.yaml", "--shard", "1/3"]).shard == (1, 3)
    assert build_parser().parse_args(["run", "s.yaml"]).shard == (0, 1)


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("shots=[0]", "shots: 0 is out of range: each must be >= 1"),
        ("folds=[4]", "folds: 4 is out of range: each must be in 0..3"),
    ],
)
def test_a_number_out_of_range_says_the_range_in_words(pascal_root, tmp_path, capsys, override, says):
    assert run(tmp_path, study(tmp_path, pascal_root), override) == 2
    line = one_error_line(capsys)
    assert says in line and "None" not in line
    assert nothing_created(tmp_path)
