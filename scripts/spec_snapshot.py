"""Write tests/fixtures/spec_snapshot.json: the resolved form of every shipped study, search and
training file (and of the demo's study and search) as the parsers give it today, on synthetic data
built in a scratch folder under the repository (removed afterwards).

    python scripts/spec_snapshot.py

The committed fixture was written by today's main before the parsers became benchmark/specs/
(issue 25); tests/test_spec_snapshot.py checks that the parsers still give exactly that.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.data.prepare_coco import prepare_coco  # noqa: E402
from benchmark.data.prepare_pascal import prepare_pascal  # noqa: E402
from benchmark.data.synth import synth_dataset, synth_raw_roots  # noqa: E402
from tests.spec_snapshot import snapshot  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "spec_snapshot.json"


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix=".spec-snapshot-", dir=ROOT))
    try:
        synth_dataset("pascal", scratch / "raw-pascal", seed=0, progress=False)
        roots = synth_raw_roots("pascal", scratch / "raw-pascal")
        prepare_pascal(roots["voc"], roots["sbd"], scratch / "pascal", workers=1, progress=False)
        synth_dataset("coco", scratch / "raw-coco", seed=0, progress=False)
        prepare_coco(scratch / "raw-coco", scratch / "coco", workers=1, progress=False)
        form = snapshot(scratch / "pascal", scratch / "coco")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(form, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE.relative_to(ROOT)}: {len(form)} files")


if __name__ == "__main__":
    main()
