"""Episode stages shared across variants: compute once, reuse, identical results.

Variants of an ablation study differ in a few switches, so on one episode most of their work is the
same: the support memory (every SAM 2 variant), the DINOv2 priors (every prior variant), the
pseudo-query memories and IMR (variants that differ only in SCMA or the decoder). A harness hands
``predict`` a :class:`SharedStages`: a memo plus a token that names the episode batch's inputs
(image hashes, masks, feature precision). The model names each stage by that token, its own weights
and the switches the stage depends on, so a hit returns exactly what the stage would compute::

    stages = SharedStages(memo, token)        # one per batch of episodes
    s_mem = stages.get("support_memory", {"sam2": ...}, lambda: mask_to_memory(...))

A model called without ``stages`` computes everything itself (figures, tests, users' scripts).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def nbytes(value: Any) -> int:
    """Bytes of the tensors in a value (tensors, tuples, lists, dicts and dataclasses of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    return 0


class StageMemo:
    """Stage results by key, in memory (on the device they were computed on), bounded in bytes.

    Variants run one cell after another over the same episodes, so the memo keeps the first
    ``max_bytes`` of results and then stops storing (an LRU would evict every episode before the
    next variant reached it). :meth:`scope` clears it when the episodes change (the next manifest).
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self.hits = self.misses = self.used = 0
        self._scope: str | None = None
        self._store: dict[str, Any] = {}

    def scope(self, name: str) -> None:
        """Start a new scope (for instance a manifest's hash); a different one clears the memo."""
        if name != self._scope:
            self._store.clear()
            self.used, self._scope = 0, name

    def get_or_compute(self, key: str, compute: Callable[[], T]) -> T:
        if key in self._store:
            self.hits += 1
            return self._store[key]
        value = compute()
        self.misses += 1
        size = nbytes(value)
        if self.used + size <= self.max_bytes:
            self._store[key] = value
            self.used += size
        return value

    def summary(self) -> str:
        total = self.hits + self.misses
        rate = 100 * self.hits / total if total else 0.0
        return f"shared stages: {self.hits}/{total} reused ({rate:.0f}%), {self.used / 2**20:.1f} MiB held"


@dataclasses.dataclass(frozen=True)
class SharedStages:
    """A memo and the token naming one batch's inputs (what every stage of the batch depends on
    besides the model's own weights and switches)."""

    memo: StageMemo
    token: str

    def get(self, stage: str, params: dict[str, Any], compute: Callable[[], T]) -> T:
        """The stage's result for this batch: from the memo when the same stage with the same
        ``params`` (weights, precision, switches) already ran on it, else computed now."""
        body = json.dumps({"stage": stage, "params": params, "inputs": self.token}, sort_keys=True)
        return self.memo.get_or_compute(hashlib.sha256(body.encode()).hexdigest(), compute)


def run_stage(stages: SharedStages | None, stage: str, params: dict[str, Any], compute: Callable[[], T]) -> T:
    """``stages.get(...)``, or ``compute()`` when no stages are shared."""
    return compute() if stages is None else stages.get(stage, params, compute)
