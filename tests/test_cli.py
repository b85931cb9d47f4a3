"""synth -> prepare -> check -> episodes from the command line, for both datasets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.cli import main
from benchmark.episodes.manifest import load_manifest


def episodes(root: Path, dataset: str, out: Path, *extra: str) -> int:
    return main(
        [
            "-q",
            "episodes",
            "--dataset",
            dataset,
            "--data-root",
            str(root),
            "--fold",
            "1",
            "--shot",
            "5",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_episodes_are_byte_identical_and_seed_dependent(pascal_root, tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    assert episodes(pascal_root, "pascal", a) == 0
    assert episodes(pascal_root, "pascal", b) == 0
    assert episodes(pascal_root, "pascal", c, "--seed", "7") == 0
    printed = capsys.readouterr().out.splitlines()
    assert a.read_bytes() == b.read_bytes()
    ha, hb, hc = (load_manifest(p).sha256 for p in (a, b, c))
    assert ha == hb != hc
    assert printed[0].split()[0] == ha and printed[2].split()[0] == hc  # the hash is what is printed
    m = load_manifest(a)
    assert (m.kind, m.protocol, m.seed, m.num_episodes, m.shot) == (
        "test",
        "fssam",
        321,
        1000,
        5,
    )
    assert m.classes == (6, 7, 8, 9, 10)
    for e in m.episodes[:50]:  # every referenced image resolves to a file of the root
        for i in [e.query, *e.supports]:
            assert all((pascal_root / rel).is_file() for rel in m.images[i])
    # an existing manifest with other content is not silently replaced
    assert episodes(pascal_root, "pascal", a, "--seed", "7") == 2


def test_val_kind_and_hsnet_protocol(pascal_root, tmp_path):
    v = tmp_path / "v.json"
    assert episodes(pascal_root, "pascal", v, "--kind", "val", "--protocol", "hsnet", "--episodes", "60") == 0
    m = load_manifest(v)
    assert m.kind == "val" and m.seed == 0 and len(m.episodes) == 60
    assert {e.cls for e in m.episodes} <= set(m.classes) and 6 not in m.classes


def test_coco_episodes_for_both_class_splits(coco_root, tmp_path):
    i, c = tmp_path / "i.json", tmp_path / "c.json"
    assert episodes(coco_root, "coco", i, "--episodes", "100") == 0
    assert episodes(coco_root, "coco", c, "--episodes", "100", "--split", "contiguous") == 0
    mi, mc = load_manifest(i), load_manifest(c)
    assert mi.classes == tuple(4 * m + 2 for m in range(20)) and mc.classes == tuple(range(21, 41))
    assert mi.class_split == "interleaved" and mc.class_split == "contiguous"
    assert mi.sha256 != mc.sha256
    assert episodes(coco_root, "pascal", i, "--overwrite") == 2  # dataset mismatch is an error


def test_check_reports_every_problem(pascal_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(pascal_root, root, symlinks=False)
    assert main(["-q", "data", "check", str(root)]) == 0
    capsys.readouterr()
    lines = (root / "lists/val.txt").read_text().splitlines()
    img1, lab1 = (root / p for p in lines[0].split())
    img1.write_bytes(img1.read_bytes()[:300])  # truncated JPEG
    _, lab2 = (root / p for p in lines[1].split())
    Image.fromarray(np.zeros((5, 5), np.uint8), mode="L").save(lab2)  # wrong size
    _, lab3 = (root / p for p in lines[2].split())
    a = np.array(Image.open(lab3))
    a[0, 0] = 77
    Image.fromarray(a, mode="L").save(lab3)  # unknown label value
    (root / "lists/fss_list/val/data_list_2.txt").write_text("")  # empty list
    code = main(["-q", "data", "check", str(root)])
    out = capsys.readouterr().out
    assert code == 1
    assert str(img1) in out and "truncated" in out
    assert str(lab2) in out and "differs from image" in out
    assert str(lab3) in out and "[77]" in out
    assert "data_list_2.txt: list is empty" in out


def test_console_entry_point_runs(tmp_path):
    exe = shutil.which("fssbench")
    cmd = [exe] if exe else [sys.executable, "-m", "benchmark.cli"]
    r = subprocess.run([*cmd, "data", "check", str(tmp_path / "missing")], capture_output=True, text=True)
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == f"fssbench: error: {tmp_path / 'missing'}: data root not found; run `fssbench data prepare ...` first"
    )


def test_prepared_metadata_is_complete(pascal_root):
    meta = json.loads((pascal_root / "dataset.json").read_text())
    assert meta["dataset"] == "pascal" and meta["num_classes"] == 20 and meta["min_class_pixels"] == 2048
    assert meta["splits"]["val"]["images"] == 100
