"""Checkpoints given as MLflow artifact URIs (``runs:/<run_id>/checkpoint/best.pth``, what
``fssbench train`` logs), downloaded once into the work folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from benchmark.errors import FssBenchError
from benchmark.io_utils import write_text_atomic
from benchmark.methods import get_method
from benchmark.plan import Cell
from benchmark.records.tracking import default_tracking_uri
from benchmark.specs.fields import MLFLOW_URI_PREFIX


def resolve_artifact_uris(
    cells: list[Cell], work_dir: Path, tracking_uri: str | None, source: str
) -> list[Cell]:
    """``cells`` with every checkpoint given as an MLflow artifact URI downloaded once into
    ``<work_dir>/downloads/<run_id>/`` and replaced by the local file (its SHA-256 keys the cell;
    ``fss.trained_by`` names the run). ``source``: the study file, for error messages."""
    out = []
    for c in cells:
        settings, changed = dict(c.spec.settings), False
        for key in get_method(c.spec.method).checkpoints:
            value = settings.get(key)
            if not value or not str(value).startswith(MLFLOW_URI_PREFIX):
                continue
            run_id, rel = str(value)[len(MLFLOW_URI_PREFIX) :].split("/", 1)
            local = work_dir / "downloads" / run_id / rel
            if not local.is_file():
                _download(str(value), local, tracking_uri, f"{source}: variants.{c.variant}.{key}")
                record = Path(f"{local}.json")
                if not record.is_file():  # the provenance record: the run itself
                    write_text_atomic(record, json.dumps({"mlflow_run_id": run_id, "source": str(value)}))
            settings[key], changed = str(local), True
        out.append(
            c if not changed else dataclasses.replace(c, spec=dataclasses.replace(c.spec, settings=settings))
        )
    return out


def _download(uri: str, local: Path, tracking_uri: str | None, blame: str) -> None:
    import mlflow.artifacts

    try:
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(local.parent), tracking_uri=tracking_uri or default_tracking_uri()
        )
    except Exception as e:
        raise FssBenchError(
            f"{blame}: cannot download {uri} ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    if not local.is_file():
        raise FssBenchError(f"{blame}: {uri} is not a file")
