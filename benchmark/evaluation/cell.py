"""The cell function: evaluate one (method, resolved settings, manifest, device), with no tracking.

``evaluate_cell(spec, cache) -> CellResult`` is what every engine calls (``benchmark.engines.local``
for ``fssbench run`` and the search's trials, and each Ray worker), ``fssbench profile`` and the demo.
MLflow logging, progress bars and printing stay with the callers (``on_episode`` reports progress).

Data flows one way through it::

    manifest -> load_episode (episode loader) -> Featurizer (cache) -> method.predict -> metrics

A cell's key (:func:`cell_key`) is known before any model is built: it hashes the method and its
resolved settings, the effective precision, the manifest hash, the weight files' SHA-256 (cached
by path, size and mtime) or the random-init seed, the source that determines the numbers and the
versions of the packages that do.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import resource
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmark.data.classes import class_names
from benchmark.device import compile_method, device_identity, resolve_device
from benchmark.episodes.manifest import Episode, Manifest, load_manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.features import Featurizer
from benchmark.evaluation.journal import CellJournal
from benchmark.evaluation.loader import (
    EpisodeData,
    ImageStore,
    load_episode,
    method_image_resize,
    method_reads_masks,
    shared_store,
)
from benchmark.evaluation.metrics import bootstrap_ci, episode_iou, summarize
from benchmark.evaluation.predict import predict_scored, score_rows, scored_mask
from benchmark.evaluation.predictions import StoredPrediction, mask_to_rle
from benchmark.io_utils import canonical_json, installed_versions, write_text_atomic
from benchmark.methods import FewShotMethod, WeightPool, build_method, get_method
from fssam.hashing import file_sha256
from fssam.sam2_adapter import effective_precision
from fssam.stages import StageMemo

ROOT = Path(__file__).resolve().parents[2]
CODE_PATHS = (
    "fssam",
    "baselines",
    "benchmark/methods",
    "benchmark/data/images.py",
    "benchmark/data/classes.py",
    "benchmark/evaluation/loader.py",
    "benchmark/evaluation/features.py",
    "benchmark/evaluation/predict.py",
    "benchmark/evaluation/metrics.py",
    "benchmark/evaluation/scoring.py",
)
"""The source that determines a cell's numbers: the models, label reading, episode loading, features,
the episode step and scoring. A method registered from elsewhere adds the file of its builder."""
CODE_EXCLUDED = ("fssam/train.py",)  # cannot change a prediction
NUMBER_PACKAGES = ("torch", "sam2", "timm", "pillow")  # pillow decodes the JPEGs


def code_files() -> list[Path]:
    """The source files in :data:`CODE_PATHS`, minus :data:`CODE_EXCLUDED`, in a fixed order."""
    out = []
    for rel in CODE_PATHS:
        p = ROOT / rel
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            if str(f.relative_to(ROOT)) not in CODE_EXCLUDED:
                out.append(f)
    return out


@functools.cache
def code_hash() -> str:
    """SHA-256 of :func:`code_files` (names and contents)."""
    h = hashlib.sha256()
    for f in code_files():
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def number_package_versions() -> dict[str, str]:
    """Versions of :data:`NUMBER_PACKAGES` (part of every cell key)."""
    return installed_versions(NUMBER_PACKAGES)


class CheckpointHashes:
    """SHA-256 of weight files, remembered by (absolute path, size, mtime) in a JSON file.

    Hashing a 900 MB checkpoint takes seconds; a rerun of a finished study must not pay it again.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self._known: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.is_file():
            try:
                self._known = json.loads(self.path.read_text())
            except ValueError:
                self._known = {}
        self.computed = 0

    def sha256(self, file: str | Path) -> str:
        p = Path(file).absolute()
        try:
            st = p.stat()
        except OSError as e:
            raise FssBenchError(f"checkpoint {p} not found ({e.strerror})") from None
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        known = self._known.get(str(p))
        if known is not None and {k: known.get(k) for k in stamp} == stamp:
            return known["sha256"]
        sha = file_sha256(p)
        self.computed += 1
        self._known[str(p)] = {**stamp, "sha256": sha}
        if self.path is not None:
            write_text_atomic(self.path, json.dumps(self._known, indent=1, sort_keys=True))
        return sha


@dataclass(frozen=True)
class CellSpec:
    """What a cell computes: a method with resolved settings (defaults included, checkpoint
    templates filled in) on a manifest of a prepared data root, on a device."""

    method: str
    settings: Mapping[str, Any]
    manifest_path: Path
    data_root: Path
    device: str = "auto"
    name: str = ""
    batch_size: int = 1  # episodes per forward: on CPU how, not what (batched equals unbatched); in CUDA keys
    feature_dtype: str = "fp32"  # storage dtype of the frozen features: changes the numbers (in the key)
    compile: bool = False  # torch.compile the heavy modules (how, not what: not in the key)

    @property
    def precision(self) -> str:
        """The effective precision on this machine ("bf16" autocast on CUDA, else "fp32")."""
        return effective_precision(resolve_device(self.device), str(self.settings.get("precision", "auto")))


def weight_ids(spec: CellSpec, hashes: CheckpointHashes | None = None) -> dict[str, str]:
    """Role -> SHA-256 of the weight file, or the random-init id: without building any model."""
    hashes = hashes or CheckpointHashes()
    out = {}
    for role, source in get_method(spec.method).weight_sources(dict(spec.settings)).items():
        out[role] = source if source.startswith("random-init:") else hashes.sha256(source)
    return out


@functools.cache
def _source_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def method_code_hash(entry: Any) -> str | None:
    """SHA-256 of the file that defines a method's builder, when it lies outside :data:`CODE_PATHS`
    (a method registered by a user's own module); None when it is covered or has no file."""
    try:
        path = Path(inspect.getsourcefile(entry.build) or "").resolve()
    except TypeError:
        return None
    if not path.is_file() or path in set(code_files()):
        return None
    return _source_sha256(str(path))


def cell_key(spec: CellSpec, manifest_sha256: str, weights: Mapping[str, str]) -> str:
    """SHA-256 of everything that determines a cell's numbers (and nothing that does not)."""
    entry = get_method(spec.method)
    settings = {
        k: v for k, v in spec.settings.items() if k not in entry.checkpoints and k != "precision"
    }  # checkpoint paths are replaced by their hashes, the requested precision by the effective one
    device = resolve_device(spec.device)
    body = {
        "method": spec.method,
        "settings": settings,
        "precision": spec.precision,
        "device_type": device.type,  # CUDA kernels (TF32 convs) differ from CPU's
        "manifest": manifest_sha256,
        "weights": dict(weights),
        "code": code_hash(),
        "method_code": method_code_hash(entry),
        "packages": number_package_versions(),
    }
    if spec.feature_dtype != "fp32":  # fp32 cells keep the keys they had before compact features
        body["feature_dtype"] = spec.feature_dtype
    identity = device_identity(device)  # GPU model, cuDNN, TF32 and deterministic switches
    if identity != {"type": "cpu"}:  # CPU cells at full precision keep the keys they had
        body["device"] = identity
    if device.type != "cpu":  # batched CPU logits equal unbatched ones (tested); on a GPU, kernels
        # may differ with the batch: drop this once scripts/gpu-check.sh shows batched == unbatched
        body["batch_size"] = spec.batch_size
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


class PeakMemory:
    """Peak memory of a block: CUDA max allocated, or on CPU the growth of the process's RSS during
    the block (sampled every 10 ms), not the process lifetime maximum."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_growth"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        start = self._rss()
        if start is None:  # no /proc: fall back to the lifetime peak
            self.kind = "process_max_rss"
            return self
        self._start = self._max = start

        def sample() -> None:
            while not self._stop.wait(0.01):
                self._max = max(self._max, self._rss() or 0)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, self._rss() or 0)
            self.peak_bytes = self._max - self._start
        else:
            self.peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class CellResult:
    """A cell's outcome: the per-episode table and everything derived from it, ready to log."""

    spec: CellSpec
    key: str | None
    table: pd.DataFrame  # per-episode counts (EPISODE_COLUMNS), sorted by episode id
    summary: dict[str, Any]  # metrics.summarize(...) plus the bootstrap CI ("miou_ci")
    metrics: dict[str, float]  # flat, for tracking: fractions in [0, 1], timings, memory
    seconds: float  # wall time of the episodes run now (not the resumed ones)
    episodes_run: int
    episodes_resumed: int
    peak_memory_mb: float
    peak_memory_kind: str
    random_init: bool
    weight_hashes: dict[str, str]  # what the built method reports of its weights
    device: str
    precision: str
    manifest: Manifest | None = field(repr=False, default=None)
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: load_wait, encode, episode_path
    encoder_passes: dict[str, int] = field(default_factory=dict)  # images run through each encoder now
    weight_ids: dict[str, str] = field(default_factory=dict)  # the cell key's (and the tags') weight ids
    predictions: dict[int, StoredPrediction] = field(default_factory=dict, repr=False)  # episode -> its mask

    def run_stats(self) -> dict[str, Any]:
        """How the run went, for a results row: episodes run now, seconds, episodes/s, peak memory,
        the time split (``*_s``) and the encoder passes."""
        return {
            "episodes_run": self.episodes_run,
            "seconds": self.seconds,
            "episodes_per_s": self.metrics.get("episodes_per_s"),
            "peak_mem_mb": self.peak_memory_mb,
            **{f"{k}_s": v for k, v in self.timings.items()},
            "encoder_passes": sum(self.encoder_passes.values()),
        }


def evaluate_cell(
    spec: CellSpec,
    cache: FeatureCache,
    *,
    key: str | None = None,
    method: FewShotMethod | None = None,
    pool: WeightPool | None = None,
    journal_path: Path | None = None,
    artifacts_dir: Path | None = None,
    qualitative: int = 3,
    on_start: Callable[[int, int], None] | None = None,
    on_episode: Callable[[int, int], None] | None = None,
    on_row: Callable[[dict[str, int]], None] | None = None,
    stages: StageMemo | None = None,
    decode_threads: int = 2,
    weights: Mapping[str, str] | None = None,
) -> CellResult:
    """Score ``spec``'s method on every episode of its manifest, ``spec.batch_size`` episodes per
    forward, the next batch's labels read and uncached images decoded by ``decode_threads``
    background threads while the current one runs.

    Args:
        key: the cell key (recorded in the journal header and config.json); computed if omitted.
        method: an already built method (else it is built from the registry, sharing ``pool``).
        journal_path: the episode journal; episodes already in it are not run again (resume).
        artifacts_dir: where to write episodes.parquet, per_class.csv, config.json and, with
            ``qualitative`` > 0, PNG overlays of the worst, median and best episodes.
        on_start: called as ``on_start(already_done, total)`` once the journal is read back.
        on_episode: called as ``on_episode(done, total)`` after each episode (progress bars).
        on_row: called with each episode's row of the per-episode table, the journal's resumed rows
            first (in manifest order), then each new one as it is scored (running metrics, pruning).
            An exception it raises stops the cell; the rows scored so far stay in the journal.
        stages: a memo of episode stages shared with the other cells of the same manifest
            (fssam/stages.py); results are identical with and without it.
        weights: the weight ids the key was computed from (role -> SHA-256 or random-init id),
            recorded in config.json as the run's ``fss.weights.*`` tags have them; computed if
            omitted.
    """
    manifest = load_manifest(spec.manifest_path)
    device = resolve_device(spec.device)
    if weights is None and (key is None or artifacts_dir is not None):
        weights = weight_ids(spec)
    key = key or cell_key(spec, manifest.sha256, weights or {})
    method = method if method is not None else build_method(spec.method, dict(spec.settings), device, pool)
    if spec.compile:
        compile_method(method)
    store = shared_store(spec.data_root)  # labels decoded once per process, not once per cell
    feat = Featurizer(method, cache, dtype=spec.feature_dtype, encode_batch=max(8, 2 * spec.batch_size))
    run = _EpisodeRun(spec, method, feat, store, manifest, stages, on_row, on_episode)
    done = run.journaled(journal_path, key, device, decode_threads, on_start)
    summary, metrics = _cell_metrics(spec, manifest, done.table, done.peak_memory_mb)
    if done.episodes_run:
        metrics["episodes_per_s"] = done.episodes_run / max(done.seconds, 1e-9)
        metrics["encode_s"] = feat.encode_seconds
        metrics["episode_path_s"] = done.timings["episode_path"]
    result = CellResult(
        spec=spec,
        key=key,
        table=done.table,
        summary=summary,
        metrics=metrics,
        seconds=done.seconds,
        episodes_run=done.episodes_run,
        episodes_resumed=done.episodes_resumed,
        peak_memory_mb=done.peak_memory_mb,
        peak_memory_kind=done.peak_memory_kind,
        random_init=bool(method.random_init),
        weight_hashes=method.weight_hashes(),
        weight_ids=dict(weights or {}),
        device=str(device),
        precision=spec.precision,
        manifest=manifest,
        timings=done.timings,
        encoder_passes=dict(feat.passes),
        predictions=done.predictions,
    )
    if artifacts_dir is not None:
        result.artifacts = write_artifacts(result, Path(artifacts_dir), method, feat, store, qualitative)
    return result


@dataclass(frozen=True)
class _Scored:
    """What a cell's episode loop leaves: the complete per-episode table, the episodes run now and
    resumed from the journal, the seconds and time split of the run, and the peak memory."""

    table: pd.DataFrame
    episodes_run: int
    episodes_resumed: int
    seconds: float
    timings: dict[str, float]
    peak_memory_mb: float
    peak_memory_kind: str
    predictions: dict[int, StoredPrediction]


@dataclass
class _EpisodeRun:
    """The episode loop of one cell: the episodes not yet in the journal, in batches loaded ahead on
    background threads, predicted, scored and appended to the journal (``on_row``/``on_episode``
    told of each)."""

    spec: CellSpec
    method: FewShotMethod
    feat: Featurizer
    store: ImageStore
    manifest: Manifest
    stages: StageMemo | None
    on_row: Callable[[dict[str, int]], None] | None
    on_episode: Callable[[int, int], None] | None

    def journaled(
        self,
        journal_path: Path | None,
        key: str,
        device: torch.device,
        decode_threads: int,
        on_start: Callable[[int, int], None] | None,
    ) -> _Scored:
        """Resume from the journal at ``journal_path`` (header: the cell ``key`` and the manifest's
        hash; its rows told to ``on_row`` first), score the rest under a peak-memory watch, and read
        the complete table back."""
        if self.stages is not None:
            self.stages.scope(self.manifest.sha256)
        episodes = list(self.manifest.episodes)
        header = {"cell_key": key, "manifest_sha256": self.manifest.sha256}
        with (
            CellJournal(journal_path, header, {e.id: e.cls for e in episodes}) as journal,
            PeakMemory(device) as memory,
        ):
            todo = [e for e in episodes if e.id not in journal.rows]
            resumed = len(episodes) - len(todo)
            if on_start is not None:
                on_start(resumed, len(episodes))
            if self.on_row is not None:
                for e in episodes:
                    if e.id in journal.rows:
                        self.on_row(journal.rows[e.id])
            seconds, timings = self.score(journal, todo, decode_threads)
            table = journal.table()
        return _Scored(
            table,
            len(todo),
            resumed,
            seconds,
            timings,
            memory.peak_bytes / 2**20,
            memory.kind,
            dict(journal.predictions),
        )

    def load(self, batch: list[Episode]) -> list[EpisodeData]:
        """A batch's episodes, with the pixels the encoders will need decoded now (in the background)."""
        m = self.manifest
        size, resize = self.method.image_size, method_image_resize(self.method)
        masks = method_reads_masks(self.method)
        datas = [load_episode(self.store, m.images, ep, size, m.evaluation, resize, masks) for ep in batch]
        for d in datas:
            for img, role in ((d.query, "query"), *((s, "support") for s in d.supports)):
                if self.feat.needs_pixels(img, role):
                    img.tensor()
        return datas

    def score(
        self, journal: CellJournal, todo: list[Episode], decode_threads: int
    ) -> tuple[float, dict[str, float]]:
        """Score ``todo`` (``spec.batch_size`` per forward, ``decode_threads`` batches loading ahead):
        (seconds, the time split: load_wait, episode_path, encode, feature_io)."""
        feat, spec = self.feat, self.spec
        threshold = float(spec.settings.get("threshold", 0.5))
        kshot = str(spec.settings.get("kshot", "joint"))
        total = len(self.manifest.episodes)
        t0 = time.perf_counter()
        timings = {"load_wait": 0.0, "episode_path": 0.0}
        size = max(1, spec.batch_size)
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        workers = max(1, decode_threads)
        loader = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fss-load")
        ahead = {j: loader.submit(self.load, batches[j]) for j in range(min(workers, len(batches)))}
        try:
            for i in range(len(batches)):
                t_wait = time.perf_counter()
                datas = ahead.pop(i).result()
                timings["load_wait"] += time.perf_counter() - t_wait
                if i + workers < len(batches):  # keep `workers` batches loading ahead
                    ahead[i + workers] = loader.submit(self.load, batches[i + workers])
                fetch_before = feat.fetch_seconds
                t_path = time.perf_counter()
                logits = predict_scored(self.method, feat, datas, kshot, self.stages)  # scored where it is
                if logits.device.type == "cuda":  # the forward's own time, not the scorer's
                    torch.cuda.synchronize(logits.device)
                timings["episode_path"] += time.perf_counter() - t_path - (feat.fetch_seconds - fetch_before)
                preds: list[StoredPrediction] = []
                for row, pred in zip(score_rows(logits, datas, threshold, preds), preds, strict=True):
                    journal.append(row, pred)
                    if self.on_row is not None:
                        self.on_row(row)
                    if self.on_episode is not None:
                        self.on_episode(len(journal.rows), total)
        finally:
            loader.shutdown(wait=True, cancel_futures=True)
        seconds = time.perf_counter() - t0
        timings["encode"] = feat.encode_seconds
        timings["feature_io"] = feat.fetch_seconds - feat.encode_seconds
        return seconds, timings


def _cell_metrics(
    spec: CellSpec, manifest: Manifest, table: pd.DataFrame, peak_mb: float
) -> tuple[dict[str, Any], dict[str, float]]:
    """The summary (with the bootstrap CI of the mIoU) and the flat metrics of a complete table."""
    if len(table) != manifest.num_episodes:
        raise FssBenchError(f"{spec.name}: {len(table)} of {manifest.num_episodes} episodes recorded")
    classes = list(manifest.classes)
    summary = summarize(table, classes)
    ci = bootstrap_ci(table, classes, metric="miou")
    summary["miou_ci"] = (ci["low"], ci["high"])
    metrics = {
        "miou": summary["miou"],
        "fb_iou": summary["fb_iou"],
        "fg_iou": summary["fg_iou"],
        "miou_ci_low": ci["low"],
        "miou_ci_high": ci["high"],
        "peak_mem_mb": peak_mb,
        "episodes": float(len(table)),
        **{f"iou_class_{c}": v for c, v in summary["class_iou"].items()},
    }
    return summary, metrics


def cell_config(result: CellResult) -> dict[str, Any]:
    """config.json: how to recompute the cell (method, resolved settings, manifest, weights, code)."""
    spec, m = result.spec, result.manifest
    return {
        "cell": spec.name,
        "cell_key": result.key,
        "method": spec.method,
        "settings": dict(spec.settings),
        "device": result.device,
        "precision_effective": result.precision,
        "data_root": str(spec.data_root),
        "manifest": str(spec.manifest_path),
        "manifest_sha256": m.sha256 if m is not None else None,
        "classes": list(m.classes) if m is not None else None,
        "class_split": m.class_split if m is not None else None,
        "evaluation": m.evaluation.to_json() if m is not None else None,  # how the cell is scored
        "weights": result.weight_ids,  # the ids of the cell key and the fss.weights.* tags
        "weights_loaded": result.weight_hashes,  # the built method's own account of them
        "random_init": result.random_init,
        "code_sha256": code_hash(),
        "packages": number_package_versions(),
    }


def predictions_table(predictions: Mapping[int, StoredPrediction]) -> pd.DataFrame:
    """predictions.parquet from the journal's packed masks: one row per episode (sorted) with its
    predicted mask at the scored size as COCO RLE: ``episode``, ``height``, ``width``, ``counts``
    (pycocotools' compressed string)."""
    ids = sorted(predictions)
    rles = [mask_to_rle(predictions[e].mask()) for e in ids]
    return pd.DataFrame(
        {
            "episode": pd.Series(ids, dtype="int64"),
            "height": pd.Series([r["size"][0] for r in rles], dtype="int64"),
            "width": pd.Series([r["size"][1] for r in rles], dtype="int64"),
            "counts": pd.Series([r["counts"] for r in rles], dtype="object"),
        }
    )


def write_artifacts(
    result: CellResult,
    folder: Path,
    method: FewShotMethod,
    feat: Featurizer,
    store: ImageStore,
    qualitative: int = 3,
) -> list[tuple[Path, str | None]]:
    """Write the cell's artifacts into ``folder`` (replaced); returns (path, artifact subdir) pairs."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    table, summary = result.table, result.summary
    table.to_parquet(folder / "episodes.parquet", index=False)
    classes = list(summary["class_iou"])
    names = class_names(result.manifest.dataset)
    per_class = pd.DataFrame(
        {
            "class": classes,
            "class_name": [names[c - 1] for c in classes],
            "iou": [summary["class_iou"][c] for c in classes],
            "episodes": [summary["episodes_per_class"].get(c, 0) for c in classes],
        }
    )
    per_class.to_csv(folder / "per_class.csv", index=False)
    write_text_atomic(
        folder / "config.json", json.dumps(cell_config(result), indent=2, sort_keys=True, default=str)
    )
    shutil.copyfile(result.spec.manifest_path, folder / "manifest.json")  # the episodes themselves
    out: list[tuple[Path, str | None]] = [
        (folder / "episodes.parquet", None),
        (folder / "per_class.csv", None),
        (folder / "config.json", None),
        (folder / "manifest.json", None),
    ]
    if result.predictions:
        predictions_table(result.predictions).to_parquet(folder / "predictions.parquet", index=False)
        out.append((folder / "predictions.parquet", None))
    if qualitative:
        out += [
            (p, "qualitative")
            for p in _qualitative(result, method, feat, store, folder / "qualitative", qualitative)
        ]
    return out


def _qualitative(
    result: CellResult, method: FewShotMethod, feat: Featurizer, store: ImageStore, folder: Path, count: int
) -> list[Path]:
    from benchmark.evaluation.qualitative import save_episode_overlay

    table, manifest = result.table, result.manifest
    iou = episode_iou(table)
    order = np.argsort(iou, kind="stable")
    picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
    episodes = {e.id: e for e in manifest.episodes}
    paths = []
    for label, idx in list(picks.items())[:count]:
        ep = episodes[int(table["episode"].iloc[idx])]
        # drawn at the label's size; predicted as the cell scores (kshot), IoU as scored (the table's)
        data = load_episode(
            store, manifest.images, ep, method.image_size, image_resize=method_image_resize(method)
        )
        logits = predict_scored(method, feat, [data], str(result.spec.settings.get("kshot", "joint")))
        threshold = float(result.spec.settings.get("threshold", 0.5))
        pred = scored_mask(logits[0:1], data.scored.shape, threshold).numpy()
        name = class_names(manifest.dataset)[ep.cls - 1]
        title = (
            f"{result.spec.name} episode {ep.id} ({label}): class {ep.cls} {name}, support 1 of "
            f"{len(ep.supports)} shown, IoU {100 * float(iou[idx]):.1f}"
        )
        if result.random_init:
            title = "RANDOM-INIT " + title
        path = folder / f"{label}-ep{ep.id}.png"
        support = data.supports[0].original()
        paths.append(
            save_episode_overlay(
                path, data.query.original(), data.query_target, pred, title, support, data.support_labels[0]
            )
        )
    return paths
