"""Screenshots of a report's Episodes view for the README, in headless Chromium (tests/cdp.py).

    python -m tests.explorer_screenshots PAGE.html OUT_DIR [--sort v0] [--row 3] [--shot 5]

writes ``OUT_DIR/episodes-table.png`` (the controls and the first rows, sorted by the column
``--sort``, descending) and ``OUT_DIR/episodes-detail.png`` (the detail panel of row ``--row`` of
that order), each quantised to a 128-colour palette to stay small.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from tests.cdp import Browser


def _shrink(path: Path, max_height: int) -> None:
    im = Image.open(path).convert("RGB")
    if im.height > max_height:
        im = im.crop((0, 0, im.width, max_height))
    im.quantize(colors=128).save(path, optimize=True)


def screenshots(
    page: Path, out: Path, sort: str = "v0", row: int = 0, shot: str = "", exe: str | None = None
) -> list[Path]:
    """The two PNGs of ``page``'s Episodes view, written under ``out`` (the detail of row ``row``
    once the table is filtered to ``shot`` shots, when given)."""
    exe = exe or shutil.which("chromium") or "chromium"
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="fssbench-shots-") as profile,
        Browser(exe, Path(profile), 1200, 900) as b,
    ):
        b.open(Path(page).resolve().as_uri())
        b.wait_for("document.querySelectorAll('#ep-tbody tr').length > 0")
        for _ in range(2):  # ascending, then descending
            b.eval(f"document.querySelector('th[data-key={sort}]').click()")
        table = b.screenshot(out / "episodes-table.png", "#ep-view")
        _shrink(table, 620)
        if shot:
            b.eval(
                f"(() => {{ const e = document.getElementById('ep-f-shot'); e.value = '{shot}';"
                " e.dispatchEvent(new Event('change')); })()"
            )
        b.eval(f"document.querySelectorAll('#ep-tbody tr')[{row}].click()")
        b.wait_for("document.getElementById('ep-detail').dataset.ready === '1'")
        detail = b.screenshot(out / "episodes-detail.png", "#ep-detail")
        _shrink(detail, 900)
    return [table, detail]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--sort", default="v0", help="column key to sort by, descending (default v0)")
    ap.add_argument("--row", type=int, default=0, help="row (in that order) whose detail is shown")
    ap.add_argument("--shot", default="", help="filter to this many shots before picking the row")
    args = ap.parse_args()
    for p in screenshots(args.page, args.out, args.sort, args.row, args.shot):
        print(p, p.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
