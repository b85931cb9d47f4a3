"""``fssam-exact``: the FSSAM release's test episodes, checked against PyTorch's own DataLoader.

The reference here is a dataset written from ../shared/docs/authors-episodes.md the way the release
writes ``SemData.__getitem__`` (Python's global ``random``, the discarded first draw, supports stacked
in reverse), iterated by a real ``torch.utils.data.DataLoader`` with 0 or several workers, one new
iterator per epoch after ``random.seed``/``torch.manual_seed``. ``authors_draw`` uses no DataLoader, so
agreement checks the description of the workers' streams, not a copy of the code.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data.classes import novel_classes
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes import get_protocol
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.episodes.protocols.fssam_exact import AUTHORS_LISTS, authors_draw, read_pfenet_lists
from benchmark.errors import FssBenchError

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


class ReleaseLikeSemData(torch.utils.data.Dataset):
    """Val-mode ``SemData`` as the description states it, returning indices instead of images."""

    def __init__(self, data_list, sub_class_file_list, label_class_of, shot):
        self.data_list, self.sub, self.label_class_of, self.shot = (
            data_list,
            sub_class_file_list,
            label_class_of,
            shot,
        )

    def __len__(self):
        return len(self.data_list)

    def __getitem__(self, index):
        image_path, label_path = self.data_list[index]
        label_class = self.label_class_of[(image_path, label_path)]
        class_chosen = label_class[random.randint(1, len(label_class)) - 1]
        file_class_chosen = self.sub[class_chosen]
        num_file = len(file_class_chosen)
        support_image_path_list, support_idx_list = [], []
        for _ in range(self.shot):
            support_idx = random.randint(1, num_file) - 1
            support_image_path, support_label_path = image_path, label_path
            while (
                support_image_path == image_path and support_label_path == label_path
            ) or support_idx in support_idx_list:
                support_idx = random.randint(1, num_file) - 1
                support_image_path, support_label_path = file_class_chosen[support_idx]
            support_idx_list.append(support_idx)
            support_image_path_list.append((support_image_path, support_label_path))
        s_x = [support_image_path_list[0]]
        for i in range(1, self.shot):
            s_x = [support_image_path_list[i], *s_x]  # s_x = cat([s_xs[i], s_x], 1)
        return torch.tensor(index), torch.tensor(class_chosen), [list(p) for p in s_x]


def release_loop(lists, label_class_of, shot, episodes, seed, workers):
    """The release's ``validate``: setup_seed, ceil(N / (L - 1)) epochs, a new iterator each."""
    random.seed(seed)
    torch.manual_seed(seed)
    data = ReleaseLikeSemData(lists.data_list, lists.sub_class_file_list, label_class_of, shot)
    loader = torch.utils.data.DataLoader(data, batch_size=1, shuffle=False, num_workers=workers)
    out = []
    for _ in range(math.ceil(episodes / (len(lists.data_list) - 1))):
        for index, cls, s_x in loader:
            if len(out) == episodes:
                break
            out.append((int(index), int(cls), tuple((p[0][0], p[1][0]) for p in s_x)))
    return out


def label_class(root: Path, pair: tuple[str, str], classes: list[int]) -> list[int]:
    """``SemData``'s ``label_class``, read off the label file: its pixel values, minus 0 and 255, that
    are novel classes of the fold (any pixel counts)."""
    values = np.unique(np.asarray(Image.open(root / pair[1])))
    return sorted(int(v) for v in values if v not in (0, 255) and int(v) in classes)


def own_lists(root: Path, fold: int):
    ds = PreparedDataset(root)
    lists = read_pfenet_lists(root / "lists" / "fss_list" / "val", fold)
    classes = novel_classes(ds.dataset, fold, "interleaved")
    label_class_of = {q: label_class(root, q, classes) for q in lists.data_list}
    return lists, label_class_of


@pytest.mark.parametrize("workers", [0, 3])
@pytest.mark.parametrize("shot", [1, 5])
def test_the_draw_equals_a_real_dataloader_over_the_release_like_dataset(pascal_root, workers, shot):
    lists, label_class_of = own_lists(pascal_root, 0)
    n = 2 * len(lists.data_list) + 7  # three epochs, the last one cut short
    want = release_loop(lists, label_class_of, shot, n, 321, workers)
    got = authors_draw(lists, label_class_of.__getitem__, shot, n, 321, workers)
    assert [(d.index, d.cls, d.supports) for d in got] == want
    assert [d.epoch for d in got] == [i // len(lists.data_list) for i in range(n)]


def test_the_worker_count_changes_the_episodes_and_the_seed_is_honoured(pascal_root):
    lists, label_class_of = own_lists(pascal_root, 0)
    draws = {
        (w, s): [(d.cls, d.supports) for d in authors_draw(lists, label_class_of.__getitem__, 1, 60, s, w)]
        for w in (0, 2, 32)
        for s in (321, 123)
    }
    assert len({tuple(v) for v in draws.values()}) == len(draws)


def test_manifest_records_the_draw_and_the_supports_in_model_order(pascal_root):
    m = build_manifest(
        get_protocol("fssam-exact").configure({"loader_workers": 2}),
        ManifestRequest(pascal_root, 1, 5, episodes=40),
    )
    lists, label_class_of = own_lists(pascal_root, 1)
    want = release_loop(lists, label_class_of, 5, 40, 321, 2)
    assert [(e.index, e.cls, tuple(tuple(m.images[s]) for s in e.supports)) for e in m.episodes] == [
        (i, c, s) for i, c, s in want
    ]
    assert all(tuple(m.images[e.query]) == lists.data_list[e.index] for e in m.episodes)
    assert m.draw == {"seed": 321, "loader_workers": 2, "lists": "own", "lists_sha256": lists.sha256}
    used = {e.query for e in m.episodes} | {s for e in m.episodes for s in e.supports}
    assert set(m.images) == used  # the table holds exactly the images the episodes use
    other = build_manifest(
        get_protocol("fssam-exact").configure({"loader_workers": 3}),
        ManifestRequest(pascal_root, 1, 5, episodes=40),
    )
    assert other.sha256 != m.sha256


def test_coco_own_lists(coco_root):
    m = build_manifest(
        get_protocol("fssam-exact").configure({"loader_workers": 4}),
        ManifestRequest(coco_root, 2, 1, episodes=30),
    )
    classes = novel_classes("coco", 2, "interleaved")
    lists = read_pfenet_lists(coco_root / "lists" / "fss_list" / "val", 2)
    want = release_loop(
        lists, {q: label_class(coco_root, q, classes) for q in lists.data_list}, 1, 30, 321, 4
    )
    assert [(e.index, e.cls) for e in m.episodes] == [(i, c) for i, c, _ in want]


def test_the_authors_lists_ship_and_draw_like_the_release(tmp_path):
    counts = [len(read_pfenet_lists(AUTHORS_LISTS / "pascal" / "val", k).data_list) for k in range(4)]
    assert counts == [364, 445, 592, 336]
    lists = read_pfenet_lists(AUTHORS_LISTS / "pascal" / "val", 0)
    assert set(lists.sub_class_file_list) == {1, 2, 3, 4, 5}
    # stand-in label classes (the real ones need the VOC masks): the classes whose list holds the query
    label_class_of = {
        q: sorted(c for c, files in lists.sub_class_file_list.items() if q in files) for q in lists.data_list
    }
    assert all(label_class_of.values())
    want = release_loop(lists, label_class_of, 5, 50, 321, 4)
    got = authors_draw(lists, label_class_of.__getitem__, 5, 50, 321, 4)
    assert [(d.index, d.cls, d.supports) for d in got] == want


def test_the_authors_lists_on_a_root_without_their_images_name_the_missing_one(pascal_root):
    with pytest.raises(
        FssBenchError, match=r"data_list_0\.txt: .*2007_000033\.jpg is not an image of the val split"
    ):
        build_manifest(
            get_protocol("fssam-exact").configure({"lists": "authors"}), ManifestRequest(pascal_root, 0, 1)
        )
    with pytest.raises(FssBenchError, match="kind test"):
        build_manifest(get_protocol("fssam-exact"), ManifestRequest(pascal_root, 0, 1, kind="val"))


def test_a_study_with_fssam_exact_writes_the_draw_into_its_manifests(pascal_root, tmp_path):
    from benchmark.plan import study_manifests
    from benchmark.specs.study import load_study

    study = tmp_path / "s.yaml"
    study.write_text(
        f"name: s\ndata: {{pascal: {pascal_root}}}\nprotocol: fssam-exact\nloader_workers: 4\nfolds: [0]\n"
        "episodes: 20\nmodel: {random_init: true}\nvariants: {mean: {method: mean_colour}}\n"
    )
    s = load_study(study)
    (path,) = study_manifests(s, tmp_path / "work").values()
    assert path.name == "pascal-fold0-1shot-fssam-exact-seed321-n20-w4-own.json"
    m = build_manifest(
        get_protocol("fssam-exact").configure({"loader_workers": 4}),
        ManifestRequest(pascal_root, 0, 1, episodes=20),
    )
    assert path.read_text().count(m.sha256) == 1
    with pytest.raises(FssBenchError, match="loader_workers: applies to protocol fssam-exact only"):
        load_study(study, ["protocol=fssam"])
    with pytest.raises(FssBenchError, match="lists: 'theirs' is not one of"):
        load_study(study, ["lists=theirs"])


@pytest.mark.parametrize("protocol", ["fssam", "hsnet", "fssam-exact"])
def test_out_of_range_seeds_shots_and_episode_counts_are_one_line_errors(pascal_root, protocol):
    for seed in (-1, 2**32, 2**64):
        with pytest.raises(FssBenchError, match=rf"--seed: seed {seed} is out of range; .*0\.\.4294967295"):
            build_manifest(get_protocol(protocol), ManifestRequest(pascal_root, 0, 1, seed=seed, episodes=4))
    with pytest.raises(FssBenchError, match="--shot must be at least 1, got 0"):
        build_manifest(get_protocol(protocol), ManifestRequest(pascal_root, 0, 0, episodes=4))
    with pytest.raises(FssBenchError, match="--episodes must be at least 1, got 0"):
        build_manifest(get_protocol(protocol), ManifestRequest(pascal_root, 0, 1, episodes=0))
    assert (
        build_manifest(
            get_protocol(protocol), ManifestRequest(pascal_root, 0, 1, seed=2**32 - 1, episodes=2)
        ).seed
        == 2**32 - 1
    )


def test_bam_seeds_reject_a_base_numpy_cannot_take():
    from benchmark.specs.study import bam_seeds

    with pytest.raises(FssBenchError, match="seeds.base: seed -3 is out of range"):
        bam_seeds({"count": 2, "base": -3})


def test_more_loader_workers_than_queries_draw_as_many_streams_as_queries(pascal_root):
    # item i goes to worker i % W: with W >= L every item has a worker of its own, whatever W is
    lists, label_class_of = own_lists(pascal_root, 0)
    L = len(lists.data_list)
    draw = {w: authors_draw(lists, label_class_of.__getitem__, 1, 3 * L, 321, w) for w in (L, 10**6)}
    assert [(d.cls, d.supports) for d in draw[L]] == [(d.cls, d.supports) for d in draw[10**6]]


def test_malformed_lists_are_errors_naming_the_file(pascal_root, tmp_path):
    src = pascal_root / "lists" / "fss_list" / "val"
    for name in ("data_list_0.txt", "sub_class_file_list_0.txt"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    lists = read_pfenet_lists(tmp_path, 0)
    (query, label_classes) = next(iter(own_lists(pascal_root, 0)[1].items()))
    missing = dict(lists.sub_class_file_list)
    for c in label_classes:
        del missing[c]
    broken = dataclasses.replace(lists, sub_class_file_list=missing)
    with pytest.raises(
        FssBenchError, match=r"data_list_0\.txt: query .* holds class \d+, which the class list"
    ):
        authors_draw(broken, lambda q: label_classes, 1, 3, 321, 0)
    (tmp_path / "sub_class_file_list_0.txt").write_bytes(b"\xff\xfe{1: []}")
    with pytest.raises(FssBenchError, match=r"sub_class_file_list_0\.txt: not UTF-8 text"):
        read_pfenet_lists(tmp_path, 0)


def test_studies_and_searches_refuse_what_fssam_exact_cannot_draw_before_any_work(
    pascal_root, coco_root, tmp_path
):
    from benchmark.specs.search import parse_search
    from benchmark.specs.study import load_study

    study = tmp_path / "s.yaml"
    study.write_text(
        f"name: s\ndata: {{pascal: {pascal_root}, coco: {coco_root}}}\nprotocol: fssam-exact\n"
        "lists: authors\nfolds: [0]\nmodel: {random_init: true}\nvariants: {mean: {method: mean_colour}}\n"
    )
    with pytest.raises(
        FssBenchError, match=r"s\.yaml: lists: authors: .* also runs \['coco'\]; use lists: own"
    ):
        load_study(study)
    base = {
        "name": "s",
        "study": {
            "name": "s",
            "data": {"pascal": str(pascal_root)},
            "protocol": "fssam-exact",
            "folds": [0],
            "model": {"random_init": True},
            "variants": {"mean": {"method": "mean_colour"}},
        },
        "space": {"threshold": {"type": "float", "low": 0.1, "high": 0.9}},
        "trials": 1,
    }
    with pytest.raises(FssBenchError, match="q.yaml: kind: val with protocol fssam-exact"):
        parse_search(base, source="q.yaml")
    assert parse_search({**base, "kind": "test"}, source="q.yaml").kind == "test"
