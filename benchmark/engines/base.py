"""The one interface every engine implements: cell jobs in, answers out; no MLflow.

A job (``fssbench run``, a search trial) turns its cells into :class:`CellJob` values, hands them
to an :class:`Engine` and records each :class:`CellDone` the engine yields (through
:mod:`benchmark.records`). The engine decides only *where and when* a cell runs: in this process
(:class:`benchmark.engines.local.LocalEngine`) or on Ray actors
(:class:`benchmark.engines.ray.RayEngine`). What the job wants to hear while the cells run (may
this cell run now? it starts; its episodes) goes through :class:`CellHooks`.

A :class:`CellJob` is plain data: :meth:`CellJob.to_payload` serializes it (its
:class:`~benchmark.evaluation.cell.CellSpec` field by field through :func:`dataclasses.fields`,
plus the manifest itself) for a process that shares no files with the driver, and
:meth:`CellJob.from_payload` gives the very same job back there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmark.episodes.manifest import Manifest
from benchmark.evaluation.cell import CellSpec
from benchmark.workspace import Workspace

PATH_FIELDS = ("manifest_path", "data_root")
"""The :class:`CellSpec` fields that are paths (strings in a payload)."""


def spec_to_dict(spec: CellSpec) -> dict[str, Any]:
    """Every field of ``spec`` as plain data (paths as strings, settings as a plain dict)."""
    out = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    out["settings"] = dict(out["settings"])
    return out | {k: str(out[k]) for k in PATH_FIELDS}


def spec_from_dict(raw: Mapping[str, Any], **replace: Any) -> CellSpec:
    """The :class:`CellSpec` that :func:`spec_to_dict` gave ``raw`` for (``replace``: fields set
    here instead, e.g. the manifest's local copy)."""
    values = dict(raw) | replace
    return CellSpec(**{k: Path(v) if k in PATH_FIELDS else v for k, v in values.items()})


@dataclass(frozen=True)
class CellJob:
    """One cell to run: ``name`` (for messages), its cell ``key``, the ``spec`` the cell function
    runs, the ``weights`` ids the key was computed from (``None``: not known, not checked),
    ``fresh`` (``--force``: the cell's journal and artifacts start over), ``artifacts`` (write
    the cell's artifacts: a study's cells do, a search trial's do not), ``qualitative`` (PNG
    overlays among them) and ``journal`` (keep the cell's episode journal and resume from it: a
    training validation does not, as each one scores a different model)."""

    name: str
    key: str
    spec: CellSpec
    weights: Mapping[str, str] | None = None
    fresh: bool = False
    artifacts: bool = True
    qualitative: int = 3
    journal: bool = True

    def to_payload(self, manifest: Manifest) -> dict[str, Any]:
        """The job as plain, picklable data, with its ``manifest`` (no file of the driver needed)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        weights = None if self.weights is None else dict(self.weights)
        return out | {"spec": spec_to_dict(self.spec), "weights": weights, "manifest": manifest.to_dict()}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], manifest_path: Path) -> CellJob:
        """The job :meth:`to_payload` serialized, its spec reading the manifest at ``manifest_path``
        (where the receiving process saved the payload's manifest)."""
        values = {f.name: payload[f.name] for f in dataclasses.fields(cls)}
        values["spec"] = spec_from_dict(payload["spec"], manifest_path=manifest_path)
        return cls(**values)


@dataclass
class CellDone:
    """An engine's answer for one job: ``ok`` with ``metrics`` (flat, for tracking), ``summary``
    (``metrics.summarize`` of the cell: fractions), ``artifacts`` ((file, artifact path) pairs on
    this machine), ``peak_mem_kind`` and ``stats`` (a results row's timings; ``attempts`` where the
    engine retries), or not ok with ``error`` (one line first) and ``traceback``. ``worker``: where
    it ran (``host:pid``), for a remote engine."""

    job: CellJob
    ok: bool
    metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    peak_mem_kind: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    traceback: str = ""
    worker: str = ""

    @classmethod
    def failed(cls, job: CellJob, error: str, traceback: str = "", worker: str = "") -> CellDone:
        return cls(job, False, error=error, traceback=traceback, worker=worker)


class CellHooks:
    """What a job hears while an engine runs its cells; every method may be left as it is here.

    * :meth:`claim` is asked right before a job's first attempt: False skips it (it finished
      elsewhere meanwhile, say). An in-process engine holds the cell's lock
      (:meth:`Workspace.cell_lock`) from the claim until the job's answer is consumed.
    * :meth:`begin`: an in-process engine is about to run the job (the job may open its record
      now, so an interrupted cell is marked KILLED); a remote engine never calls it.
    * :meth:`started` (``done`` of ``total`` episodes already in the journal) and :meth:`row`
      (each episode's row, resumed ones first): in-process engines only.
    """

    def claim(self, job: CellJob) -> bool:
        return True

    def begin(self, job: CellJob) -> None:
        return None

    def started(self, job: CellJob, done: int, total: int) -> None:
        return None

    def row(self, job: CellJob, row: dict[str, int]) -> None:
        return None


class Engine(Protocol):
    """Runs cell jobs and yields one :class:`CellDone` per job it ran (jobs it was told to skip
    yield nothing), in any order; never touches MLflow.

    ``name``: ``local``, ``ray`` (what a remote engine's runs are tagged with). ``in_process``:
    cells run in this process (the weights the preflight loads are kept for them; a job's record
    is opened before its cell runs). :meth:`session`: the engine's resources for a job's whole run
    (joining a cluster), refused before any store or run exists when ``tracking_uri`` cannot serve
    them. :meth:`run`: the jobs, in ``workspace`` (its cache, weights, locks and cell folders;
    a remote engine's workers rebuild it from :meth:`Workspace.settings`); ``desc`` labels the
    progress bar."""

    name: str
    in_process: bool

    def session(self, tracking_uri: str) -> AbstractContextManager[Any]: ...

    def run(
        self, jobs: Sequence[CellJob], workspace: Workspace, hooks: CellHooks, desc: str
    ) -> Iterator[CellDone]: ...
