"""Shared fixtures: synthetic raw datasets and prepared roots, built once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import tests.private_home  # first: config and cache folders of the session's own (not ~)
from benchmark.data.prepare_coco import prepare_coco
from benchmark.data.prepare_pascal import prepare_pascal
from benchmark.data.synth import synth_dataset, synth_raw_roots
from tests.ray_cluster import ray_cluster  # noqa: F401  (a two-node Ray cluster on loopback)
from tests.servers import mlflow_server, postgres_server  # noqa: F401  (real servers, session-scoped)


def pytest_unconfigure(config: pytest.Config) -> None:
    tests.private_home.remove()


@pytest.fixture(scope="session")
def pascal_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "pascal"
    synth_dataset("pascal", out, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def pascal_root(pascal_raw, tmp_path_factory) -> Path:
    roots = synth_raw_roots("pascal", pascal_raw)
    out = tmp_path_factory.mktemp("prepared") / "pascal"
    prepare_pascal(roots["voc"], roots["sbd"], out, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def coco_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "coco"
    synth_dataset("coco", out, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def coco_root(coco_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "coco"
    prepare_coco(coco_raw, out, workers=2, progress=False)
    return out


@pytest.fixture
def pascal_raw_copy(pascal_raw, tmp_path) -> Path:
    """A private copy of the raw PASCAL data that a test may corrupt."""
    dst = tmp_path / "raw-pascal"
    shutil.copytree(pascal_raw, dst)
    return dst


@pytest.fixture
def coco_raw_copy(coco_raw, tmp_path) -> Path:
    dst = tmp_path / "raw-coco"
    shutil.copytree(coco_raw, dst)
    return dst
