"""The Episodes view as HTML: controls, an empty table the inline script fills, the detail panel,
the data (:func:`reports.explorer.explorer_data`) as inline JSON and the hand-written script
(``reports/explorer.js``) and style (``reports/explorer.css``), read as package data. No library,
no URL: the page works from disk with no network.

Stable hooks for tests: ``#ep-view[data-rows]`` (rows after filtering), the filters ``#ep-f-dataset``,
``#ep-f-class`` (``dataset:class``), ``#ep-f-variant``, ``#ep-f-fold``, ``#ep-f-shot``, ``#ep-f-a``,
``#ep-f-b``, ``#ep-f-x`` (A beats B by more than x IoU points), headers ``th[data-key]``
(``v<i>``: variant i's IoU; ``delta``: A - B), rows ``tr[data-idx]`` with cells ``td[data-col]``
(``data-v``: the exact value), the pager ``#ep-prev``/``#ep-next``/``#ep-pageinfo``, and the detail
``#ep-detail`` (``data-ready`` once its thumbnails are drawn) holding ``figure.ep-panel``
(``data-kind`` query/support/prediction, ``data-variant``, ``data-iou``) with canvases ``ep-img``
(thumbnail), ``ep-fill`` (the prediction, at the mask's own size) and ``ep-line`` (outline).
"""

from __future__ import annotations

import html as html_lib
import json
from importlib import resources
from typing import Any

from reports.html import Section

SECTION_TITLE = "Episodes"
STATIC_COLUMNS = [
    ("dataset", "dataset"),
    ("fold", "fold"),
    ("shot", "shot"),
    ("seed", "seed"),
    ("episode", "episode"),
    ("class", "class"),
    ("query", "query"),
    ("supports", "supports"),
]


def _asset(name: str) -> str:
    return resources.files("reports").joinpath(name).read_text(encoding="utf-8")


def _json_for_script(payload: dict[str, Any]) -> str:
    """``payload`` as JSON that cannot end its ``<script>`` element (every ``<`` escaped)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _select(ident: str, label: str, any_text: str | None) -> str:
    first = "" if any_text is None else f'<option value="">{any_text}</option>'
    return f'<label>{label} <select id="{ident}">{first}</select></label>'


def episodes_html(payload: dict[str, Any]) -> str:
    """The view's HTML fragment (style, controls, table, detail panel, data, script)."""
    heads = [f'<th data-key="{k}">{html_lib.escape(t)}</th>' for k, t in STATIC_COLUMNS]
    heads += [
        f'<th data-key="v{i}" title="IoU (%)">{html_lib.escape(v)}</th>'
        for i, v in enumerate(payload["variants"])
    ]
    heads.append('<th data-key="delta" id="ep-delta-head">\u0394</th>')
    filters = [
        _select("ep-f-dataset", "dataset", "all"),
        _select("ep-f-class", "class", "all"),
        _select("ep-f-variant", "variant ran", "any"),
        _select("ep-f-fold", "fold", "all"),
        _select("ep-f-shot", "shot", "all"),
        _select("ep-f-a", "A", None),
        _select("ep-f-b", "beats B", None),
        '<label>by more than <input id="ep-f-x" type="number" step="any" placeholder="x"> IoU points</label>',
    ]
    notes = "".join(f"<li>{html_lib.escape(n)}</li>" for n in payload["notes"])
    return "\n".join(
        [
            f"<style>{_asset('explorer.css')}</style>",
            '<div id="ep-view">',
            "<p>Every episode of the study's manifests with each variant's IoU (%; "
            "I<sub>fg</sub>/U<sub>fg</sub> of its cell's episodes.parquet) and the difference "
            "\u0394 = A \u2212 B in IoU points. Click a header to sort, a row to see the episode: "
            "the query with the ground truth outlined (magenta), the supports with their masks "
            "(yellow), and every variant's stored prediction (green) on the query.</p>",
            f'<div class="ep-filters">{"".join(filters)}</div>',
            f'<ul class="ep-notes">{notes}</ul>' if notes else "",
            '<div class="ep-pager"><button type="button" id="ep-prev">previous</button> '
            '<span id="ep-pageinfo"></span> <button type="button" id="ep-next">next</button> '
            '<span id="ep-count"></span></div>',
            '<div class="table-wrap"><table id="ep-table"><thead><tr>',
            "".join(heads),
            '</tr></thead><tbody id="ep-tbody"></tbody></table></div>',
            '<div id="ep-detail" hidden></div>',
            "</div>",
            f'<script type="application/json" id="ep-data">{_json_for_script(payload)}</script>',
            f"<script>{_asset('explorer.js')}</script>",
        ]
    )


def episodes_section(payload: dict[str, Any]) -> Section:
    """The report's Episodes section for ``payload`` (:func:`reports.explorer.explorer_data`)."""
    return Section(SECTION_TITLE, raw=episodes_html(payload))
