"""Plan: a study -> its manifests -> the specs of its cells (no model, no tracking).

:func:`study_manifests` writes (only when missing or different) the manifest of every cell group
of a study; :func:`cell_spec` is the one place a :class:`~benchmark.evaluation.cell.CellSpec` is built for a
cell, by ``fssbench run`` (a variant's own settings) and ``fssbench search`` (a trial's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.episodes import Protocol, get_protocol
from benchmark.episodes.manifest import load_manifest, save_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest, manifest_file_name
from benchmark.evaluation.cell import CellSpec
from benchmark.specs.study import Study, Variant


@dataclass(frozen=True)
class Cell:
    """One cell of a study: a variant on a cell group, and the spec the cell function runs."""

    variant: str
    dataset: str
    fold: int
    shot: int
    seed: int
    spec: CellSpec

    @property
    def name(self) -> str:
        """``variant/dataset/fold<k>/<K>shot/seed<s>`` (the spec carries it to the cell function)."""
        return self.spec.name


def study_protocol(study: Study) -> Protocol:
    """The study's protocol with the study's options for it: the protocol's ``user_options`` that a
    study file sets (today fssam-exact's ``loader_workers`` and ``lists``); others keep the
    protocol's defaults."""
    protocol = get_protocol(study.protocol)
    return protocol.configure({k: getattr(study, k) for k in protocol.user_options if hasattr(study, k)})


def study_manifests(study: Study, work_dir: Path, kind: str = "test") -> dict[tuple, Path]:
    """(dataset, fold, shot, seed) -> the manifest file of that cell group under
    ``<work_dir>/manifests/`` (written only when missing or different). ``kind="val"``: the fold's
    base classes on images without a novel-class pixel, from the study's ``val_source`` (what
    searches tune on); the name says so."""
    protocol = study_protocol(study)
    out = {}
    for ds, root in study.data.items():
        for fold in study.folds:
            for shot in study.shots:
                for seed in study.seeds:
                    m = build_manifest(protocol, manifest_request(study, ds, root, fold, shot, seed, kind))
                    path = Path(work_dir) / "manifests" / f"{manifest_file_name(protocol, m)}.json"
                    if not path.exists() or load_manifest(path).sha256 != m.sha256:
                        save_manifest(m, path)
                    out[(ds, fold, shot, seed)] = path
    return out


def manifest_request(
    study: Study, dataset: str, root: Path, fold: int, shot: int, seed: int, kind: str
) -> ManifestRequest:
    """The request for the manifest of one cell group of ``study`` (``kind val``: from the study's
    ``val_source``)."""
    val = (
        {"val_source": study.val_source, "holdout_fraction": study.holdout_fraction} if kind == "val" else {}
    )
    return ManifestRequest(
        root,
        fold,
        shot,
        seed=seed,
        episodes=study.episodes,
        kind=kind,
        coco_split=study.split,
        dataset=dataset,
        resolution=study.eval_resolution,
        eval_size=study.eval_size,
        **val,
    )


def cell_name(variant: Variant, dataset: str, fold: int, shot: int, seed: int) -> str:
    """``variant/dataset/fold<k>/<K>shot/seed<s>``: the cell's MLflow run name and cells.csv row."""
    return f"{variant.name}/{dataset}/fold{fold}/{shot}shot/seed{seed}"


def study_cells(study: Study, manifests: dict[tuple, Path], compile: bool = False) -> list[Cell]:
    """Every variant on every cell group of ``manifests`` (:func:`study_manifests`), in order."""
    return [
        Cell(v.name, *group, cell_spec(study, v, group, path, compile=compile))
        for group, path in manifests.items()
        for v in study.variants
    ]


def cell_spec(
    study: Study,
    variant: Variant,
    group: tuple[str, int, int, int],
    manifest_path: Path,
    *,
    method: str | None = None,
    device: str | None = None,
    settings: dict[str, Any] | None = None,
    explicit: frozenset[str] = frozenset(),
    compile: bool = False,
) -> CellSpec:
    """The spec of ``variant``'s cell on the cell group ``(dataset, fold, shot, seed)``.

    ``settings`` replace the variant's (a search trial's; ``explicit``: the settings it sets);
    ``method`` and ``device`` default to the variant's."""
    dataset, fold, shot, seed = group
    return CellSpec(
        method or variant.method,
        variant.cell_settings(dataset, fold, shot, settings=settings, explicit=explicit),
        manifest_path,
        study.data[dataset],
        device or variant.device,
        cell_name(variant, dataset, fold, shot, seed),
        batch_size=study.batch_size,
        feature_dtype=study.cache.dtype,
        compile=compile,
    )
