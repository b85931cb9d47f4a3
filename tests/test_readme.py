"""The README's Quickstart and Python API example are what CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_quickstart_is_exactly_two_commands():
    block = re.search(r"## Quickstart\n\n```bash\n(.*?)```", README, re.S)
    assert block is not None
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) == 2
    assert lines[0].endswith("fssbench demo") and lines[1].endswith("python -m pytest")
    ci = (Path(__file__).resolve().parents[1] / ".ci/run").read_text()
    assert "Quickstart" in ci  # .ci/run executes that second line


def test_python_api_example_runs():
    block = re.search(r"### Python API\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    exec(compile(block.group(1), "README.md", "exec"), {})
