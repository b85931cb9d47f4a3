"""``data check`` on a process pool: the same problems, in the same order, for any worker count."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from benchmark.cli import main
from benchmark.data.check import check_prepared


def plant_problems(root) -> dict[str, str]:
    """Break five things in a copy of a prepared root; returns path -> what its problem says."""
    lines = (root / "lists/val.txt").read_text().splitlines()
    pairs = [[root / p for p in line.split()] for line in lines[:4]]
    (img1, _), (_, lab2), (_, lab3), (_, lab4) = pairs
    img1.write_bytes(img1.read_bytes()[:300])  # truncated JPEG
    Image.fromarray(np.zeros((5, 5), np.uint8), mode="L").save(lab2)  # wrong size
    a = np.array(Image.open(lab3))
    a[0, 0], a[0, 1] = 77, 42
    Image.fromarray(a, mode="L").save(lab3)  # unknown label values
    lab4.unlink()  # missing mask
    (root / "lists/fss_list/val/data_list_2.txt").write_text("")  # empty list
    return {
        str(img1): "truncated",
        str(lab2): "differs from image",
        str(lab3): "[42, 77]",
        str(lab4): "",
        "data_list_2.txt": "list is empty",
    }


def test_two_workers_report_exactly_what_one_reports(pascal_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(pascal_root, root, symlinks=False)
    planted = plant_problems(root)
    one = check_prepared(root, progress=False, workers=1)
    two = check_prepared(root, progress=False, workers=2)
    assert one.problems == two.problems and one.checked_images == two.checked_images > 32
    assert len(one.problems) == len(planted)  # each planted problem once, nothing else
    for where, what in planted.items():
        assert any(where in p and what in p for p in one.problems), (where, one.problems)
    assert main(["-q", "data", "check", str(root), "--workers", "2"]) == 1
    assert capsys.readouterr().out.splitlines() == one.problems
