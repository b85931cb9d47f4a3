"""``fssbench data check``: validate a prepared root and report every problem found."""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.data import classes as C
from benchmark.data.images import read_image, read_label
from benchmark.data.prepared import SPLITS, PreparedDataset, parallel_map
from benchmark.errors import FssBenchError


@dataclass
class CheckReport:
    root: Path
    checked_images: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_list(path: Path, report: CheckReport) -> list[tuple[str, str]]:
    if not path.is_file():
        report.problems.append(f"{path}: list file missing")
        return []
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) != 2:
            report.problems.append(f"{path}:{n}: expected '<image> <label>', got {line!r}")
            continue
        pairs.append((parts[0], parts[1]))
    if not pairs:
        report.problems.append(f"{path}: list is empty")
    return pairs


def _pair_problems(task: tuple[str, str, str, int]) -> list[str]:
    """The problems of one image/mask pair ``(root, image, label, num_classes)`` (in a worker)."""
    root_str, image, label, num_classes = task
    root = Path(root_str)
    problems: list[str] = []
    try:
        img = read_image(root / image)
    except FssBenchError as e:
        problems.append(str(e))
        img = None
    try:
        lab = read_label(root / label)
    except FssBenchError as e:
        problems.append(str(e))
        return problems
    if img is not None and lab.shape != img.shape[:2]:
        problems.append(
            f"{root / label}: mask size {lab.shape[1]}x{lab.shape[0]} differs from image {image} "
            f"({img.shape[1]}x{img.shape[0]})"
        )
    values = np.unique(lab)
    bad = [int(v) for v in values if not (v <= num_classes or v == 255)]
    if bad:
        problems.append(f"{root / label}: unknown label value(s) {bad} (allowed: 0..{num_classes}, 255)")
    return problems


def default_check_workers() -> int:
    """Every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_prepared(root: Path, progress: bool = True, workers: int | None = None) -> CheckReport:
    """Check a prepared root: metadata, lists, every image and mask they name (the pairs on
    ``workers`` processes, default every core; the problems in the same order for any count).

    Reports (does not stop at) missing files, unreadable or truncated images, masks whose size
    differs from their image, unknown label values, empty or malformed lists, and fold lists that
    name images outside their split.
    """
    ds = PreparedDataset(root)  # raises for a missing root / missing dataset.json
    report = CheckReport(Path(root))
    split_pairs: dict[str, set[tuple[str, str]]] = {}
    for split in SPLITS:
        pairs = _read_list(ds.root / ds.meta["splits"][split]["list"], report)
        split_pairs[split] = set(pairs)
        try:
            recs = ds.records(split)
            if [(r.image, r.label) for r in recs] != pairs:
                report.problems.append(
                    f"{ds.records_path(split)}: does not match lists/{split}.txt; re-prepare"
                )
        except FssBenchError as e:
            report.problems.append(str(e))
    for cs, rel in ds.meta["fold_lists"].items():
        for fold in range(C.NUM_FOLDS):
            for split in SPLITS:
                folder = ds.root / rel / split
                for pair in _read_list(folder / f"data_list_{fold}.txt", report):
                    if pair not in split_pairs[split]:
                        report.problems.append(
                            f"{folder / f'data_list_{fold}.txt'}: {pair[0]} is not in lists/{split}.txt"
                        )
                sub_path = folder / f"sub_class_file_list_{fold}.txt"
                try:
                    sub = ast.literal_eval(sub_path.read_text())
                    expected = (
                        C.novel_classes(ds.dataset, fold, cs)
                        if split == "val"
                        else C.base_classes(ds.dataset, fold, cs)
                    )
                    if sorted(sub) != expected:
                        report.problems.append(
                            f"{sub_path}: classes {sorted(sub)} are not the fold's {split} classes"
                        )
                    empty = [c for c, v in sub.items() if not v]
                    if empty:
                        report.problems.append(
                            f"{sub_path}: no images for class(es) {empty} ({cs} fold {fold})"
                        )
                except FileNotFoundError:
                    report.problems.append(f"{sub_path}: missing")
                except (ValueError, SyntaxError) as e:
                    report.problems.append(f"{sub_path}: not a dict literal ({e})")
    all_pairs = sorted(split_pairs["train"] | split_pairs["val"])
    tasks = [(str(ds.root), image, label, ds.num_classes) for image, label in all_pairs]
    n = workers or default_check_workers()
    for problems in parallel_map(_pair_problems, tasks, n, "checking images", progress):
        report.problems.extend(problems)
    report.checked_images = len(all_pairs)
    return report
