"""Batched journal writes: rows reach the file in batches (by count, by time, on close and on any
exception), a SIGKILL loses at most the unflushed batch, a resumed cell counts no episode twice,
and journals written one fsync per row read back unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import save_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.cell import CellSpec, evaluate_cell
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.journal import ROWS_ENV, SECONDS_ENV, CellJournal, FlushPolicy

ROOT = Path(__file__).resolve().parents[1]
HEADER = {"cell_key": "k" * 64, "manifest_sha256": "m" * 64}
EXPECTED = {i: i % 3 + 1 for i in range(12)}  # episode id -> class, as a manifest says
NEVER = 3600.0  # a flush interval no test reaches


def row(ep: int) -> dict[str, int]:
    return {"episode": ep, "class": EXPECTED[ep], "I_bg": 7 + ep, "U_bg": 9 + ep, "I_fg": 2, "U_fg": 5}


def episodes_in(path: Path) -> list[int]:
    """The episode ids of the file's rows, in file order (line 1 is the header)."""
    return [json.loads(x)["episode"] for x in path.read_text().splitlines()[1:]]


def test_rows_reach_the_file_a_batch_at_a_time_and_all_on_close(tmp_path):
    path = tmp_path / "j.jsonl"
    j = CellJournal(path, HEADER, EXPECTED, FlushPolicy(rows=3, seconds=NEVER))
    for ep in range(7):
        j.append(row(ep))
        assert episodes_in(path) == list(range(3 * ((ep + 1) // 3)))  # whole batches only
    assert sorted(j.rows) == list(range(7)) and j.flushes == 2
    j.close()
    assert episodes_in(path) == list(range(7)) and j.flushes == 3


def test_a_row_waits_at_most_the_flush_interval(tmp_path):
    path = tmp_path / "j.jsonl"
    with CellJournal(path, HEADER, EXPECTED, FlushPolicy(rows=1000, seconds=0.05)) as j:
        j.append(row(0))
        j.append(row(1))
        deadline = time.monotonic() + 10
        while episodes_in(path) != [0, 1] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert episodes_in(path) == [0, 1]  # written by the timer, no append nor close needed
        j.append(row(2))
    assert episodes_in(path) == [0, 1, 2]


def test_the_policy_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(ROWS_ENV, "1")
    monkeypatch.setenv(SECONDS_ENV, "0.5")
    assert FlushPolicy.from_env() == FlushPolicy(rows=1, seconds=0.5)
    monkeypatch.delenv(ROWS_ENV)
    monkeypatch.delenv(SECONDS_ENV)
    assert FlushPolicy.from_env() == FlushPolicy(rows=256, seconds=2.0)
    monkeypatch.setenv(ROWS_ENV, " ")  # blank is unset
    assert FlushPolicy.from_env() == FlushPolicy(rows=256, seconds=2.0)
    for name, bad in ((ROWS_ENV, "many"), (ROWS_ENV, "2.5"), (SECONDS_ENV, "soon")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(FssBenchError, match=f"{name}={bad!r}: expected"):
            FlushPolicy.from_env()
        monkeypatch.delenv(name)


def test_a_journal_written_one_fsync_per_row_reads_back_and_grows_the_same_way(tmp_path):
    """The format is unchanged: the bytes an old (per-row) journal holds, written here by hand."""
    path = tmp_path / "j.jsonl"
    old = [json.dumps({"journal": HEADER}, sort_keys=True)] + [
        json.dumps(row(e), sort_keys=True) for e in (0, 1)
    ]
    path.write_text("\n".join(old) + "\n")
    with CellJournal(path, HEADER, EXPECTED) as j:
        assert j.rows == {0: row(0), 1: row(1)} and j.cut_lines == 0
        j.append(row(2))
        j.append(row(3))
    expected = old + [json.dumps(row(e), sort_keys=True) for e in (2, 3)]
    assert path.read_text() == "\n".join(expected) + "\n"


JOURNAL_KILL = """
import os, signal, sys
from benchmark.errors import FssBenchError
from benchmark.evaluation.journal import CellJournal, FlushPolicy
from tests.test_journal_batch import EXPECTED, HEADER, row
j = CellJournal(sys.argv[1], HEADER, EXPECTED, FlushPolicy(rows=4, seconds=3600))
for ep in range(10):
    j.append(row(ep))
os.kill(os.getpid(), signal.SIGKILL)  # no close, no clean-up: episodes 8 and 9 were only buffered
"""


def test_sigkill_loses_only_the_unflushed_batch_and_resume_counts_nothing_twice(tmp_path):
    path = tmp_path / "j.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", JOURNAL_KILL, str(path)], cwd=ROOT, env=env, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert episodes_in(path) == list(range(8))  # two whole batches of 4
    with CellJournal(path, HEADER, EXPECTED, FlushPolicy(rows=4, seconds=NEVER)) as j:
        assert sorted(j.rows) == list(range(8)) and j.cut_lines == 0
        for ep in range(12):
            if ep not in j.rows:
                j.append(row(ep))
    assert episodes_in(path) == list(range(12))


def _manifest(root: Path, tmp_path: Path, episodes: int) -> Path:
    manifest = build_manifest(
        get_protocol("fssam"), ManifestRequest(root, 0, 1, seed=321, episodes=episodes, dataset="pascal")
    )
    path = tmp_path / "m.json"
    save_manifest(manifest, path)
    return path


CELL_KILL = """
import os, signal, sys
from pathlib import Path
from benchmark.evaluation.cell import CellSpec, evaluate_cell
from benchmark.evaluation.feature_cache import FeatureCache
manifest, root, journal = map(Path, sys.argv[1:4])
spec = CellSpec("mean_colour", {"image_size": 64}, manifest, root, "cpu", "ref")
seen = []
def kill_at_seven(row):
    seen.append(row)
    if len(seen) == 7:  # rows 1-6 flushed (batches of 3), row 7 appended but only buffered
        os.kill(os.getpid(), signal.SIGKILL)
evaluate_cell(spec, FeatureCache(None), journal_path=journal, on_row=kill_at_seven)
"""


def test_a_cell_killed_mid_way_resumes_to_the_uninterrupted_table(pascal_root, tmp_path):
    manifest = _manifest(pascal_root, tmp_path, episodes=10)
    spec = CellSpec("mean_colour", {"image_size": 64}, manifest, pascal_root, "cpu", "ref")
    whole = evaluate_cell(spec, FeatureCache(None))
    journal = tmp_path / "j.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), ROWS_ENV: "3", SECONDS_ENV: str(NEVER)}
    args = [sys.executable, "-c", CELL_KILL, str(manifest), str(pascal_root), str(journal)]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    kept = episodes_in(journal)
    assert kept == list(whole.table["episode"][:6])  # exactly the two flushed batches
    starts = []
    resumed = evaluate_cell(
        spec, FeatureCache(None), journal_path=journal, on_start=lambda d, t: starts.append((d, t))
    )
    assert starts == [(6, 10)] and resumed.episodes_run == 4 and resumed.episodes_resumed == 6
    assert resumed.table.equals(whole.table) and resumed.summary["miou"] == whole.summary["miou"]
    assert episodes_in(journal) == list(whole.table["episode"])  # every episode once


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_leaving_the_cell_flushes_the_rows_scored_so_far(pascal_root, tmp_path, error):
    manifest = _manifest(pascal_root, tmp_path, episodes=8)
    spec = CellSpec("mean_colour", {"image_size": 64}, manifest, pascal_root, "cpu", "ref")
    journal = tmp_path / "j.jsonl"
    seen: list[dict[str, int]] = []

    def stop_at_five(r: dict[str, int]) -> None:
        seen.append(r)
        if len(seen) == 5:
            raise error("stop")

    with pytest.raises(error):
        evaluate_cell(spec, FeatureCache(None), journal_path=journal, on_row=stop_at_five)
    assert episodes_in(journal) == [r["episode"] for r in seen]  # far below a batch of 256
