"""Bad inputs end in a one-line error naming the file, exit status 2, and no partial output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.cli import main


def run(args: list[str], capsys) -> tuple[int, str]:
    code = main(["-q", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def prepare_pascal_args(raw: Path, out: Path) -> list[str]:
    return [
        "data",
        "prepare",
        "pascal",
        "--voc",
        str(raw / "VOCdevkit"),
        "--sbd",
        str(raw / "benchmark_RELEASE"),
        "--out",
        str(out),
        "--workers",
        "1",
    ]


def assert_clean_failure(code: int, err: str, out: Path, names: str) -> None:
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("fssbench: error: ")
    assert names in err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temp folders left


def a_val_id(raw: Path) -> str:
    return (raw / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split()[3]


def test_missing_directory(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(
        [
            "data",
            "prepare",
            "pascal",
            "--voc",
            str(tmp_path / "nope"),
            "--sbd",
            str(tmp_path),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert_clean_failure(code, err, out, str(tmp_path / "nope"))


def test_corrupt_jpeg(pascal_raw_copy, tmp_path, capsys):
    jpg = pascal_raw_copy / "VOCdevkit/VOC2012/JPEGImages" / f"{a_val_id(pascal_raw_copy)}.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])  # truncated
    out = tmp_path / "prepared"
    code, err = run(prepare_pascal_args(pascal_raw_copy, out), capsys)
    assert_clean_failure(code, err, out, str(jpg))


def test_wrong_mask_size(pascal_raw_copy, tmp_path, capsys):
    p = pascal_raw_copy / "VOCdevkit/VOC2012/SegmentationClass" / f"{a_val_id(pascal_raw_copy)}.png"
    im = Image.open(p)
    im.resize((im.width + 7, im.height), Image.NEAREST).save(p)
    out = tmp_path / "prepared"
    code, err = run(prepare_pascal_args(pascal_raw_copy, out), capsys)
    assert_clean_failure(code, err, out, str(p))
    assert "differs from image" in err


def test_unknown_class_id(pascal_raw_copy, tmp_path, capsys):
    p = pascal_raw_copy / "VOCdevkit/VOC2012/SegmentationClass" / f"{a_val_id(pascal_raw_copy)}.png"
    im = Image.open(p)
    a = np.array(im)
    a[0, 0] = 42
    out_im = Image.fromarray(a, mode="P")
    out_im.putpalette(im.getpalette())
    out_im.save(p)
    out = tmp_path / "prepared"
    code, err = run(prepare_pascal_args(pascal_raw_copy, out), capsys)
    assert_clean_failure(code, err, out, str(p))
    assert "42" in err


def test_coco_unknown_category_and_size_mismatch(coco_raw_copy, tmp_path, capsys):
    jp = coco_raw_copy / "annotations/instances_val2014.json"
    original = jp.read_text()
    data = json.loads(original)
    data["annotations"][0]["category_id"] = 12  # not a COCO 2014 category id
    jp.write_text(json.dumps(data))
    out = tmp_path / "prepared"
    code, err = run(["data", "prepare", "coco", "--coco", str(coco_raw_copy), "--out", str(out)], capsys)
    assert_clean_failure(code, err, out, str(jp))
    assert "unknown category id 12" in err

    data = json.loads(original)
    data["images"][0]["width"] += 3
    jp.write_text(json.dumps(data))
    code, err = run(["data", "prepare", "coco", "--coco", str(coco_raw_copy), "--out", str(out)], capsys)
    assert_clean_failure(code, err, out, data["images"][0]["file_name"])


def test_failed_overwrite_keeps_the_previous_output(pascal_raw_copy, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert run(prepare_pascal_args(pascal_raw_copy, out), capsys)[0] == 0
    before = (out / "lists/train.txt").read_text()
    code, err = run(prepare_pascal_args(pascal_raw_copy, out), capsys)  # exists, no --overwrite
    assert code == 2 and "--overwrite" in err
    jpg = pascal_raw_copy / "VOCdevkit/VOC2012/JPEGImages" / f"{a_val_id(pascal_raw_copy)}.jpg"
    jpg.write_bytes(b"not a jpeg")
    code, err = run([*prepare_pascal_args(pascal_raw_copy, out), "--overwrite"], capsys)
    assert code == 2 and str(jpg) in err
    assert (out / "lists/train.txt").read_text() == before  # the old root is intact


def test_class_with_too_few_images_for_the_shot(pascal_root, tmp_path, capsys):
    out = tmp_path / "m.json"
    code, err = run(
        [
            "episodes",
            "--dataset",
            "pascal",
            "--data-root",
            str(pascal_root),
            "--fold",
            "0",
            "--shot",
            "40",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 2 and len(err.splitlines()) == 1
    assert "sub_class_file_list_0.txt" in err and "a 40-shot episode needs at least 41" in err
    assert not out.exists()


def test_episodes_on_an_unprepared_folder(tmp_path, capsys):
    code, err = run(
        [
            "episodes",
            "--dataset",
            "pascal",
            "--data-root",
            str(tmp_path),
            "--fold",
            "0",
            "--shot",
            "1",
            "--out",
            str(tmp_path / "m.json"),
        ],
        capsys,
    )
    assert code == 2 and "no dataset.json" in err and str(tmp_path) in err
