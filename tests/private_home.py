"""Imported first by conftest: the test session's per-user config and cache folders live in a temp
folder of its own, removed when the session ends, so the tests write nothing into the home folder
or the checkout (matplotlib's font cache, MLflow's installation id, pdflatex's caches, Hypothesis'
example database). MLflow's telemetry is off."""

from __future__ import annotations

import os
import shutil
import tempfile

HOME_DIRS = tempfile.mkdtemp(prefix="fssbench-test-home-")
for _name, _sub in (
    ("XDG_CONFIG_HOME", "config"),
    ("XDG_CACHE_HOME", "cache"),
    ("MPLCONFIGDIR", "matplotlib"),
    ("TEXMFVAR", "texmf-var"),  # pdflatex's font and format caches (else ~/.texlive<year>/)
    ("TEXMFCONFIG", "texmf-config"),
    ("HYPOTHESIS_STORAGE_DIRECTORY", "hypothesis"),  # else .hypothesis/ in the checkout
):
    os.environ[_name] = os.path.join(HOME_DIRS, _sub)
    os.makedirs(os.environ[_name], exist_ok=True)
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def remove() -> None:
    shutil.rmtree(HOME_DIRS, ignore_errors=True)
