"""Outputs renamed into place keep the mode the umask allows, so a lab can share a prepared root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from benchmark.data.prepare_pascal import prepare_pascal
from benchmark.data.synth import synth_raw_roots
from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import save_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.io_utils import atomic_directory, write_text_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    write_text_atomic(tmp_path / "a.txt", "x")
    with atomic_directory(tmp_path / "d") as d:
        (d / "f").write_text("y")
    assert mode(tmp_path / "a.txt") == file_mode and mode(tmp_path / "d") == dir_mode


def test_a_prepared_root_and_its_manifests_are_shareable(pascal_raw, tmp_path, umask):
    umask(0o022)
    roots = synth_raw_roots("pascal", pascal_raw)
    out = tmp_path / "pascal"
    prepare_pascal(roots["voc"], roots["sbd"], out, workers=1, progress=False)
    assert mode(out) == 0o755 and mode(out / "dataset.json") == 0o644
    assert mode(out / "lists" / "train.txt") == 0o644
    save_manifest(
        build_manifest(
            get_protocol("fssam"), ManifestRequest(out, 0, 1, seed=321, episodes=4, dataset="pascal")
        ),
        tmp_path / "m.json",
    )
    assert mode(tmp_path / "m.json") == 0o644
