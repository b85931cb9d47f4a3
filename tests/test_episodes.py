"""Episode sampling: protocol rules, determinism across processes, hashing, errors."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmark.data.lists import ImageRecord
from benchmark.episodes.manifest import (
    Episode,
    Manifest,
    Source,
    load_manifest,
    manifest_sha256,
    save_manifest,
)
from benchmark.episodes.protocols.fssam import StableRng, sample_episodes
from benchmark.errors import FssBenchError

BIG = 5000


def rec(i, **pixels):
    return ImageRecord(i, f"J/{i}.jpg", f"S/{i}.png", 8, 8, {int(k[1:]): v for k, v in pixels.items()})


# 12 val images for classes 1..3; q0 also holds 10 px of class 2 (present, not counted)
RECORDS = (
    [rec("q0", c1=BIG, c2=10)]
    + [rec(f"a{i}", c1=BIG) for i in range(5)]
    + [rec(f"b{i}", c2=BIG, **({"c3": BIG} if i % 2 else {})) for i in range(6)]
)
CLASSES = [1, 2, 3]


def pools():
    return {c: {r.id for r in RECORDS if r.pixels.get(c, 0) >= 2048} for c in CLASSES}


def test_stable_rng_is_python_random_floor():
    import random

    r, ref = StableRng(321), random.Random(321)
    for n in [1, 2, 7, 1000]:
        assert r.below(n) == int(ref.random() * n)


@pytest.mark.parametrize("shot", [1, 2])
def test_episode_rules_hold(shot):
    eps = sample_episodes(RECORDS, CLASSES, shot, seed=5, n=300, where="test")
    p = pools()
    by_id = {r.id: r for r in RECORDS}
    for e in eps:
        q = by_id[e.query]
        assert q.pixels.get(e.cls, 0) > 0  # the class is present in the query
        assert len(e.supports) == shot and len(set(e.supports)) == shot  # distinct supports
        assert e.query not in e.supports
        assert set(e.supports) <= p[e.cls]  # supports have >= 2048 px of the class
    assert [e.id for e in eps] == list(range(300))


def test_fssam_cycles_the_ordered_query_list():
    eps = sample_episodes(RECORDS, CLASSES, 1, seed=321, n=25, where="test")
    # the eval list is every record holding a counted class of the fold, in order (all 12 here)
    order = [r.id for r in RECORDS]
    assert [e.query for e in eps] == [order[i % 12] for i in range(25)]
    # q0's class is drawn among the PRESENT classes {1, 2} (PFENet __getitem__), so class 2 occurs
    classes_for_q0 = Counter(
        e.cls for e in sample_episodes(RECORDS, CLASSES, 1, seed=1, n=1200, where="t") if e.query == "q0"
    )
    assert set(classes_for_q0) == {1, 2} and min(classes_for_q0.values()) > 30


def test_too_few_images_for_the_shot_is_a_clear_error():
    with pytest.raises(FssBenchError, match=r"class 3 has 3 image\(s\); a 3-shot episode needs at least 4"):
        sample_episodes(RECORDS, CLASSES, 3, seed=0, n=10, where="LIST")


def test_the_seed_draws_classes_and_supports_independently_and_never_the_query_order():
    """1200 episodes = 100 passes over the 12 queries. Per query, two independent uniform draws agree
    with probability sum_c P(c)^2 / (pool of c minus the query), by hand from RECORDS:
    a0..a4: class 1 only, 5 others -> 1/5; b0, b2, b4: class 2 only, 5 others -> 1/5;
    q0: classes {1, 2} (class 1's pool is q0 + a0..a4, class 2's b0..b5) -> 1/4 * 1/5 + 1/4 * 1/6;
    b1, b3, b5: classes {2, 3} (class 3's pool: b1, b3, b5) -> 1/4 * 1/5 + 1/4 * 1/2."""
    n = 1200
    a = sample_episodes(RECORDS, CLASSES, 1, seed=1, n=n, where="t")
    assert a == sample_episodes(RECORDS, CLASSES, 1, seed=1, n=n, where="t")  # a pure function
    b = sample_episodes(RECORDS, CLASSES, 1, seed=2, n=n, where="t")
    order = [r.id for r in RECORDS]
    assert [e.query for e in a] == [e.query for e in b] == [order[i % 12] for i in range(n)]
    p, present = pools(), {r.id: {c for c in CLASSES if r.pixels.get(c, 0) > 0} for r in RECORDS}
    for e in a + b:  # both are valid draws
        assert e.cls in present[e.query] and e.supports[0] in p[e.cls] - {e.query}
    chance = [1 / 5] * 8 + [1 / 20 + 1 / 24] + [1 / 20 + 1 / 8] * 3  # the 12 queries, per pass
    expected = 100 * sum(chance)  # about 222
    sd = (100 * sum(q * (1 - q) for q in chance)) ** 0.5  # about 13 (independent episodes)
    agree = sum((x.cls, x.supports) == (y.cls, y.supports) for x, y in zip(a, b, strict=True))
    assert abs(agree - expected) < 5 * sd, (agree, expected)  # a seed-blind draw would agree 1200 times
    # and a support is uniform over the others of the pool: a0's 100 supports, 20 each expected
    counts = Counter(e.supports[0] for e in a if e.query == "a0")
    assert set(counts) == {"q0", "a1", "a2", "a3", "a4"} and all(5 <= c <= 40 for c in counts.values())


def test_manifest_hash_and_tamper_detection(tmp_path):
    m = Manifest(
        kind="test",
        dataset="pascal",
        class_split=None,
        fold=0,
        shot=1,
        protocol="fssam",
        seed=321,
        num_episodes=1,
        classes=(1,),
        source=Source("val", "0" * 64),
        images={"x": ("J/x.jpg", "S/x.png"), "y": ("J/y.jpg", "S/y.png")},
        episodes=(Episode(0, "x", 1, ("y",)),),
    ).sealed()
    assert m.sha256 == manifest_sha256(m.to_dict()) == m.computed_sha256()
    save_manifest(m, tmp_path / "m.json")
    assert load_manifest(tmp_path / "m.json") == m
    assert json.loads((tmp_path / "m.json").read_text()) == m.to_dict()
    # key order does not change the hash (canonical serialisation)
    assert manifest_sha256(dict(reversed(list(m.to_dict().items())))) == m.sha256
    bad = json.loads((tmp_path / "m.json").read_text())
    bad["episodes"][0]["class"] = 2
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(FssBenchError, match="does not match its sha256"):
        load_manifest(tmp_path / "bad.json")
    with pytest.raises(FssBenchError, match="not found"):
        load_manifest(tmp_path / "missing.json")


@pytest.mark.slow
def test_sampling_is_identical_in_fresh_processes_with_different_hash_seeds():
    """Set/dict iteration order must not leak into episodes (PYTHONHASHSEED varies per process)."""
    code = (
        "from tests.test_episodes import RECORDS, CLASSES; from benchmark.episodes.protocols.fssam import sample_episodes;"
        "print([(e.query, e.cls, e.supports) for e in sample_episodes(RECORDS, CLASSES, 2, 321, 200, 't')])"
    )
    root = Path(__file__).resolve().parents[1]
    outs = set()
    for hs in ["0", "1", "12345"]:
        env = {**os.environ, "PYTHONHASHSEED": hs}
        outs.add(
            subprocess.run(
                [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
            ).stdout
        )
    assert len(outs) == 1
