"""The typed manifest and the protocol registry: files and hashes as before, protocols by name."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings

import pytest

import benchmark.episodes.registry as registry
from benchmark.episodes import get_protocol, protocol_names, register_protocol
from benchmark.episodes.manifest import Episode, Manifest, load_manifest, save_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest, manifest_file_name
from benchmark.episodes.registry import DrawInput, Drawn, Protocol
from benchmark.errors import FssBenchError
from benchmark.io_utils import canonical_json

# (root, fold, shot, protocol, its options, the request) -> the sha256 the manifest had when
# build_manifest returned an untyped dict (main at 2c81871, before this module existed), on the
# session's synthetic roots: the typed manifest must write the same files, so keep the same cell keys.
TODAY = {
    "pascal-fssam": ("pascal", 0, 1, "fssam", {}, {"seed": 321, "episodes": 20}),
    "pascal-fssam-5shot": ("pascal", 2, 5, "fssam", {}, {"episodes": 15, "seed": 7}),
    "pascal-exact-w2": ("pascal", 1, 5, "fssam-exact", {"loader_workers": 2}, {"episodes": 40}),
    "pascal-exact-w0": ("pascal", 0, 1, "fssam-exact", {"loader_workers": 0}, {"episodes": 25}),
    "pascal-hsnet": ("pascal", 0, 2, "hsnet", {}, {"episodes": 30}),
    "pascal-hsnet-96": ("pascal", 0, 1, "hsnet", {}, {"episodes": 4, "eval_size": 96}),
    "pascal-hsnet-original": ("pascal", 3, 1, "hsnet", {}, {"episodes": 10, "resolution": "original"}),
    "pascal-val": ("pascal", 0, 1, "fssam", {}, {"episodes": 20, "kind": "val"}),
    "pascal-val-holdout": (
        "pascal",
        1,
        1,
        "fssam",
        {},
        {"episodes": 10, "kind": "val", "val_source": "train-holdout", "holdout_fraction": 0.3},
    ),
    "pascal-hsnet-val": ("pascal", 0, 1, "hsnet", {}, {"episodes": 12, "kind": "val"}),
    "coco-exact-w4": ("coco", 2, 1, "fssam-exact", {"loader_workers": 4}, {"episodes": 30}),
    "coco-hsnet": ("coco", 0, 1, "hsnet", {}, {"episodes": 20}),
    "coco-fssam-resized": (
        "coco",
        0,
        1,
        "fssam",
        {},
        {"episodes": 10, "resolution": "resized", "eval_size": 200},
    ),
    "coco-fssam-split": ("coco", 1, 1, "fssam", {}, {"episodes": 10, "coco_split": "contiguous"}),
    "coco-val": ("coco", 0, 1, "fssam", {}, {"episodes": 8, "kind": "val"}),
}
TODAY_SHA256 = {
    "pascal-fssam": "7baf8413189735c0e91ee29fd3833651acf77d314a847890c6ec5308c5441372",
    "pascal-fssam-5shot": "1c2f9687a39378edfc2fd47d32883a50d77c383f20ab7eec38b5ff4f644e9e5d",
    "pascal-exact-w2": "1be2886025db4acd3ee3c7b7509cb96fe680e02b41aec1c93525dc21d583980a",
    "pascal-exact-w0": "b7ad029a4dc226b6668a21e93f092c93d698d7eae06ea20e8ab5ccda3e217482",
    "pascal-hsnet": "bc4a210e84b6a7c4c5ba177a80e048bec03381e26656b81b50a3a8bf9597ad9d",
    "pascal-hsnet-96": "b4c4da5bbf1398ffddde146139c735998783d5bcd96c041c62f360d4a8b0aeaf",
    "pascal-hsnet-original": "a829962f3d57c4b5cd64ae66b7c742aa6f53545b9912845b24687459589bd43a",
    "pascal-val": "689a9a6143f9c109c4891533c7af1b178ff500a90151cb905b3ffa530b3e78e2",
    "pascal-val-holdout": "8f1e912f2b2ee2222dd408989ca61a99c2604daa9b41d83971ffa593864535c2",
    "pascal-hsnet-val": "ca39889e19af58c632d57759776c6f6bac4ccd0a4b0606f4806532371472c657",
    "coco-exact-w4": "8af633cf5c55309ee2840f6c61bd73ae78459703b78c35b7831ebc22df9e82a9",
    "coco-hsnet": "23b11e6f96ad1bfd0d50f3fe465e3c3bc8f6f3db2ccf79395f9fb1a2ea58cd5b",
    "coco-fssam-resized": "3aaa405a31ce4e8fe027752474543f67347c211ffba09ff8474b02bce56d1e82",
    "coco-fssam-split": "8eb98ff080ec63a629bac899ff41488275dc1fc83c738e1546c8d5f51676c68c",
    "coco-val": "44d4a52659223d3ab7c408d2efc2e9599ff3c27f315e0b7d98eced72aab3640e",
}


@pytest.mark.parametrize("case", sorted(TODAY))
def test_manifests_keep_todays_hash_and_round_trip_byte_identically(case, pascal_root, coco_root, tmp_path):
    dataset, fold, shot, name, options, request = TODAY[case]
    root = {"pascal": pascal_root, "coco": coco_root}[dataset]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # val pools leave classes out on the synthetic roots
        m = build_manifest(
            get_protocol(name).configure(options), ManifestRequest(root, fold, shot, **request)
        )
    assert m.sha256 == TODAY_SHA256[case] == m.computed_sha256()
    save_manifest(m, tmp_path / "m.json")
    raw = (tmp_path / "m.json").read_bytes()
    assert (
        hashlib.sha256(canonical_json(json.loads(raw)).encode()).hexdigest()
        == hashlib.sha256(raw).hexdigest()
    )
    again = load_manifest(tmp_path / "m.json")
    assert again == m and canonical_json(again.to_dict()).encode() == raw  # byte-identical round trip
    save_manifest(again, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == raw


def test_unknown_fields_are_kept_and_incomplete_files_are_one_line_errors(pascal_root, tmp_path):
    m = build_manifest(get_protocol("fssam"), ManifestRequest(pascal_root, 0, 1, episodes=3))
    raw = {**m.to_dict(), "note": {"by": "a later version"}}
    raw.pop("sha256")
    raw["sha256"] = Manifest.from_dict(raw).computed_sha256()
    (tmp_path / "later.json").write_text(canonical_json(raw))
    later = load_manifest(tmp_path / "later.json")
    assert later.extra == {"note": {"by": "a later version"}} and later.to_dict() == raw
    body = m.to_dict()
    del body["episodes"], body["sha256"]
    body["sha256"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    (tmp_path / "short.json").write_text(canonical_json(body))
    with pytest.raises(FssBenchError, match="not a complete manifest"):
        load_manifest(tmp_path / "short.json")


def test_typed_fields_read_what_the_file_holds(pascal_root):
    m = build_manifest(get_protocol("hsnet"), ManifestRequest(pascal_root, 0, 2, episodes=5))
    raw = m.to_dict()
    assert (m.dataset, m.fold, m.shot, m.protocol, m.seed, m.num_episodes) == ("pascal", 0, 2, "hsnet", 0, 5)
    assert list(m.classes) == raw["classes"] and m.draw == raw["draw"]
    assert [e.to_dict() for e in m.episodes] == raw["episodes"]
    assert all(isinstance(e, Episode) and len(e.supports) == 2 for e in m.episodes)
    assert m.evaluation.to_json() == raw["eval"] and m.source.split == raw["source"]["split"] == "val"


def test_unknown_protocols_name_the_known_ones(pascal_root):
    assert protocol_names() == ["fssam", "fssam-exact", "hsnet"]
    with pytest.raises(
        FssBenchError, match=r"unknown protocol 'hsnett'; expected one of \['fssam', 'fssam-exact', 'hsnet'\]"
    ):
        get_protocol("hsnett")
    with pytest.raises(FssBenchError, match="loader_workers: applies to another protocol"):
        get_protocol("fssam").configure({"loader_workers": 4})
    with pytest.raises(FssBenchError, match="--lists must be one of"):
        get_protocol("fssam-exact").configure({"lists": "theirs"})


def test_options_and_names_come_from_the_protocol(pascal_root):
    exact = get_protocol("fssam-exact").configure({"loader_workers": 3, "lists": "own"})
    assert (exact.draw_workers, exact.lists, exact.file_tail()) == (3, "own", "-w3-own")
    assert get_protocol("fssam-exact").draw_workers == 32  # the registered defaults are untouched
    m = build_manifest(exact, ManifestRequest(pascal_root, 0, 1, episodes=5))
    assert m.draw["loader_workers"] == 3  # the file's key, as before
    assert manifest_file_name(exact, m) == "pascal-fold0-1shot-fssam-exact-seed321-n5-w3-own"
    h = get_protocol("hsnet")
    m = build_manifest(h, ManifestRequest(pascal_root, 0, 1, episodes=5, kind="val"))
    assert manifest_file_name(h, m) == "pascal-fold0-1shot-hsnet-seed0-n5-val-resized400"
    with pytest.raises(FssBenchError, match="protocol fssam-exact reproduces the authors' test episodes"):
        get_protocol("fssam-exact").check_request("val", "pascal")


@dataclasses.dataclass(frozen=True)
class Reversed(Protocol):
    """A toy protocol: fssam's episodes in reverse order, with an option that sets the tail."""

    name = "reversed"
    description = "fssam's episodes, last first"
    default_seed = 5
    default_episodes = 6
    user_options = {"tag": "tag"}
    tag: str = "r"

    def file_tail(self) -> str:
        return f"-{self.tag}"

    def draw(self, request: DrawInput) -> Drawn:
        eps = get_protocol("fssam").draw(request).episodes
        return Drawn([dataclasses.replace(e, id=i) for i, e in enumerate(reversed(eps))], {"tag": self.tag})


def test_a_registered_protocol_is_used_by_a_study(pascal_root, tmp_path, monkeypatch):
    from benchmark.plan import study_manifests
    from benchmark.specs.study import load_study

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # unregistered afterwards
    register_protocol(Reversed())
    with pytest.raises(ValueError, match="already registered"):
        register_protocol(Reversed(tag="other"))
    study_file = tmp_path / "s.yaml"
    study_file.write_text(
        f"name: s\ndata: {{pascal: {pascal_root}}}\nprotocol: reversed\nfolds: [2]\n"
        "model: {random_init: true}\nvariants: {mean: {method: mean_colour}}\n"
    )
    study = load_study(study_file)
    (path,) = study_manifests(study, tmp_path / "work").values()
    assert path.name == "pascal-fold2-1shot-reversed-seed5-n6-r.json"  # its defaults and its tail
    m = load_manifest(path)
    fssam = build_manifest(get_protocol("fssam"), ManifestRequest(pascal_root, 2, 1, seed=5, episodes=6))
    assert [(e.query, e.cls, e.supports) for e in m.episodes] == [
        (e.query, e.cls, e.supports) for e in reversed(fssam.episodes)
    ]
    assert (
        m.protocol == "reversed" and m.draw == {"tag": "r"} and [e.id for e in m.episodes] == list(range(6))
    )
    with pytest.raises(
        FssBenchError,
        match=r"protocol: 'reversd' is not one of \['fssam', 'fssam-exact', 'hsnet', 'reversed'\]",
    ):
        load_study(study_file, ["protocol=reversd"])
