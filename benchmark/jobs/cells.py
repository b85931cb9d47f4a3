"""Before any cell runs, for every job alike: manifests read once, cell keys, images checked,
weights checked (:class:`CellPrep`). The run job and the search both use it, so the image check,
the preflight and the key of a cell are computed one way only (the cell lock and the journal
path are the workspace's, taken by the engine: :mod:`benchmark.engines.local`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from benchmark.episodes.manifest import Manifest, load_manifest
from benchmark.evaluation.cell import CellSpec, cell_key, weight_ids
from benchmark.workspace import Workspace


class CellPrep:
    """A job's manifests (each read, and its hash verified, once) and the checks before its cells
    run, in ``workspace``."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._manifests: dict[Path, Manifest] = {}

    def manifest(self, path: Path) -> Manifest:
        """The manifest at ``path``, read once."""
        if path not in self._manifests:
            self._manifests[path] = load_manifest(path)
        return self._manifests[path]

    def key(self, spec: CellSpec) -> tuple[str, dict[str, str]]:
        """The cell key of ``spec`` and the weight ids it was computed from, without building any
        model (unchanged checkpoints are not hashed again: the workspace's hashes)."""
        weights = weight_ids(spec, self.workspace.hashes)
        return cell_key(spec, self.manifest(spec.manifest_path).sha256, weights), weights

    def check_images(self, cells: Iterable[tuple[Path, Path]]) -> None:
        """Decode every image and label that the ``(manifest path, data root)`` pairs of a job's
        cells use (once: remembered in the work folder); a corrupt file is an error before any
        store or run exists."""
        roots: dict[Path, Path] = {}
        for manifest_path, data_root in cells:
            roots.setdefault(manifest_path, data_root)
        self.workspace.check_images((self.manifest(path), root) for path, root in roots.items())

    def preflight(
        self, checks: Iterable[tuple[CellSpec, dict[str, str] | None, str]], keep: bool = True
    ) -> None:
        """Every distinct set of real weights the ``(spec, weight ids, blame)`` checks need, loaded
        strictly (:meth:`Workspace.preflight`): a wrong checkpoint names ``blame`` now. ``keep``
        off (a driver whose remote workers load their own weights): on the CPU, nothing kept, so
        the driver's GPU, if any, stays theirs."""
        if keep:
            self.workspace.preflight(checks)
            return
        on_cpu = [(dataclasses.replace(spec, device="cpu"), w, blame) for spec, w, blame in checks]
        self.workspace.preflight(on_cpu)
        self.workspace.drop_weights()
