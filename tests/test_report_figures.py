"""Report figures and the self-contained HTML report (synthetic inputs, no model, no GPU)."""

from __future__ import annotations

import itertools
import os
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from reports.explorer_page import episodes_section
from reports.figures import (
    RANDOM_INIT_LABEL,
    EpisodePanels,
    ablation_bar_chart,
    fold_variant_heatmap,
    honest_ylim,
    imr_curve,
    per_class_bars,
    qualitative_grid,
    save_figure,
)
from reports.html import Section, write_html
from tests.cdp import HEADLESS_FLAGS, chromium

VARIANTS = ["fssam", "fssam_no_imr", "sam2_baseline"]
SHOTS = [1, 5]
FOLDS = [0, 1, 2, 3]
SEEDS = [0, 1]
IMR = {"fssam": 3.0, "fssam_no_imr": 0.0, "sam2_baseline": np.nan}
METHOD = {"fssam": "fssam", "fssam_no_imr": "fssam", "sam2_baseline": "baseline"}


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def _has_random_label(fig: Figure) -> bool:
    return any(RANDOM_INIT_LABEL in t for t in _texts(fig))


@pytest.fixture(scope="module")
def cells() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for v, shot, fold, seed in itertools.product(VARIANTS, SHOTS, FOLDS, SEEDS):
        miou = 0.4 + 0.1 * VARIANTS.index(v) + 0.05 * fold + 0.02 * (shot == 5) + 0.01 * rng.random()
        rows.append(
            dict(
                run_id=f"r{len(rows)}",
                variant=v,
                method=METHOD[v],
                dataset="pascal",
                fold=fold,
                shot=shot,
                seed=seed,
                miou=miou,
                fb_iou=miou + 0.1,
                fg_iou=miou - 0.05,
                imr_iters=IMR[v],
                random_init=False,
            )
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def per_class() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for v, shot, fold, seed in itertools.product(VARIANTS, SHOTS, FOLDS, SEEDS):
        for c in range(5 * fold + 1, 5 * fold + 6):
            rows.append(
                dict(
                    variant=v,
                    dataset="pascal",
                    fold=fold,
                    shot=shot,
                    seed=seed,
                    **{"class": c},
                    class_name=f"class_{c:02d}",
                    iou=float(rng.random()),
                )
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def ablation() -> pd.DataFrame:
    rows = []
    for shot in SHOTS:
        for i, v in enumerate(VARIANTS):
            diff = 0.0 if i == 0 else -0.03 * i
            low, high = (0.0, 0.0) if i == 0 else (diff - 0.02, diff + 0.02 + 0.03 * (i == 1))
            rows.append(
                dict(
                    variant=v,
                    dataset="pascal",
                    shot=shot,
                    miou=0.6 + diff,
                    diff=diff,
                    low=low,
                    high=high,
                    excludes_zero=bool(low > 0 or high < 0),
                    reference="fssam",
                )
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def episodes() -> list[EpisodePanels]:
    rng = np.random.default_rng(2)

    def mask(h: int, w: int) -> np.ndarray:
        m = np.zeros((h, w), np.uint8)
        m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
        m[0, :] = 255
        return m

    img = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    prior = lambda: rng.random((16, 16)).astype(np.float32)  # noqa: E731
    with_priors = EpisodePanels(
        title="fssam pascal fold0 1-shot episode 17 (best)",
        iou=0.8123,
        support_image=img(40, 50),
        support_mask=mask(40, 50),
        query_image=img(30, 48),
        gt=mask(30, 48),
        pred=mask(30, 48) == 1,
        prior_fg=prior(),
        prior_disc=prior(),
        imr_disc_priors=[prior() for _ in range(3)],
    )
    baseline = EpisodePanels(
        title="sam2_baseline pascal fold0 1-shot episode 3 (worst)",
        iou=0.05,
        support_image=img(32, 32),
        support_mask=mask(32, 32),
        query_image=img(30, 48),
        gt=mask(30, 48),
        pred=np.zeros((30, 48), bool),
        prior_fg=None,
        prior_disc=None,
        imr_disc_priors=[],
    )
    return [with_priors, baseline]


# ----------------------------------------------------------------------------------------------- figures


def test_qualitative_grid_panels(episodes):
    fig = qualitative_grid(episodes, random_init=True)
    ncols = 2 + 2 + 3 + 2
    assert len(fig.axes) == 2 * ncols
    expected = ["support + mask", "query", "FG prior", "Disc prior", "IMR t=1", "IMR t=2", "IMR t=3"]
    expected += ["prediction", "ground truth"]
    assert [ax.get_title() for ax in fig.axes[:ncols]] == expected
    assert all(ax.get_title() == "" for ax in fig.axes[ncols:])
    # first row: every panel an image; baseline row: the 5 prior columns say "n/a"
    assert all(len(ax.images) == 1 for ax in fig.axes[:ncols])
    second = fig.axes[ncols:]
    na = [i for i, ax in enumerate(second) if any(t.get_text() == "n/a" for t in ax.texts)]
    assert na == [2, 3, 4, 5, 6]
    assert all(len(second[i].images) == 1 for i in (0, 1, 7, 8))
    # priors are displayed at the query's size
    assert fig.axes[2].images[0].get_array().shape == episodes[0].query_image.shape[:2]
    texts = _texts(fig)
    assert any("81.2%" in t and "episode 17" in t for t in texts)
    assert any("5.0%" in t and "episode 3" in t for t in texts)
    assert _has_random_label(fig)
    assert not _has_random_label(qualitative_grid(episodes, random_init=False))


def test_ablation_bar_chart(ablation):
    fig = ablation_bar_chart(ablation, random_init=False)
    assert len(fig.axes) == len(SHOTS)
    for ax, shot in zip(fig.axes, SHOTS, strict=True):
        assert f"{shot}-shot" in ax.get_title()
        heights = [p.get_height() for p in ax.patches]
        assert len(heights) == len(VARIANTS)
        want = 100 * ablation[ablation["shot"] == shot]["miou"].to_numpy()
        np.testing.assert_allclose(heights, want)
        labels = [t.get_text() for t in ax.texts]
        # variant 2's CI [-0.08, -0.04] excludes zero, variant 1's [-0.05, 0.02] does not
        assert labels == [f"{want[0]:.1f}", f"{want[1]:.1f}", f"{want[2]:.1f}*"]
        # error bar of variant 2 spans [miou + low - diff, miou + high - diff] = miou -/+ 2 points
        segs = ax.collections[0].get_segments()
        np.testing.assert_allclose(segs[2][:, 1], [want[2] - 2.0, want[2] + 2.0])
    assert not _has_random_label(fig)
    assert _has_random_label(ablation_bar_chart(ablation, random_init=True))


def test_imr_curve(cells):
    fig = imr_curve(cells, random_init=True)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == len(SHOTS)
    fs = cells[(cells["method"] == "fssam") & cells["imr_iters"].notna()]
    for line, shot in zip(lines, SHOTS, strict=True):
        assert line.get_label() == f"pascal {shot}-shot"
        sub = fs[fs["shot"] == shot]
        xs = sorted(sub["imr_iters"].unique())
        ys = [100 * sub[sub["imr_iters"] == x].groupby("fold")["miou"].mean().mean() for x in xs]
        np.testing.assert_allclose(line.get_xdata(), xs)
        np.testing.assert_allclose(line.get_ydata(), ys)
    assert list(ax.get_xticks()) == [0, 3]
    assert _has_random_label(fig)
    assert not _has_random_label(imr_curve(cells, random_init=False))
    # no CI given: the caption says so; the axis spans at least 10 points around the points
    y0, y1 = ax.get_ylim()
    ys = np.concatenate([line.get_ydata() for line in lines])
    assert y1 - y0 >= 10 - 1e-9 and y0 <= ys.min() and y1 >= ys.max() and y0 >= 0 and y1 <= 100
    assert any("without a CI" in t for t in _texts(fig))


def test_imr_curve_draws_the_given_cis_on_an_axis_that_holds_them(cells):
    fs = cells[(cells["method"] == "fssam") & cells["imr_iters"].notna()]
    points = fs.groupby(["dataset", "shot", "imr_iters"], as_index=False)["miou"].mean()
    # hand-made CIs: 1 point below and 3 above each point (fractions in cells, percent here)
    ci = points.assign(low=100 * points["miou"] - 1.0, high=100 * points["miou"] + 3.0)
    ci = ci.drop(columns="miou")
    fig = imr_curve(cells, random_init=False, ci=ci)
    (ax,) = fig.axes
    bars = [c for c in ax.collections if c.get_segments()]
    assert len(bars) == len(SHOTS)
    for seg in (s for c in bars for s in c.get_segments()):
        assert seg[1, 1] - seg[0, 1] == pytest.approx(4.0)  # from -1 to +3 points
    y0, y1 = ax.get_ylim()
    assert y0 <= min(ci["low"]) and y1 >= max(ci["high"]) and y1 - y0 >= 10 - 1e-9
    assert not any("without a CI" in t for t in _texts(fig))
    # a percentile CI that does not hold its point (few episodes) draws a one-sided bar, no error
    above = ci.assign(low=100 * points["miou"] + 1.0, high=100 * points["miou"] + 2.0)
    fig = imr_curve(cells, random_init=False, ci=above)
    bars = [c for c in fig.axes[0].collections if c.get_segments()]
    for seg in (s for c in bars for s in c.get_segments()):
        assert seg[1, 1] - seg[0, 1] == pytest.approx(2.0)  # from the point to +2


@pytest.mark.parametrize(
    ("lows", "highs", "want"),
    [
        ([60.1], [60.3], (55.2, 65.2)),  # 0.2 points of data: a 10-point axis centred on it
        ([1.0], [2.0], (0.0, 10.0)),  # pushed up to stay at or above 0
        ([98.0], [99.6], (90.0, 100.0)),  # pushed down to stay at or below 100
        ([40.0], [70.0], (40.0, 70.0)),  # wide enough already
    ],
)
def test_honest_ylim(lows, highs, want):
    assert honest_ylim(lows, highs) == pytest.approx(want)


def test_the_support_mask_is_an_outline_not_a_tint(episodes):
    fig = qualitative_grid(episodes[:1], random_init=False)
    shown = fig.axes[0].images[0].get_array()
    ep = episodes[0]
    inside = np.zeros(ep.support_mask.shape, bool)
    inside[10 + 3 : 30 - 3, 12 + 3 : 37 - 3] = True  # the mask is [10:30, 12:37]; 3 px edge
    assert (shown[inside] == ep.support_image[inside]).all()  # the object itself is untouched
    edge = np.zeros_like(inside)
    edge[10:30, 12:37] = True
    edge &= ~inside
    assert (shown[edge] == [255, 216, 0]).all()  # yellow: (1.0, 0.85, 0.0) * 255, truncated


def test_per_class_bars(per_class):
    fig = per_class_bars(per_class, "pascal", 1, random_init=False)
    assert len(fig.axes) == len(FOLDS)
    for ax, fold in zip(fig.axes, FOLDS, strict=True):
        assert ax.get_title() == f"fold {fold}"
        names = [t.get_text() for t in ax.get_xticklabels()]
        assert names == [f"class_{c:02d}" for c in range(5 * fold + 1, 5 * fold + 6)]
        bars = [p for p in ax.patches if p.get_height() > 0]
        assert len(bars) == 5 * len(VARIANTS)
    sub = per_class[(per_class["shot"] == 1) & (per_class["fold"] == 0)]
    want = sorted(100 * sub.groupby(["variant", "class"])["iou"].mean())
    got = sorted(p.get_height() for p in fig.axes[0].patches if p.get_height() > 0)
    np.testing.assert_allclose(got, want)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == VARIANTS
    assert not _has_random_label(fig)
    assert _has_random_label(per_class_bars(per_class, "pascal", 5, random_init=True))


@pytest.mark.parametrize("metric", ["miou", "fb_iou"])
def test_fold_variant_heatmap(cells, metric):
    fig = fold_variant_heatmap(cells, "pascal", 5, metric=metric, random_init=False)
    ax = fig.axes[0]
    sub = cells[(cells["shot"] == 5) & (cells["dataset"] == "pascal")]
    expected = []
    for v in VARIANTS:
        per_fold = [100 * sub[(sub["variant"] == v) & (sub["fold"] == f)][metric].mean() for f in FOLDS]
        expected += [f"{x:.1f}" for x in per_fold] + [f"{np.mean(per_fold):.1f}"]
    assert [t.get_text() for t in ax.texts] == expected
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3", "mean"]
    assert [t.get_text() for t in ax.get_yticklabels()] == VARIANTS
    assert not _has_random_label(fig)
    assert _has_random_label(fold_variant_heatmap(cells, "pascal", 5, random_init=True))
    # the colour scale is anchored at 0..100, not stretched over the data; the range is printed
    assert ax.collections[0].get_clim() == (0.0, 100.0)
    values = [float(x) for x in expected]
    assert ax.get_title() == f"colour scale 0 to 100; values span {min(values):.1f} to {max(values):.1f}"


def test_empty_inputs_give_placeholder_figures(cells, per_class):
    assert isinstance(imr_curve(cells[cells["method"] == "baseline"], random_init=False), Figure)
    assert isinstance(per_class_bars(per_class, "coco", 1, random_init=False), Figure)
    assert isinstance(qualitative_grid([], random_init=True), Figure)


def test_save_figure(tmp_path, cells):
    fig = imr_curve(cells, random_init=True)
    paths = save_figure(fig, tmp_path / "sub" / "imr_curve.v1")
    assert [p.name for p in paths] == ["imr_curve.v1.png", "imr_curve.v1.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["imr_curve.v1.pdf", "imr_curve.v1.png"]


def test_figures_never_touch_pyplot(tmp_path, cells, per_class, ablation, episodes):
    """Every figure (seaborn's included) is a standalone Figure: pyplot's list of open figures stays
    as it was, so nothing needs closing after save_figure."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    for i, fig in enumerate(
        [
            qualitative_grid(episodes, random_init=True),
            ablation_bar_chart(ablation, random_init=True),
            imr_curve(cells, random_init=False),
            per_class_bars(per_class, "pascal", 1, random_init=False),
            fold_variant_heatmap(cells, "pascal", 1, random_init=False),
        ]
    ):
        assert fig.canvas.manager is None  # no pyplot window behind it
        save_figure(fig, tmp_path / f"fig{i}")
    assert plt.get_fignums() == before


# ----------------------------------------------------------------------------------------------- HTML


@pytest.fixture(scope="module")
def report(tmp_path_factory, cells, ablation) -> dict:
    out = tmp_path_factory.mktemp("report")
    png = save_figure(
        fold_variant_heatmap(cells, "pascal", 1, random_init=True), out / "heatmap_pascal_1shot"
    )[0]
    table = ablation.assign(miou=(100 * ablation["miou"]).round(1).astype(str))
    table.loc[0, "miou"] = f"**{table.loc[0, 'miou']}**"
    table.loc[1, "variant"] = "<b>fssam_no_imr</b>"
    sections = [
        Section(heading="Ablation table", html=table.to_html(index=False, escape=False), text="a < b & c"),
        Section(heading="Per-fold heatmap", images=[png]),
        episodes_section(
            {
                "variants": ["fssam"],
                "reference": "fssam",
                "groups": [],
                "classes": {},
                "thumbs": [],
                "masks": [],
                "episodes": [],
                "notes": [],
            }
        ),
    ]
    path = write_html(
        out / "html" / "report.html",
        title="FSS report <script>alert(1)</script>",
        sections=sections,
        warning="RANDOM-INIT WEIGHTS: numbers are not meaningful",
        footer="generated by fssbench",
    )
    return {"path": path, "doc": path.read_text(encoding="utf-8"), "table": table}


def test_html_self_contained(report):
    doc = report["doc"]
    assert report["path"].name == "report.html"
    assert not [p for p in report["path"].parent.iterdir() if p.name != "report.html"]  # no temp left
    assert "http://" not in doc and "https://" not in doc
    # the only scripts: the Episodes view's inline data and code, no src
    assert doc.lower().count("<script") == 2 and "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert not re.search(r"<script[^>]*\ssrc=", doc) and ' src="http' not in doc
    assert doc.count('src="data:image/png;base64,') == 1
    assert "<figcaption>heatmap_pascal_1shot</figcaption>" in doc
    assert 'class="warning"' in doc and "RANDOM-INIT WEIGHTS: numbers are not meaningful" in doc
    assert doc.index('class="warning"') < doc.index("<h1>")
    assert "<table" in doc and "<td>sam2_baseline</td>" in doc
    assert "<b>fssam_no_imr</b>" in doc and f"<b>{report['table'].loc[0, 'miou'][2:-2]}</b>" in doc
    assert "<p>a &lt; b &amp; c</p>" in doc
    assert 'href="#sec-1-ablation-table"' in doc and 'id="sec-1-ablation-table"' in doc
    assert 'href="#sec-2-per-fold-heatmap"' in doc and 'id="sec-2-per-fold-heatmap"' in doc


def _run_chromium(exe: str, profile, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        exe,
        *HEADLESS_FLAGS,
        f"--user-data-dir={profile}",
        *args,
    ]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env, check=False)


def test_html_in_real_browser(report, tmp_path):
    exe = chromium()
    url = report["path"].resolve().as_uri()
    dom = _run_chromium(exe, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Uncaught" not in dom.stderr
    html = dom.stdout
    for heading in ("Ablation table", "Per-fold heatmap"):
        assert f">{heading}</h2>" in html and f">{heading}</a>" in html
    assert "<td>sam2_baseline</td>" in html and "<b>fssam_no_imr</b>" in html
    assert "RANDOM-INIT WEIGHTS: numbers are not meaningful" in html
    assert html.lower().count("<script") == 2 and not re.search(r"<script[^>]*\ssrc=", html)

    shot = tmp_path / "shot.png"
    res = _run_chromium(
        exe, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,2000", url
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Uncaught" not in res.stderr
    assert shot.is_file() and shot.stat().st_size > 20_000
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
