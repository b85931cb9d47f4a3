"""The harness's per-episode fast path: vectorised scoring equals the per-episode reference, labels
are decoded once per process within a byte budget, and methods without encoders decode nothing."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import benchmark.evaluation.loader as loader_module
from benchmark.data.images import read_label
from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import Episode, Evaluation, save_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.evaluation.cell import CellSpec, evaluate_cell
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.label_cache import BytesLRU, clear_shared
from benchmark.evaluation.loader import EpisodeData, episode_target, scored_target, shared_store
from benchmark.evaluation.metrics import intersection_union, logit_threshold
from benchmark.evaluation.predict import score_episode
from benchmark.evaluation.scoring import ScoredTarget, score_batch
from benchmark.methods import build_method, get_method


def _data(target: np.ndarray, episode_id: int = 0) -> EpisodeData:
    """An EpisodeData holding only what score_episode reads: the episode and its scored target."""
    empty = torch.zeros(1, 1, 1, dtype=torch.uint8)
    return EpisodeData(
        Episode(episode_id, "q", 1, ("s",)), None, [], empty, empty[0], ScoredTarget.of(target)
    )  # type: ignore[arg-type]


def _target(rng: np.random.Generator, h: int, w: int, ignore: bool) -> np.ndarray:
    values = [0, 1, 255] if ignore else [0, 1]
    return rng.choice(values, size=(h, w), p=[0.5, 0.3, 0.2] if ignore else [0.6, 0.4]).astype(np.uint8)


def _logits(rng: np.random.Generator, shape: tuple[int, ...], threshold: float) -> torch.Tensor:
    """Random logits with exact ties: a quarter of the values are exactly 0, a quarter exactly the
    logit threshold (float32), so upsampled pixels between equal neighbours sit on the cut."""
    x = torch.from_numpy(rng.normal(0.0, 2.0, size=shape).astype(np.float32))
    pick = torch.from_numpy(rng.integers(0, 4, size=shape))
    x[pick == 0] = 0.0
    x[pick == 1] = float(np.float32(logit_threshold(threshold)))
    return x


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.75])
@pytest.mark.parametrize("shots", [1, 3])
def test_score_batch_equals_score_episode_on_every_protocol(threshold, shots):
    rng = np.random.default_rng(int(threshold * 100) + shots)
    s = 24
    evaluations = [None, Evaluation(), Evaluation("resized", 40, True), Evaluation("resized", 40, False)]
    # target sizes repeat (one interpolate per distinct size) and differ (several groups)
    sizes = [(37, 50), (50, 37), (37, 50), (24, 24), (61, 45), (37, 50)]
    for ev in evaluations:
        targets = []
        for h, w in sizes:
            raw = _target(rng, h, w, ignore=True)
            targets.append(raw if ev is None else scored_target(raw, ev))
        shape = (len(sizes), shots, s, s) if shots > 1 else (len(sizes), s, s)
        logits = _logits(rng, shape, threshold)
        got = score_batch(logits, [ScoredTarget.of(t) for t in targets], threshold)
        for b, t in enumerate(targets):
            row = score_episode(logits[b : b + 1], _data(t, b), threshold)
            assert got[b].tolist() == [row["I_bg"], row["U_bg"], row["I_fg"], row["U_fg"]], (ev, b)


def test_score_batch_counts_by_hand():
    # 2 x 2 logits already at the target size: align_corners keeps the values
    logits = torch.tensor([[[1.0, -1.0], [0.0, 2.0]]])
    target = np.array([[1, 1], [0, 255]], dtype=np.uint8)  # pred fg at (0,0), (1,0) (tie), (1,1)
    # fg: I = 1 ((0,0)), U = 2 fg pixels + 1 predicted bg pixel ((1,0)) = 3; the ignore pixel counts nowhere
    # bg: I = 0, U = 1 bg pixel + 1 fg pixel predicted bg ((0,1)) = 2
    assert score_batch(logits, [ScoredTarget.of(target)]).tolist() == [[0, 2, 1, 3]]
    assert intersection_union(logits[0] >= 0, target) == (0, 2, 1, 3)


def test_voting_ties_and_an_empty_vote():
    # K = 2 shots on a 1 x 4 target: one shot votes for pixel 0 only, the other for nothing
    logits = torch.full((1, 2, 1, 4), -1.0)
    logits[0, 0, 0, 0] = 0.0  # exactly 0: foreground
    target = np.array([[1, 0, 0, 1]], dtype=np.uint8)
    row = score_episode(logits, _data(target))
    assert score_batch(logits, [ScoredTarget.of(target)]).tolist() == [
        [row["I_bg"], row["U_bg"], row["I_fg"], row["U_fg"]]
    ]
    assert (row["I_fg"], row["U_fg"]) == (1, 2)
    none = torch.full((1, 2, 1, 4), -1.0)  # no vote at all: max vote clamps to 1, nothing is foreground
    assert score_batch(none, [ScoredTarget.of(target)]).tolist() == [[2, 4, 0, 2]]


def test_bytes_lru_stays_within_its_budget_and_keeps_the_recent():
    lru = BytesLRU(max_bytes=3 * (1000 + 100))
    made = []
    for i in range(10):
        lru.get_or_make(i, lambda i=i: made.append(i) or np.zeros(1000, dtype=np.uint8))
        assert lru.used <= lru.max_bytes
    assert len(lru) == 3 and sorted(k for k in range(10) if k in lru) == [7, 8, 9]
    lru.get_or_make(7, lambda: pytest.fail("recomputed"))  # 7 is now the most recent
    lru.get_or_make(10, lambda: np.zeros(1000, dtype=np.uint8))
    assert [k for k in range(11) if k in lru] == [7, 9, 10]
    big = lru.get_or_make("big", lambda: np.zeros(10_000, dtype=np.uint8))  # over the budget: not kept
    assert big.shape == (10_000,) and "big" not in lru and lru.used <= lru.max_bytes
    assert not lru.get_or_make(7, lambda: None).flags.writeable  # cached arrays are read-only


def _manifest(pascal_root, tmp_path, shots: int, protocol: str = "fssam", episodes: int = 8):
    m = build_manifest(get_protocol(protocol), ManifestRequest(pascal_root, 0, shots, episodes=episodes))
    path = tmp_path / f"{protocol}-{shots}.json"
    save_manifest(m, path)
    return m, path


def test_the_second_cell_of_a_manifest_decodes_no_label(pascal_root, tmp_path, monkeypatch):
    decoded = []

    def counting_read_label(path):
        decoded.append(path)
        return read_label(path)

    monkeypatch.setattr(loader_module, "read_label", counting_read_label)
    clear_shared()
    m, path = _manifest(pascal_root, tmp_path, 2)
    labels = {m.images[i][1] for e in m.episodes for i in (e.query, *e.supports)}
    settings = get_method("mean_colour").resolve({"image_size": 32})
    first = evaluate_cell(CellSpec("mean_colour", settings, path, pascal_root, "cpu"), FeatureCache(None))
    assert len(decoded) == len(labels)  # each label once, however many episodes use it
    fg = get_method("all_foreground").resolve({"image_size": 32})
    evaluate_cell(CellSpec("all_foreground", fg, path, pascal_root, "cpu"), FeatureCache(None))
    again = evaluate_cell(CellSpec("mean_colour", settings, path, pascal_root, "cpu"), FeatureCache(None))
    assert len(decoded) == len(labels)  # the later cells decoded none
    assert again.table.equals(first.table)


def test_an_image_is_decoded_once_per_process_for_an_uncached_encoder(pascal_root, tmp_path, monkeypatch):
    # mean_colour's rgb encoder is never cached on disk: its images come from the decoded-image cache
    decoded = []
    real = loader_module.ImageStore._decode
    monkeypatch.setattr(
        loader_module.ImageStore, "_decode", lambda self, rel: decoded.append(rel) or real(self, rel)
    )
    clear_shared()
    m, path = _manifest(pascal_root, tmp_path, 2)
    images = {m.images[i][0] for e in m.episodes for i in (e.query, *e.supports)}
    first = None
    for size in (32, 40, 32):  # a second image size re-resizes, but decodes nothing again
        settings = get_method("mean_colour").resolve({"image_size": size})
        result = evaluate_cell(
            CellSpec("mean_colour", settings, path, pascal_root, "cpu"), FeatureCache(None)
        )
        assert sorted(decoded) == sorted(images)  # each image once, however many episodes and cells use it
        first = result.table if first is None else first
    assert result.table.equals(first)
    store = shared_store(pascal_root)
    assert not store.image(sorted(images)[0]).flags.writeable  # shared: read-only


def test_a_label_changed_on_disk_is_read_again(pascal_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(pascal_root, root, symlinks=True)
    store = shared_store(root)
    rel = sorted(p.relative_to(root).as_posix() for p in (root / "SegmentationClassAug").glob("*.png"))[0]
    before = store.label(rel)
    changed = np.zeros_like(before)
    Image.fromarray(changed, mode="L").save(root / rel)

    os.utime(root / rel, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    assert (shared_store(root).label(rel) == 0).all()


def _old_loop(method_name: str, settings: dict, m, pascal_root) -> list[list[int]]:
    """The per-episode loop written out from the spec: read labels and images, resize, predict with
    the reference function, score with score_episode (no store, no cache, no batching)."""
    from baselines import trivial
    from benchmark.data.prepared import PreparedDataset
    from benchmark.evaluation.loader import ImageStore, resize_image, resize_label

    ds = PreparedDataset(pascal_root)
    size = settings["image_size"]
    rows = []
    for ep in m.episodes:
        label = read_label(pascal_root / m.images[ep.query][1])
        target = episode_target(label, ep.cls)
        masks = torch.stack(
            [
                resize_label(episode_target(read_label(pascal_root / m.images[s][1]), ep.cls), size)
                for s in ep.supports
            ]
        )[None]
        images = [ImageStore(ds).image(m.images[i][0]) for i in (ep.query, *ep.supports)]
        pix = torch.stack([resize_image(im, size) for im in images])
        logits = getattr(trivial, method_name)(pix[:1], pix[None, 1:], masks)
        data = _data(scored_target(target, m.evaluation), ep.id)
        data.episode = ep
        row = score_episode(logits, data, settings.get("threshold", 0.5))
        rows.append([row["episode"], row["class"], row["I_bg"], row["U_bg"], row["I_fg"], row["U_fg"]])
    return rows


@pytest.mark.parametrize("protocol", ["fssam", "hsnet"])
def test_reference_tables_equal_the_per_episode_loop(pascal_root, tmp_path, protocol):
    for shots, batch in ((1, 1), (3, 4)):  # one episode per forward, and a batch of mixed label sizes
        m, path = _manifest(pascal_root, tmp_path, shots, protocol, episodes=6)
        for name in ("all_foreground", "mean_colour"):
            settings = get_method(name).resolve({"image_size": 48, "threshold": 0.4})
            spec = CellSpec(name, settings, path, pascal_root, "cpu", batch_size=batch)
            table = evaluate_cell(spec, FeatureCache(None)).table
            assert table.to_numpy().tolist() == _old_loop(name, settings, m, pascal_root), (name, shots)


def test_all_foreground_has_no_encoder_and_decodes_no_image_or_mask(pascal_root, tmp_path, monkeypatch):
    method = build_method("all_foreground", get_method("all_foreground").resolve({}), torch.device("cpu"))
    assert dict(method.encoders) == {}
    monkeypatch.setattr(loader_module.ImageStore, "image", lambda self, rel: pytest.fail(f"decoded {rel}"))
    # it reads only the masks' shape: no mask at model size is made for it either
    monkeypatch.setattr(loader_module.ImageStore, "mask", lambda self, *a: pytest.fail(f"mask {a}"))
    _, path = _manifest(pascal_root, tmp_path, 2)
    spec = CellSpec(
        "all_foreground", get_method("all_foreground").resolve({"image_size": 40}), path, pascal_root, "cpu"
    )
    result = evaluate_cell(spec, FeatureCache(None))
    assert result.encoder_passes == {} and len(result.table) == 8
    # every pixel foreground: the union of fg is every non-ignore pixel, I_bg is 0
    assert (result.table["I_bg"] == 0).all() and (result.table["U_fg"] >= result.table["I_fg"]).all()


def test_predicted_masks_interpolate_per_size_like_one_at_a_time():
    # the batched interpolate gives each episode the values it gets alone (the premise of grouping)
    x = torch.randn(5, 16, 16)
    batched = F.interpolate(x[:, None], size=(23, 31), mode="bilinear", align_corners=True)
    for i in range(5):
        alone = F.interpolate(x[i][None, None], size=(23, 31), mode="bilinear", align_corners=True)
        assert torch.equal(batched[i], alone[0])


def test_the_label_cache_budget_comes_from_the_environment(monkeypatch):
    import pytest

    from benchmark.errors import FssBenchError
    from benchmark.evaluation.label_cache import LABEL_CACHE_BYTES, label_cache_bytes

    monkeypatch.delenv("FSSBENCH_LABEL_CACHE_GB", raising=False)
    assert label_cache_bytes() == LABEL_CACHE_BYTES == 512 * 2**20
    monkeypatch.setenv("FSSBENCH_LABEL_CACHE_GB", "1.5")
    assert label_cache_bytes() == 3 * 2**29
    monkeypatch.setenv("FSSBENCH_LABEL_CACHE_GB", "0")
    assert label_cache_bytes() == 0
    for bad in ("-1", "lots", "nan"):
        monkeypatch.setenv("FSSBENCH_LABEL_CACHE_GB", bad)
        with pytest.raises(FssBenchError, match="FSSBENCH_LABEL_CACHE_GB"):
            label_cache_bytes()
    from benchmark.evaluation.label_cache import IMAGE_CACHE_BYTES, image_cache_bytes

    monkeypatch.delenv("FSSBENCH_IMAGE_CACHE_GB", raising=False)
    assert image_cache_bytes() == IMAGE_CACHE_BYTES == 512 * 2**20
    monkeypatch.setenv("FSSBENCH_IMAGE_CACHE_GB", "0.25")
    assert image_cache_bytes() == 2**28
    monkeypatch.setenv("FSSBENCH_IMAGE_CACHE_GB", "many")
    with pytest.raises(FssBenchError, match="FSSBENCH_IMAGE_CACHE_GB='many'"):
        image_cache_bytes()


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (37, 50), (64, 64)])  # sizes that leave padding bits
def test_packed_targets_and_masks_give_back_the_arrays(shape):
    from benchmark.evaluation.label_cache import nbytes
    from benchmark.evaluation.loader import PackedMask

    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    for values in ([0, 1, 255], [0, 1], [255], [1]):
        t = rng.choice(values, size=shape).astype(np.uint8)
        scored = ScoredTarget.of(t)
        assert np.array_equal(scored.target(), t) and scored.target().dtype == np.uint8
        assert (scored.n_fg, scored.n_bg) == (int((t == 1).sum()), int((t == 0).sum()))
        packed = PackedMask.of(t)
        assert np.array_equal(packed.unpack(), t) and packed.unpack().flags.writeable
        assert (packed.ignore is None) == (not (t == 255).any())
        plane = -(-t.size // 8)  # a bit per pixel and plane, against a byte per pixel
        assert nbytes(scored.fg_bits) == nbytes(scored.bg_bits) == plane + 100 == nbytes(packed.fg)
    with pytest.raises(ValueError, match="0, 1 and 255"):
        PackedMask.of(np.full((2, 2), 7, dtype=np.uint8))


def test_packed_counts_equal_boolean_counts():
    from benchmark.evaluation.scoring import count_row

    rng = np.random.default_rng(5)
    for shape in [(3, 3), (13, 7), (40, 41)]:
        t = rng.choice([0, 1, 255], size=shape).astype(np.uint8)
        pred = rng.random(shape) < 0.5
        fg, bg = t == 1, t == 0
        expected = (
            int(bg.sum() - (pred & bg).sum()),
            int(bg.sum() + fg.sum() - (pred & fg).sum()),
            int((pred & fg).sum()),
            int(fg.sum() + (pred & bg).sum()),
        )
        assert count_row(pred, ScoredTarget.of(t)) == expected
        assert count_row(pred, ScoredTarget.of(t)) == intersection_union(
            torch.from_numpy(pred), torch.from_numpy(t)
        )


@pytest.mark.parametrize("shots", [1, 3])
def test_the_device_path_counts_as_the_cpu_path(shots):
    # the torch path a GPU takes (upsample, vote and count where the logits are), run here on the
    # CPU: equal to the numpy path, ties at the cut included
    rng = np.random.default_rng(11 + shots)
    sizes = [(37, 50), (50, 37), (37, 50), (9, 13)]
    targets = [ScoredTarget.of(_target(rng, h, w, ignore=True)) for h, w in sizes]
    shape = (len(sizes), shots, 24, 24) if shots > 1 else (len(sizes), 24, 24)
    for threshold in (0.5, 0.3):
        logits = _logits(rng, shape, threshold)
        on_cpu = score_batch(logits, targets, threshold)
        assert score_batch(logits, targets, threshold, on_device=True).tolist() == on_cpu.tolist()


def test_random_eviction_keeps_hits_where_an_lru_over_a_cyclic_scan_has_none():
    # cells read the same images in the same order one after another: 20 entries, room for 10
    def passes(lru: BytesLRU) -> int:
        made = []
        for _ in range(3):
            for i in range(20):
                lru.get_or_make(i, lambda i=i: made.append(i) or np.zeros(1000, dtype=np.uint8))
                assert lru.used <= lru.max_bytes
        return 60 - len(made)  # hits

    budget = 10 * (1000 + 100)
    assert passes(BytesLRU(budget)) == 0  # every entry evicted just before it is needed again
    hits = passes(BytesLRU(budget, evict="random"))
    assert 5 <= hits <= 30  # about budget / working set of the 40 later reads
    with pytest.raises(ValueError, match="evict"):
        BytesLRU(budget, evict="newest")
