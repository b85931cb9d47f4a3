"""The report's Episodes view (reports/explorer.py, explorer_page.py, explorer.js) on a tiny real
study of model-free variants: its data against the cells' own artifacts, and the page driven in
headless Chromium over the DevTools pipe (tests/cdp.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from pycocotools import mask as mask_utils

from benchmark.cli import main
from benchmark.data.classes import class_names
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes.manifest import load_manifest
from benchmark.evaluation.loader import ImageStore
from benchmark.evaluation.predictions import rle_to_mask
from benchmark.jobs.run import StudyRunner
from benchmark.specs.study import load_study

VARIANTS = {
    "colour": {"method": "mean_colour", "image_size": 64},
    "colour-32": {"method": "mean_colour", "image_size": 32},
    "all-fg": {"method": "all_foreground"},
}
NO_PREDICTIONS = ("all-fg", 1, 2)  # (variant, fold, shot): its predictions.parquet is removed


@pytest.fixture(scope="module", autouse=True)
def _restore_tracking_env():
    """MLflow's ``set_tracking_uri`` (the Tracker calls it) also sets ``MLFLOW_TRACKING_URI`` in
    ``os.environ``; put it back after this module, so that later tests (the demo reads it) are
    not sent to this module's stores."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="module")
def study(pascal_root, tmp_path_factory):
    """A finished study (2 folds x 2 shots x 3 variants, 6 episodes), one run's predictions
    removed, the full report and the episodes-only page built; and every run's artifacts read
    back independently of the report code."""
    tmp = tmp_path_factory.mktemp("explorer")
    spec = {
        "name": "explore",
        "data": {"pascal": str(pascal_root)},
        "folds": [0, 1],
        "shots": [1, 2],
        "seeds": [321],
        "episodes": 6,
        "variants": VARIANTS,
    }
    (tmp / "s.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    StudyRunner(load_study(tmp / "s.yaml"), tracking_uri=uri, work_dir=tmp / "w", progress=False).run()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("explore")
    cells = {}
    for r in client.search_runs([exp.experiment_id], filter_string="tags.`fss.kind` = 'cell'"):
        t = r.data.tags
        key = (t["fss.variant"], int(t["fss.fold"]), int(t["fss.shot"]))
        dl = tmp / "dl" / r.info.run_id
        episodes = pd.read_parquet(client.download_artifacts(r.info.run_id, "episodes.parquet", str(dl)))
        preds = pd.read_parquet(client.download_artifacts(r.info.run_id, "predictions.parquet", str(dl)))
        manifest = load_manifest(Path(client.download_artifacts(r.info.run_id, "manifest.json", str(dl))))
        cells[key] = {"episodes": episodes, "predictions": preds, "manifest": manifest}
        if key == NO_PREDICTIONS:  # as a run made before predictions were stored
            Path(urlparse(r.info.artifact_uri).path, "predictions.parquet").unlink()
    out = tmp / "out"
    args = ["-q", "report", "--experiment", "explore", "--tracking-uri", uri, "--out", str(out)]
    assert main([*args, "--no-qualitative", "--no-log"]) == 0
    assert main([*args, "--episodes-only", "--out", str(tmp / "only")]) == 0
    return {
        "out": out,
        "only": tmp / "only" / "episodes.html",
        "cells": cells,
        "root": pascal_root,
        "uri": uri,
    }


def _payload(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="ep-data">(.*?)</script>', html, re.DOTALL)
    assert m is not None
    return json.loads(m.group(1))


def _rle(entry: list) -> np.ndarray:
    h, w, counts = entry
    return rle_to_mask({"size": [h, w], "counts": counts})


# ------------------------------------------------------------------------------------------- data


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_every_episode_with_its_cells_iou_and_stored_prediction(study):
    html = study["out"].joinpath("report.html").read_text(encoding="utf-8")
    data = _payload(html)
    assert sorted(data["variants"]) == sorted(VARIANTS)  # in the study's run order
    assert len(data["episodes"]) == 2 * 2 * 6  # every episode of the 4 manifests, once
    names = class_names("pascal")
    assert data["classes"]["pascal"] == list(names)
    seen = set()
    for row in data["episodes"]:
        ds, fold, shot, seed, protocol = data["groups"][row[0]]
        assert (ds, seed, protocol) == ("pascal", 321, "fssam")
        seen.add((fold, shot, row[1]))
        for v, name in enumerate(data["variants"]):
            cell = study["cells"][(name, fold, shot)]
            ep = next(e for e in cell["manifest"].episodes if e.id == row[1])
            assert (row[2], row[3], row[4]) == (ep.cls, ep.query, list(ep.supports))
            t = cell["episodes"].set_index("episode").loc[row[1]]
            assert row[9][v] == pytest.approx(t["I_fg"] / t["U_fg"], abs=1e-12)
            if (name, fold, shot) == NO_PREDICTIONS:
                assert row[10][v] is None
            else:
                p = cell["predictions"].set_index("episode").loc[row[1]]
                assert row[10][v] == [int(p["height"]), int(p["width"]), p["counts"]]
                # the ground truth is aligned with the prediction: their overlap is the cell's I_fg
                assert int((_rle(data["masks"][row[7]]) & _rle(row[10][v])).sum()) == int(t["I_fg"])
    assert len(seen) == 24
    # the run without stored predictions is named in a note (page and report notes)
    assert "all-fg (pascal fold 1 2-shot)" in html
    assert "no overlay" in html


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_ground_truth_and_thumbnails(study):
    data = _payload(study["out"].joinpath("report.html").read_text(encoding="utf-8"))
    store = ImageStore(PreparedDataset(study["root"]))
    assert len(data["thumbs"]) == len(set(data["thumbs"]))  # each distinct image once
    used = set()
    for row in data["episodes"][::5]:
        _, fold, shot, _, _ = data["groups"][row[0]]
        manifest = study["cells"][("colour", fold, shot)]["manifest"]
        img, lab = manifest.images[row[3]]
        # the query's ground truth at the scored size: the label's size, 1 = foreground
        want = np.asarray(Image.open(study["root"] / lab)) == row[2]
        np.testing.assert_array_equal(_rle(data["masks"][row[7]]), want)
        for sid, m in zip(row[4], row[8], strict=True):
            want = np.asarray(Image.open(study["root"] / manifest.images[sid][1])) == row[2]
            np.testing.assert_array_equal(_rle(data["masks"][m]), want)
        used.add(row[5])
        uri = data["thumbs"][row[5]]
        assert uri.startswith("data:image/jpeg;base64,")
        from base64 import b64decode
        from io import BytesIO

        thumb = Image.open(BytesIO(b64decode(uri.split(",", 1)[1])))
        h, w = store.image(img).shape[:2]
        assert max(thumb.size) == min(192, max(h, w))
        assert abs(thumb.size[0] / thumb.size[1] - w / h) < 0.05
    assert used


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_page_is_self_contained(study):
    for path in (study["out"] / "report.html", study["only"]):
        html = path.read_text(encoding="utf-8")
        assert html.count("<script") == 2  # the data and the view's own inline script
        assert 'id="ep-data"' in html and 'src="http' not in html
        assert "http://" not in html and "https://" not in html
        assert not re.search(r"<script[^>]*\ssrc=", html)
        assert not re.search(r"<link[^>]*href=", html)
    only = study["only"].read_text(encoding="utf-8")
    assert ">Episodes</h2>" in only and "<table" in only
    # episodes-only writes only its page: no tables, no figures
    assert sorted(p.name for p in study["only"].parent.iterdir()) == ["episodes.html"]


def test_json_cannot_close_its_script():
    from reports.explorer_page import _json_for_script

    text = _json_for_script({"a": "</script><script>alert(1)</script>", "b": "<!--"})
    assert "<" not in text
    assert json.loads(text) == {"a": "</script><script>alert(1)</script>", "b": "<!--"}


# ------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def page(study, tmp_path_factory):
    from tests.cdp import Browser, chromium

    exe = chromium()
    profile = tmp_path_factory.mktemp("chromium")
    with Browser(exe, profile, width=1400, height=1000) as b:
        b.open(study["only"].resolve().as_uri())
        b.wait_for("document.querySelectorAll('#ep-tbody tr').length > 0")
        yield b


def _rows(b) -> list[dict]:
    return b.eval(
        "Array.from(document.querySelectorAll('#ep-tbody tr')).map(tr => Object.fromEntries("
        "[['idx', tr.dataset.idx]].concat(Array.from(tr.cells).map(td => [td.dataset.col,"
        " td.dataset.v === undefined ? td.textContent : td.dataset.v]))))"
    )


def _set(b, ident: str, value: str) -> None:
    b.eval(
        f"(() => {{ const e = document.getElementById({json.dumps(ident)}); e.value = {json.dumps(value)};"
        " e.dispatchEvent(new Event('change')); })()"
    )


def _reset(b) -> None:
    for ident in ("ep-f-dataset", "ep-f-class", "ep-f-variant", "ep-f-fold", "ep-f-shot", "ep-f-x"):
        _set(b, ident, "")


def _frame(study) -> pd.DataFrame:
    """Every episode with each variant's IoU, from the cells' own tables (independent of the page)."""
    rows = []
    for (variant, fold, shot), cell in study["cells"].items():
        t = cell["episodes"]
        for e, c, i, u in zip(t["episode"], t["class"], t["I_fg"], t["U_fg"], strict=True):
            rows.append(dict(variant=variant, fold=fold, shot=shot, episode=e, cls=c, iou=i / u))
    return (
        pd.DataFrame(rows)
        .pivot_table(index=["fold", "shot", "episode", "cls"], columns="variant", values="iou")
        .reset_index()
    )


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_sort_and_filter_in_browser(page, study):
    b = page
    _reset(b)
    frame = _frame(study)
    order = b.eval("JSON.parse(document.getElementById('ep-data').textContent).variants")
    c32, col = f"v{order.index('colour-32')}", str(order.index("colour"))
    # sort by colour-32's IoU: ascending, then descending on a second click
    b.eval(f"document.querySelector('th[data-key={c32}]').click()")
    got = [float(r[c32]) for r in _rows(b)]
    assert len(got) == len(frame) and got == sorted(frame["colour-32"])
    b.eval(f"document.querySelector('th[data-key={c32}]').click()")
    assert [float(r[c32]) for r in _rows(b)] == sorted(frame["colour-32"], reverse=True)
    # filter by class: only that class
    cls = int(frame["cls"].iloc[0])
    _set(b, "ep-f-class", f"pascal:{cls}")
    rows = _rows(b)
    assert {int(r["class"]) for r in rows} == {cls} and len(rows) == int((frame["cls"] == cls).sum())
    _set(b, "ep-f-class", "")
    _set(b, "ep-f-fold", "1")
    _set(b, "ep-f-shot", "2")
    assert {(r["fold"], r["shot"]) for r in _rows(b)} == {("1", "2")} and len(_rows(b)) == 6
    _reset(b)
    # "colour beats colour-32 by more than 0.5 IoU points": exactly the episodes pandas picks
    _set(b, "ep-f-a", col)
    _set(b, "ep-f-b", c32[1:])
    _set(b, "ep-f-x", "0.5")
    got = {(int(r["fold"]), int(r["shot"]), int(r["episode"])) for r in _rows(b)}
    sel = frame[100 * (frame["colour"] - frame["colour-32"]) > 0.5]
    want = set(zip(sel["fold"], sel["shot"], sel["episode"], strict=True))
    assert want and got == want
    assert int(b.eval("document.getElementById('ep-view').dataset.rows")) == len(want)
    assert all(100 * float(r["delta"]) > 0.5 for r in _rows(b))
    _reset(b)


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_detail_panel_iou_and_overlay_pixels(page, study):
    b = page
    _reset(b)
    b.eval("document.querySelector('#ep-tbody tr').click()")
    b.wait_for("document.getElementById('ep-detail').dataset.ready === '1'")
    idx = int(b.eval("document.getElementById('ep-detail').dataset.idx"))
    data = _payload(study["only"].read_text(encoding="utf-8"))
    row = data["episodes"][idx]
    _, fold, shot, _, _ = data["groups"][row[0]]
    panels = b.eval(
        "Array.from(document.querySelectorAll('#ep-detail figure.ep-panel')).map(f => {"
        " const c = f.querySelector('canvas.ep-fill'); let n = null;"
        " if (c) { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; n = 0;"
        "   for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; }"
        " return {kind: f.dataset.kind, variant: f.dataset.variant || null, iou: f.dataset.iou || null,"
        "  caption: f.querySelector('figcaption').textContent, fg: n,"
        "  size: c ? [c.height, c.width] : null}; })"
    )
    kinds = [p["kind"] for p in panels]
    assert kinds == ["query"] + ["support"] * shot + ["prediction"] * len(VARIANTS)
    for p in panels[1 + shot :]:
        cell = study["cells"][(p["variant"], fold, shot)]
        t = cell["episodes"].set_index("episode").loc[row[1]]
        want = t["I_fg"] / t["U_fg"]
        assert float(p["iou"]) == pytest.approx(want, abs=1e-12)
        assert f"IoU {100 * want:.2f}%" in p["caption"]
        if (p["variant"], fold, shot) == NO_PREDICTIONS:
            assert p["fg"] is None and "no stored prediction" in p["caption"]
            continue
        pr = cell["predictions"].set_index("episode").loc[row[1]]
        mask = rle_to_mask({"size": [pr["height"], pr["width"]], "counts": pr["counts"]})
        assert p["size"] == [int(pr["height"]), int(pr["width"])]
        assert p["fg"] == int(mask.sum())


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_js_rle_decoder_equals_pycocotools(page):
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), bool), np.ones((4, 9), bool), rng.random((37, 53)) > 0.5]
    blob = np.zeros((300, 400), bool)
    blob[40:260, 30:390] = True
    blob[100:120, 50:70] = False
    masks += [blob, rng.random((400, 400)) > 0.98]
    for m in masks:
        enc = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        counts = enc["counts"].decode("ascii")
        h, w = m.shape
        got = page.eval(f"Array.from(window.fssRle.decode({h}, {w}, {json.dumps(counts)}))")
        want = mask_utils.decode(enc).T.ravel()  # column-major, as the page keeps it
        np.testing.assert_array_equal(np.asarray(got, np.uint8), want)


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_no_network_request(study, tmp_path):
    """Opening the full report and using the view requests only the file itself and data: URIs."""
    from tests.cdp import Browser, chromium

    exe = chromium()
    url = study["out"].joinpath("report.html").resolve().as_uri()
    with Browser(exe, tmp_path / "profile") as b:
        b.open(url)
        b.wait_for("document.querySelectorAll('#ep-tbody tr').length > 0")
        b.eval("document.querySelector('th[data-key=v0]').click()")
        b.eval("document.querySelector('#ep-tbody tr').click()")
        b.wait_for("document.getElementById('ep-detail').dataset.ready === '1'")
        b.eval("document.getElementById('ep-next').click()")
        assert b.console_errors == []
        assert url in b.requests
        assert all(u == url or u.startswith("data:") for u in b.requests), b.requests


def test_thumbnail_keeps_the_aspect_and_bounds_the_long_side():
    from base64 import b64decode
    from io import BytesIO

    from reports.explorer import thumbnail_uri

    for h, w, want in [(375, 500, (192, 144)), (500, 333, (128, 192)), (40, 60, (60, 40))]:
        uri = thumbnail_uri(np.full((h, w, 3), 128, np.uint8))
        im = Image.open(BytesIO(b64decode(uri.split(",", 1)[1])))
        assert (im.format, im.size) == ("JPEG", want)


def test_view_html_has_a_column_per_variant_and_no_url():
    from reports.explorer_page import episodes_html

    payload = {
        "variants": ["a<b", "fssam"],
        "reference": "fssam",
        "groups": [],
        "classes": {},
        "thumbs": [],
        "masks": [],
        "episodes": [],
        "notes": ["x & y"],
    }
    html = episodes_html(payload)
    heads = re.findall(r'<th data-key="([^"]+)"[^>]*>([^<]*)</th>', html)
    assert [k for k, _ in heads][-3:] == ["v0", "v1", "delta"]
    assert heads[-3][1] == "a&lt;b" and "<li>x &amp; y</li>" in html
    assert html.count("<script") == 2 and "http" not in html and " src=" not in html


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_ground_truth_at_the_scored_size_on_hsnet(pascal_root, tmp_path):
    """On the hsnet protocol the prediction is the 400 x 400 square: the query's ground truth is
    stored at that size too, aligned with it (its intersection with the prediction is the cell's
    I_fg, an independent count), so the outline is drawn where the metric scored."""
    from benchmark.records.tracking import Tracker
    from reports.collect import collect_experiments
    from reports.explorer import explorer_data

    spec = {
        "name": "explore-hsnet",
        "data": {"pascal": str(pascal_root)},
        "protocol": "hsnet",
        "folds": [0],
        "shots": [1],
        "seeds": [0],
        "episodes": 4,
        "variants": {"colour": VARIANTS["colour"]},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    StudyRunner(
        load_study(tmp_path / "s.yaml"), tracking_uri=uri, work_dir=tmp_path / "w", progress=False
    ).run()
    tracker = Tracker(uri, create=False)
    data = collect_experiments(tracker, ["explore-hsnet"], tmp_path / "dl")
    payload = explorer_data(data, tracker, None)
    (table,) = data.episodes.values()
    table = table.set_index("episode")
    assert len(payload["episodes"]) == 4
    for row in payload["episodes"]:
        gt, pred = _rle(payload["masks"][row[7]]), _rle(row[10][0])
        assert gt.shape == pred.shape == (400, 400)
        assert int((gt & pred).sum()) == int(table.loc[row[1], "I_fg"])


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_without_the_data_root_the_page_still_works(study, monkeypatch, tmp_path):
    """A data root that is not available here: a note says so, the episodes keep their IoU and
    predictions, the panels draw grey in place of the images, and the page has no error."""
    import reports.explorer as explorer
    from benchmark.records.tracking import Tracker
    from reports.collect import collect_experiments
    from reports.explorer_page import episodes_section
    from reports.html import write_html
    from tests.cdp import Browser, chromium

    monkeypatch.setattr(explorer, "_store_for", lambda root, stores: None)
    tracker = Tracker(study["uri"], create=False)
    data = collect_experiments(tracker, ["explore"], tmp_path / "dl")
    payload = explorer.explorer_data(data, tracker, "colour")
    assert payload["thumbs"] == [] and payload["masks"] == [] and len(payload["episodes"]) == 24
    assert any("is not available here" in n for n in payload["notes"])
    assert all(row[5] == -1 and row[7] == -1 and set(row[8]) == {-1} for row in payload["episodes"])
    page = write_html(tmp_path / "p.html", "no data", [episodes_section(payload)])
    with Browser(chromium(), tmp_path / "profile") as b:
        b.open(page.resolve().as_uri())
        b.eval("document.querySelector('#ep-tbody tr').click()")
        b.wait_for("document.getElementById('ep-detail').dataset.ready === '1'")
        n = b.eval("document.querySelectorAll('#ep-detail figure.ep-panel[data-kind=prediction]').length")
        assert n == len(VARIANTS) and b.console_errors == []


@pytest.mark.slow  # heavy: CI runs it in its slow step
def test_an_image_that_cannot_be_read_greys_its_episodes_only(study, monkeypatch, tmp_path):
    """One broken image in an available data root (a partial copy): one note naming it, its
    episodes drawn grey, every other episode with its thumbnails and ground truth; no crash."""
    import reports.explorer as explorer
    from benchmark.errors import FssBenchError
    from benchmark.evaluation.loader import ImageStore
    from benchmark.records.tracking import Tracker
    from reports.collect import collect_experiments

    manifest = study["cells"][("colour", 0, 1)]["manifest"]
    first = manifest.episodes[0]
    victim = manifest.images[first.query][0]
    read = ImageStore.image

    def image(self, rel):
        if rel == victim:
            raise FssBenchError(f"{rel}: cannot read the image (truncated file)")
        return read(self, rel)

    monkeypatch.setattr(ImageStore, "image", image)
    tracker = Tracker(study["uri"], create=False)
    data = collect_experiments(tracker, ["explore"], tmp_path / "dl")
    payload = explorer.explorer_data(data, tracker, "colour")
    broken = [n for n in payload["notes"] if "truncated file" in n]
    assert len(broken) == 1 and victim in broken[0]
    rows = payload["episodes"]
    grey = [r for r in rows if r[5] == -1]
    assert grey and all(r[7] == -1 for r in grey)
    for r in grey:  # exactly the episodes that show the broken image
        group = payload["groups"][r[0]]
        cell = study["cells"][("colour", group[1], group[2])]["manifest"]
        ep = next(e for e in cell.episodes if e.id == r[1])
        assert victim in [cell.images[ep.query][0]] + [cell.images[s][0] for s in ep.supports]
    drawn = [r for r in rows if r[5] >= 0]
    assert drawn and all(payload["thumbs"][r[5]].startswith("data:image/jpeg") for r in drawn)
