"""The parsers resolve every shipped study, search and training file (and the demo's) exactly as
the parsers of main did before benchmark/specs/ (issue 25): the settings, cell settings and
identities that cell keys, resolved.yaml and MLflow params come from.
The fixture is written by ``scripts/spec_snapshot.py``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.spec_snapshot import snapshot

FIXTURE = Path(__file__).parent / "fixtures" / "spec_snapshot.json"


def test_every_shipped_file_resolves_as_before(pascal_root, coco_root):
    expected = json.loads(FIXTURE.read_text())
    got = snapshot(pascal_root, coco_root)
    assert sorted(got) == sorted(expected)
    for name in expected:  # as JSON text: 1 and 1.0 differ
        assert json.dumps(got[name], sort_keys=True) == json.dumps(expected[name], sort_keys=True), name
