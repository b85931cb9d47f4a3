"""The disk feature cache can be inspected, bounded (least recently used first) and cleared."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from benchmark.cache_admin import cache_info, clear, prune
from benchmark.evaluation.feature_cache import FeatureCache
from tests.helpers import ROOT


def fill(cache: FeatureCache, identity: dict, n: int, numel: int = 1000) -> None:
    for i in range(n):
        cache.get_or_compute(identity, f"img{i}", lambda i=i: {"x": torch.full((numel,), float(i))})


def test_prune_removes_the_least_recently_used_files_first(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    fill(cache, {"encoder": "a"}, 5)
    files = sorted((tmp_path / "c").rglob("*.safetensors"))
    size = files[0].stat().st_size
    for age, f in enumerate(files):  # files[0] is the oldest ... files[4] the newest
        os.utime(f, ns=(10**18 + age * 10**9, 10**18 + age * 10**9))
    removed, freed = prune(tmp_path / "c", 2 * size)
    assert (removed, freed) == (3, 3 * size)
    assert sorted((tmp_path / "c").rglob("*.safetensors")) == files[3:]
    assert prune(tmp_path / "c", 10 * size) == (0, 0)


def test_a_bounded_cache_stays_under_its_bound_and_keeps_what_was_just_used(tmp_path):
    probe = FeatureCache(tmp_path / "probe")
    fill(probe, {"encoder": "a"}, 1)
    size = next((tmp_path / "probe").rglob("*.safetensors")).stat().st_size
    cache = FeatureCache(tmp_path / "c", memory_bytes=0, max_disk_bytes=4 * size)
    fill(cache, {"encoder": "a"}, 10)
    assert cache.disk_size() <= 4 * size
    assert cache.stats.disk_bytes_evicted == 10 * size - cache.disk_size()
    # what remains is still right (eviction only costs recomputation)
    again = FeatureCache(tmp_path / "c", memory_bytes=0)
    out = again.get_or_compute({"encoder": "a"}, "img9", lambda: {"x": torch.zeros(1)})
    assert again.stats.disk_hits == 1 and torch.equal(out["x"], torch.full((1000,), 9.0))


def test_info_and_clear(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    fill(cache, {"encoder": "sam2-2.0-t", "image_size": 256, "precision": "fp32", "weights": "ab" * 32}, 3)
    fill(cache, {"encoder": "dinov2-vits14", "input_size": 224}, 2, numel=10)
    usage = cache_info(tmp_path / "c")
    assert [u.files for u in usage] == [3, 2]
    assert usage[0].encoder == "sam2-2.0-t, image_size=256, precision=fp32, weights=abababababab"
    assert sum(u.bytes for u in usage) == cache.disk_size()
    assert clear(tmp_path / "c") == sum(u.bytes for u in usage) and not (tmp_path / "c").exists()


def test_the_cache_command(tmp_path):
    cache = FeatureCache(tmp_path / "w" / "feature-cache")
    fill(cache, {"encoder": "a"}, 3)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "benchmark.cli", "cache", *args, "--work-dir", str(tmp_path / "w")],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )

    info = cli("info")
    assert info.returncode == 0 and "3 files" in info.stdout.splitlines()[-1]
    assert cli("prune", "--max-gb", "0").stdout.startswith("removed 3 least recently used file(s)")
    refused = cli("clear")
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    assert cli("clear", "--yes").returncode == 0 and not (tmp_path / "w" / "feature-cache").exists()
    missing = cli("info")
    assert missing.returncode == 2 and "no feature cache there" in missing.stderr
