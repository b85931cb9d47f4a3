"""`fssbench fetch` against a loopback HTTP server with Range support (tests/range_server.py).

The server plays a lab mirror: it serves archives built from the synthetic data in the real archive
layouts, and real-architecture random-init checkpoints, under the HOST/PATH of each official URL.
Expected hashes are computed here with hashlib, independently of the code under test.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.cli import main
from benchmark.data.check import check_prepared
from benchmark.data.prepare_pascal import read_id_list
from benchmark.data.synth import synth_raw_roots
from benchmark.errors import FssBenchError
from benchmark.fetch.data import extract_archive, fetch_data
from benchmark.fetch.download import MIRROR_ENV, fetch_file
from benchmark.fetch.sources import DATA, WEIGHTS, Source
from benchmark.fetch.weights import fetch_weights, list_weights, register_checkpoint, register_path
from benchmark.file_paths import absolute_path
from benchmark.lockfile import LOCK_NAME
from fssam.checkpoint import to_authors_state_dict
from fssam.config import FSSAMConfig
from fssam.dinov2 import DINOV2_ARCHS, build_dinov2, export_meta_state_dict
from fssam.model import FSSAM
from fssam.sam2_adapter import build_sam2_model, sam2_checkpoint_name
from tests.helpers import ROOT
from tests.range_server import RangeServer


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def serve(mirror: Path, src: Source, file: Path) -> Path:
    """Put ``file`` where a mirror serves ``src`` (HOST/PATH of its official URL)."""
    dest = mirror / src.relative_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, dest)
    return dest


def served_bytes(mirror: Path, name: str, size: int) -> tuple[Source, bytes]:
    """A random file on the mirror where it serves https://example.org/files/NAME."""
    src = Source(f"https://example.org/files/{name}", name, "test")
    payload = os.urandom(size)
    (mirror / src.relative_path).parent.mkdir(parents=True, exist_ok=True)
    (mirror / src.relative_path).write_bytes(payload)
    return src, payload


@pytest.fixture(scope="module")
def dino_s_file(tmp_path_factory) -> Path:
    """Meta's layout of a random-init DINOv2 ViT-S/14 (the real architecture, 88 MB)."""
    path = tmp_path_factory.mktemp("weights") / "dinov2_vits14_pretrain.pth"
    torch.save(export_meta_state_dict(build_dinov2("vits14", random_init=True, input_size=518, seed=1)), path)
    return path


def test_the_weights_table_matches_the_model_builders():
    sam2 = [w for w in WEIGHTS.values() if w.kind == "sam2"]
    assert sorted((w.version, w.size) for w in sam2) == sorted(
        (v, s) for v in ("2.0", "2.1") for s in ("t", "s", "b+", "l")
    )
    for w in sam2:
        assert w.source.filename == sam2_checkpoint_name(w.version, w.size)
        assert w.source.url.endswith("/" + w.source.filename)
    assert WEIGHTS["sam2-s"].source.url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt"
    )
    assert WEIGHTS["sam2.1-b+"].source.url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt"
    )
    dinos = {w.arch: w for w in WEIGHTS.values() if w.kind == "dinov2"}
    assert set(dinos) == set(DINOV2_ARCHS)
    for arch, w in dinos.items():
        assert w.source.url == DINOV2_ARCHS[arch].checkpoint_url
    src = WEIGHTS["dinov2-vitb14"].source
    assert src.relative_path == "dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth"
    assert src.url_from("http://m.lab/fss/") == f"http://m.lab/fss/{src.relative_path}"
    assert src.url_from(None) == src.url
    for bad in ("/local/dir", "ftp://m.lab/fss"):
        with pytest.raises(FssBenchError, match="not an http:// or https:// URL"):
            src.url_from(bad)
    voc, sbd, noval = DATA["pascal"]
    assert voc.source.known_hash == "md5:6cd6e144f989b92b3379bac3b3de84fd"
    assert sbd.source.known_hash == "md5:82b4d87ceb2ed10f6038a1cba92111cb"
    assert noval.source.known_hash == "md5:79bff800c5f0b1ec6b21080a3c066722"


def test_fetch_weights_verifies_locks_and_downloads_nothing_twice(dino_s_file, tmp_path, monkeypatch):
    w = WEIGHTS["dinov2-vits14"]
    served = serve(tmp_path / "mirror", w.source, dino_s_file)
    out = tmp_path / "checkpoints"
    with RangeServer(tmp_path / "mirror") as srv:
        monkeypatch.setenv(MIRROR_ENV, srv.url)  # the environment variable stands for --mirror
        assert main(["-q", "fetch", "weights", "dinov2-vits14", "--out", str(out)]) == 0
        target = out / "dinov2_vits14_pretrain.pth"
        assert sha256(target) == sha256(served)
        assert not list(out.glob("*.part"))
        lock = json.loads((out / LOCK_NAME).read_text())["files"][target.name]
        assert lock["sha256"] == sha256(served) and lock["size"] == served.stat().st_size
        assert lock["checked"] == "strict load into DINOv2 vits14"
        assert srv.gets(w.source.relative_path) == [None]
        # a second fetch downloads nothing
        (again,) = fetch_weights(["dinov2-vits14"], out, progress=False)
        assert again.status == "present"
        assert len(srv.gets(w.source.relative_path)) == 1
        assert [r.on_disk for r in list_weights(out) if r.name == "dinov2-vits14"] == ["locked"]
        # a truncated file is caught by the lock
        with open(target, "r+b") as f:
            f.truncate(1000)
        assert [r.on_disk for r in list_weights(out) if r.name == "dinov2-vits14"] == [
            "on disk, SIZE DIFFERS FROM LOCK"
        ]
        with pytest.raises(FssBenchError, match=f"does not match .*{LOCK_NAME}.*changed or is truncated"):
            fetch_weights(["dinov2-vits14"], out, progress=False)


def test_a_file_of_another_architecture_is_refused_and_removed(dino_s_file, tmp_path, capsys):
    w = WEIGHTS["dinov2-vitb14"]
    serve(tmp_path / "mirror", w.source, dino_s_file)  # ViT-S weights where ViT-B's should be
    out = tmp_path / "checkpoints"
    with RangeServer(tmp_path / "mirror") as srv:
        rc = main(["-q", "fetch", "weights", "dinov2-vitb14", "--out", str(out), "--mirror", srv.url])
    err = capsys.readouterr().err
    assert rc == 2 and "is not DINOv2 vitb14: " in err and "the download was removed" in err
    assert not (out / w.source.filename).exists() and not list(out.glob("*.part"))
    assert not (out / LOCK_NAME).exists()


def test_a_dropped_connection_resumes_with_a_range_request(dino_s_file, tmp_path):
    w = WEIGHTS["dinov2-vits14"]
    served = serve(tmp_path / "mirror", w.source, dino_s_file)
    cut = 3 * 2**20 + 12345
    with RangeServer(tmp_path / "mirror") as srv:
        srv.drop_after[w.source.relative_path] = cut
        got = fetch_file(w.source, tmp_path / "out", srv.url, progress=False, backoff=0.01)
    assert got.status == "downloaded" and got.attempts == 2
    first, second = srv.gets(w.source.relative_path)
    resumed_at = int(second.removeprefix("bytes=").removesuffix("-"))
    assert first is None and 0 < resumed_at <= cut  # from the whole chunks written before the drop
    assert got.sha256 == sha256(served) == sha256(tmp_path / "out" / w.source.filename)


def test_a_whole_part_file_left_by_a_killed_process_is_finished_without_downloading_it_again(tmp_path):
    src, payload = served_bytes(tmp_path / "mirror", "a.bin", 300_000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin.part").write_bytes(payload[:100_000])  # interrupted: resumed
    with RangeServer(tmp_path / "mirror") as srv:
        assert fetch_file(src, out, srv.url, progress=False).sha256 == hashlib.sha256(payload).hexdigest()
        (out / "a.bin").unlink()
        (out / LOCK_NAME).unlink()
        (out / "a.bin.part").write_bytes(payload)  # whole, not yet renamed: the server answers 416
        assert fetch_file(src, out, srv.url, progress=False).status == "downloaded"
    assert srv.gets(src.relative_path) == ["bytes=100000-", "bytes=300000-"]
    assert (out / "a.bin").read_bytes() == payload and not (out / "a.bin.part").exists()


def test_an_unreachable_file_fails_readably_and_keeps_nothing(tmp_path):
    src = Source("https://example.org/a/b.bin", "b.bin", "test")
    with RangeServer(tmp_path) as srv, pytest.raises(FssBenchError, match="HTTP 404"):
        fetch_file(src, tmp_path / "out", srv.url, progress=False, backoff=0.01)
    assert [p.name for p in (tmp_path / "out").iterdir() if p.suffix != ".lock"] == []


def _tar(out: Path, root: Path, top: str, mode: str = "w") -> Path:
    with tarfile.open(out, mode) as t:
        t.add(root / top, arcname=top)
    return out


def _zip(out: Path, root: Path, top: str) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for p in sorted((root / top).rglob("*")):
            z.write(p, p.relative_to(root).as_posix())
    return out


@pytest.fixture(scope="module")
def pascal_archives(pascal_raw, tmp_path_factory) -> tuple[Path, tuple]:
    """The synthetic PASCAL as the three real downloads (VOCtrainval tar with VOCdevkit/, benchmark.tgz
    with benchmark_RELEASE/, train_noval.txt = SBD train minus VOC val) on a mirror tree, and the
    table's archives with these files' md5 in place of the published ones."""
    d = tmp_path_factory.mktemp("pascal-archives")
    voc, sbd, noval = DATA["pascal"]
    files = {
        voc: _tar(d / "voc.tar", pascal_raw, "VOCdevkit"),
        sbd: _tar(d / "sbd.tgz", pascal_raw, "benchmark_RELEASE", "w:gz"),
    }
    roots = synth_raw_roots("pascal", pascal_raw)
    voc_val = set(read_id_list(roots["voc"] / "ImageSets" / "Segmentation" / "val.txt"))
    train_noval = [i for i in read_id_list(roots["sbd"] / "train.txt") if i not in voc_val]
    (d / "train_noval.txt").write_text("".join(f"{i}\n" for i in train_noval))
    files[noval] = d / "train_noval.txt"
    mirror = d / "mirror"
    for a, f in files.items():
        serve(mirror, a.source, f)
    ours = tuple(
        replace(a, source=replace(a.source, known_hash=f"md5:{md5(files[a])}")) for a in DATA["pascal"]
    )
    return mirror, ours


def test_fetch_data_pascal_extract_prepare_check_end_to_end(
    pascal_archives, pascal_root, tmp_path, monkeypatch
):
    mirror, archives = pascal_archives
    monkeypatch.setitem(DATA, "pascal", archives)
    raw, prepared = tmp_path / "raw", tmp_path / "pascal"
    with RangeServer(mirror) as srv:
        argv = [
            "-q",
            "fetch",
            "data",
            "pascal",
            "--out",
            str(raw),
            "--mirror",
            srv.url,
            "--prepare",
            str(prepared),
        ]
        assert main(argv) == 0
        assert (raw / "VOCdevkit/VOC2012/JPEGImages").is_dir()
        assert (raw / "benchmark_RELEASE/dataset/cls").is_dir()
        assert (raw / "benchmark_RELEASE/dataset/train_noval.txt").is_file()
        assert check_prepared(prepared, progress=False).ok
        # the same lists as preparing the raw data directly (train_noval = SBD train - VOC val)
        for name in ("train.txt", "val.txt"):
            assert (prepared / "lists" / name).read_text() == (pascal_root / "lists" / name).read_text()
        n_gets = len(srv.requests)
        done = fetch_data("pascal", raw, srv.url, progress=False)
        assert [(f.status, what) for f, what in done] == [
            ("present", "already extracted"),
            ("present", "already extracted"),
            ("present", "already placed"),
        ]
        assert len(srv.requests) == n_gets  # a second fetch downloads nothing
    lock = json.loads((raw / LOCK_NAME).read_text())["files"]
    for a in archives:
        assert f"md5:{hashlib.md5((raw / a.source.filename).read_bytes()).hexdigest()}" == a.source.known_hash
        assert lock[a.source.filename]["sha256"] == sha256(raw / a.source.filename)
    assert lock["benchmark.tgz"]["extracted"] == lock["benchmark.tgz"]["sha256"]


def test_a_corrupted_archive_is_refused_and_removed(pascal_archives, tmp_path, capsys):
    mirror, archives = pascal_archives
    bad = tmp_path / "mirror"
    shutil.copytree(mirror, bad)
    voc = archives[0]
    path = bad / voc.source.relative_path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    raw = tmp_path / "raw"
    with RangeServer(bad) as srv, pytest.raises(FssBenchError) as e:
        fetch_data("pascal", raw, srv.url, progress=False, archives=archives[:1])
    msg = str(e.value)
    assert "checksum mismatch, the download was removed" in msg
    assert (
        f"expected {voc.source.known_hash}" in msg and f"arrived md5:{hashlib.md5(data).hexdigest()}" in msg
    )
    assert not (raw / voc.source.filename).exists() and not list(raw.glob("*.part"))
    assert not (raw / "VOCdevkit").exists()


def test_fetch_data_coco_records_sha256_where_none_is_published(coco_raw, coco_root, tmp_path, capsys):
    mirror = tmp_path / "mirror"
    train, val, ann = DATA["coco"]
    assert train.source.known_hash is None
    for a, top in ((train, "train2014"), (val, "val2014"), (ann, "annotations")):
        serve(mirror, a.source, _zip(tmp_path / f"{top}.zip", coco_raw, top))
    raw = tmp_path / "raw"
    with RangeServer(mirror) as srv:
        assert main(["-q", "fetch", "data", "coco", "--out", str(raw), "--mirror", srv.url]) == 0
    out = capsys.readouterr().out
    assert f"fssbench data prepare coco --coco {raw} --out data/coco" in out
    lock = json.loads((raw / LOCK_NAME).read_text())["files"]
    for a in (train, val, ann):
        assert lock[a.source.filename]["sha256"] == sha256(mirror / a.source.relative_path)
    for top in ("train2014", "val2014", "annotations"):
        assert sorted(p.relative_to(raw).as_posix() for p in (raw / top).rglob("*")) == sorted(
            p.relative_to(coco_raw).as_posix() for p in (coco_raw / top).rglob("*")
        )


def test_unsafe_archive_members_are_refused(tmp_path):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as t:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        t.addfile(info, io.BytesIO(b"evil"))
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(FssBenchError, match="unsafe member"):
        extract_archive(bad, into, progress=False)
    assert not (tmp_path / "evil.txt").exists() and list(into.iterdir()) == []


@pytest.fixture(scope="module")
def authors_checkpoint(tmp_path_factory) -> Path:
    """An authors-format FSSAM checkpoint ({'epoch', 'state_dict'} with module.sam2.* and
    module.dino.*) for SAM 2.0-T + DINOv2-S, random weights."""
    sam = build_sam2_model("2.0", "t", 128, random_init=True, seed=3)
    dino = build_dinov2("vits14", random_init=True, input_size=518, seed=5)
    model = FSSAM(
        FSSAMConfig(sam2_size="t", image_size=128, dinov2="vits14", dinov2_input_size=518, random_init=True),
        sam2=sam,
        dino=dino,
    )
    path = tmp_path_factory.mktemp("authors") / "best_1shot.pth"
    torch.save(
        {"epoch": 3, "state_dict": to_authors_state_dict(model, export_meta_state_dict(dino), ddp=True)}, path
    )
    return path


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_register_verifies_and_files_an_authors_checkpoint(authors_checkpoint, tmp_path, capsys):
    root = tmp_path / "exp"
    argv = ["-q", "fetch", "register", str(authors_checkpoint), "--as", "fssam/pascal/split2/1shot"]
    argv += ["--root", str(root), "--sam2-config", "sam2_hiera_t", "--dinov2", "vits14"]
    assert main(argv) == 0
    target = root / "pascal/FSSAM/split2/tiny/snapshot/best_1shot.pth"
    assert sha256(target) == sha256(authors_checkpoint)
    assert f"registered: {target}" in capsys.readouterr().out
    lock = json.loads((root / LOCK_NAME).read_text())["files"]
    assert lock["pascal/FSSAM/split2/tiny/snapshot/best_1shot.pth"]["sha256"] == sha256(authors_checkpoint)
    again = register_checkpoint(
        authors_checkpoint, "fssam/pascal/split2/1shot", root, "sam2_hiera_t", "vits14"
    )
    assert again[2] == "already registered"
    # the study templates' path: exp/{dataset}/{arch}/split{fold}/small/snapshot/best_{shot}shot.pth
    assert register_path("fssam/coco/split3/5shot", Path("exp"), "sam2_hiera_s") == Path(
        "exp/coco/FSSAM5s/split3/small/snapshot/best_5shot.pth"
    )
    # (the template relative to the study file; fetch register run in the repository root)
    template = yaml.safe_load((ROOT / "ablations/main-table.yaml").read_text())["model"]["fssam_checkpoint"]
    template = absolute_path(template, ROOT / "ablations")
    for dataset, fold, shot, arch in (("pascal", 0, 1, "FSSAM"), ("coco", 3, 5, "FSSAM5s")):
        assert register_path(f"fssam/{dataset}/split{fold}/{shot}shot", ROOT / "exp", "sam2_hiera_s") == Path(
            template.format(dataset=dataset, fold=fold, shot=shot, arch=arch)
        )
    with pytest.raises(FssBenchError, match="expected fssam/"):
        register_path("pascal/0/1", root, "sam2_hiera_s")
    # the wrong architecture claim: nothing filed
    with pytest.raises(FssBenchError, match="is not an FSSAM checkpoint for sam2_hiera_s"):
        register_checkpoint(authors_checkpoint, "fssam/pascal/split0/1shot", root)
    assert not (root / "pascal/FSSAM/split0").exists()
    # a different file where one is filed needs --force
    other = tmp_path / "other.pth"
    ckpt = torch.load(authors_checkpoint, weights_only=True)
    ckpt["epoch"] = 4
    torch.save(ckpt, other)
    with pytest.raises(FssBenchError, match="already holds a different checkpoint.*--force"):
        register_checkpoint(other, "fssam/pascal/split2/1shot", root, "sam2_hiera_t", "vits14")
    register_checkpoint(other, "fssam/pascal/split2/1shot", root, "sam2_hiera_t", "vits14", force=True)
    assert sha256(target) == sha256(other)
    # the release's exp/ tree unzipped in place: verified and recorded where it is
    in_place = root / "pascal/FSSAM/split1/tiny/snapshot/best_1shot.pth"
    in_place.parent.mkdir(parents=True)
    shutil.copyfile(authors_checkpoint, in_place)
    args = ("fssam/pascal/split1/1shot", root, "sam2_hiera_t", "vits14")
    assert register_checkpoint(in_place, *args)[2] == "registered"
    assert register_checkpoint(in_place, *args)[2] == "already registered"
    assert json.loads((root / LOCK_NAME).read_text())["files"][
        "pascal/FSSAM/split1/tiny/snapshot/best_1shot.pth"
    ]["sha256"] == sha256(authors_checkpoint)


@pytest.mark.slow
def test_a_killed_download_resumes_and_yields_the_same_file(dino_s_file, tmp_path):
    w = WEIGHTS["dinov2-vits14"]
    served = serve(tmp_path / "mirror", w.source, dino_s_file)
    out = tmp_path / "checkpoints"
    part = out / f"{w.source.filename}.part"
    cmd = [
        sys.executable,
        "-m",
        "benchmark.cli",
        "-q",
        "fetch",
        "weights",
        "dinov2-vits14",
        "--out",
        str(out),
    ]
    with RangeServer(tmp_path / "mirror", delay_s=0.01) as srv:
        env = {**os.environ, MIRROR_ENV: srv.url}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not (part.exists() and part.stat().st_size > 4 * 2**20):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        have = part.stat().st_size
        assert 0 < have < served.stat().st_size and not (out / w.source.filename).exists()
        srv.delay_s = 0.0
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert srv.gets(w.source.relative_path) == [None, f"bytes={have}-"]
    assert sha256(out / w.source.filename) == sha256(served)
    assert not part.exists()


def test_a_study_refuses_a_checkpoint_that_changed_after_it_was_fetched(pascal_root, tmp_path):
    from benchmark.lockfile import LockFile
    from benchmark.specs.study import load_study

    ckpt = tmp_path / "checkpoints" / "sam2_hiera_tiny.pt"
    ckpt.parent.mkdir()
    torch.save({"model": {"w": torch.zeros(64)}}, ckpt)
    LockFile(ckpt.parent).record(ckpt.name, sha256=sha256(ckpt), size=ckpt.stat().st_size)
    study = tmp_path / "s.yaml"
    study.write_text(
        f"name: s\ndata: {{pascal: {pascal_root}}}\nfolds: [0]\nepisodes: 2\n"
        f"model: {{sam2_size: t, image_size: 256, sam2_checkpoint: {ckpt}}}\n"
        "variants: {naive: {method: naive_sam2}}\n"
    )
    load_study(study)  # as recorded: fine
    data = bytearray(ckpt.read_bytes())
    data[-30] ^= 0x01  # same size, other bytes
    ckpt.write_bytes(bytes(data))
    with pytest.raises(FssBenchError, match=r"sam2_checkpoint: .* changed after it was fetched"):
        load_study(study)
    ckpt.write_bytes(bytes(data[:-10]))
    with pytest.raises(FssBenchError, match="truncated or changed"):
        load_study(study)


def test_ctrl_c_while_checking_keeps_the_whole_part_and_the_rerun_does_not_download_again(tmp_path):
    src, payload = served_bytes(tmp_path / "mirror", "c.bin", 200_000)
    out = tmp_path / "out"

    def interrupted(path):
        raise KeyboardInterrupt

    with RangeServer(tmp_path / "mirror") as srv:
        with pytest.raises(KeyboardInterrupt):
            fetch_file(src, out, srv.url, progress=False, check=interrupted)
        assert (out / "c.bin.part").read_bytes() == payload and not (out / "c.bin").exists()
        got = fetch_file(src, out, srv.url, progress=False, check=lambda p: None)
    assert srv.gets(src.relative_path) == [None, "bytes=200000-"]  # the rerun only asked for the rest
    assert got.status == "downloaded" and (out / "c.bin").read_bytes() == payload
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".lock") == ["c.bin", LOCK_NAME]


def test_server_errors_are_retried_and_give_up_after_the_retries(tmp_path):
    src, payload = served_bytes(tmp_path / "mirror", "d.bin", 50_000)
    with RangeServer(tmp_path / "mirror") as srv:
        srv.fail_with[src.relative_path] = [503, 429]
        got = fetch_file(src, tmp_path / "a", srv.url, progress=False, backoff=0.01)
        assert got.attempts == 3 and (tmp_path / "a" / "d.bin").read_bytes() == payload
        srv.fail_with[src.relative_path] = [500, 500, 500]
        with pytest.raises(FssBenchError, match="failed after 2 attempts .*HTTP 500") as e:
            fetch_file(src, tmp_path / "b", srv.url, progress=False, retries=1, backoff=0.01)
        assert str(e.value).endswith("nothing was downloaded") and ".part" not in str(e.value)


def test_a_host_that_does_not_resolve_fails_at_once_without_naming_a_missing_part(tmp_path, capsys):
    # .invalid never resolves (RFC 2606): as with no network, the look-up fails; retrying cannot help
    src = Source("https://example.org/a/b.bin", "b.bin", "test")
    with pytest.raises(FssBenchError, match="cannot resolve the host 'fssbench-test.invalid'") as e:
        fetch_file(src, tmp_path / "out", "http://fssbench-test.invalid/", progress=False, backoff=5.0)
    assert "--mirror" in str(e.value) and str(e.value).endswith("nothing was downloaded")
    assert "resuming in" not in capsys.readouterr().out  # no retries, no back-off
    assert [p.name for p in (tmp_path / "out").iterdir() if p.suffix != ".lock"] == []


def test_negative_retries_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["-q", "fetch", "weights", "sam2-t", "--retries", "-1"])
    assert e.value.code == 2 and "expected an integer >= 0" in capsys.readouterr().err


def test_a_hand_placed_file_is_checked_and_recorded(tmp_path):
    payload = b"hello archive\n"
    good = Source("https://example.org/x/e.txt", "e.txt", "test", f"md5:{hashlib.md5(payload).hexdigest()}")
    out = tmp_path / "out"
    out.mkdir()
    (out / "e.txt").write_bytes(payload)
    got = fetch_file(good, out, "http://127.0.0.1:9/", progress=False)  # nothing is downloaded
    assert got.status == "recorded" and got.sha256 == hashlib.sha256(payload).hexdigest()
    bad = replace(good, filename="f.txt")
    (out / "f.txt").write_bytes(payload + b"!")
    with pytest.raises(FssBenchError, match=r"f\.txt: md5 .* is not the published"):
        fetch_file(bad, out, "http://127.0.0.1:9/", progress=False)


def test_extraction_merges_into_existing_folders_and_keeps_what_else_is_there(tmp_path):
    src = tmp_path / "src"
    (src / "annotations").mkdir(parents=True)
    (src / "annotations" / "instances_val2014.json").write_text("{}")
    archive = _zip(tmp_path / "ann.zip", src, "annotations")
    into = tmp_path / "raw"
    (into / "annotations").mkdir(parents=True)
    (into / "annotations" / "instances_val2017.json").write_text("2017")
    (into / ".extract-ann.zip.stale").mkdir()  # left by a killed extraction
    assert extract_archive(archive, into, progress=False) == ["annotations"]
    assert sorted(p.name for p in (into / "annotations").iterdir()) == [
        "instances_val2014.json",
        "instances_val2017.json",
    ]
    assert (into / "annotations" / "instances_val2017.json").read_text() == "2017"
    assert [p.name for p in into.iterdir()] == ["annotations"]
