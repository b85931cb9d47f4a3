"""The demo runs end to end and its report agrees with its own per-episode tables."""

from __future__ import annotations

import pandas as pd

from benchmark.demo import run_demo
from benchmark.metrics import miou


def test_demo_end_to_end(tmp_path, capsys):
    report = run_demo(tmp_path / "demo", episodes=12, progress=False)
    text = report.read_text()
    assert "Synthetic data and model-free reference predictors" in text
    for shot in (1, 5):
        table = pd.read_csv(tmp_path / "demo" / "report" / f"episodes-mean-colour-{shot}shot.csv")
        assert len(table) == 12
        value = 100 * miou(table, [1, 2, 3, 4, 5])
        assert f"| mean-colour    |      {shot} |   {value:4.1f} |" in text
    out = capsys.readouterr().out
    assert "report written to" in out
    # a second run reuses the generated data
    run_demo(tmp_path / "demo", episodes=12, progress=False)
    assert "reusing prepared data" in capsys.readouterr().out
