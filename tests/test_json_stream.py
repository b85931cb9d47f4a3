"""The streaming JSON reader against ``json.load``: same values, exact byte spans, any chunk size."""

from __future__ import annotations

import json

import pytest

import benchmark.data.json_stream as js

DOC = {
    "info": {"description": 'caf\u00e9 \u2603 "quoted" [not an array]', "year": 2014},
    "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 22, "file_name": "\u00e9t\u00e9.jpg"}],
    "licenses": [],
    "annotations": [
        {"id": 7, "segmentation": [[1.5, 2.25, 3e2, 4]], "image_id": 1},
        12345678901234567890,
        -0.5,
        "x\u2603y",
        None,
        [],
    ],
    "empty": [],
    "categories": [{"id": 1, "name": "person"}],
}


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
@pytest.mark.parametrize("dump", [{"ensure_ascii": False}, {"indent": 2}, {"separators": (",", ":")}])
def test_streamed_members_and_spans_equal_json_load(tmp_path, monkeypatch, chunk, dump):
    monkeypatch.setattr(js, "CHUNK", chunk)
    path = tmp_path / "doc.json"
    raw = json.dumps(DOC, **dump).encode("utf-8")
    path.write_bytes(b" \n" + raw + b"\n")
    got: dict[str, list] = {"annotations": [], "empty": []}
    spans = []
    read = []

    def keep(name):
        def on(value, start, length):
            got[name].append(value)
            spans.append((start, length))

        return on

    members = js.stream_object(
        path, {"annotations": keep("annotations"), "empty": keep("empty")}, read.append
    )
    assert got == {"annotations": DOC["annotations"], "empty": []}
    assert members == {**DOC, "annotations": len(DOC["annotations"]), "empty": 0}
    assert sum(read) == len(raw) + 3  # every byte read once
    assert js.read_spans(path, spans) == DOC["annotations"]  # each span is exactly its element


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", '{"a": [1, 2}', '{"a": 1', '{"a" 1}', "{1: 2}", '{"a": [1 2]}', "", '{"a": 1} x'],
)
def test_text_that_is_not_an_object_raises_a_value_error(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError):
        js.stream_object(path, {"a": lambda *_: None})
