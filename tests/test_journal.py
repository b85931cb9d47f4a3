"""The cell journal: durable rows, torn and foreign lines cut (never a crash), other cells reset."""

from __future__ import annotations

import json

import pytest

from benchmark.evaluation.journal import CellJournal

HEADER = {"cell_key": "k" * 64, "manifest_sha256": "m" * 64}
EXPECTED = {0: 3, 1: 5, 2: 3, 3: 4}  # episode id -> class, as a manifest says


def row(ep: int, cls: int | None = None, i_fg: int = 2, u_fg: int = 5) -> dict[str, int]:
    return {
        "episode": ep,
        "class": EXPECTED[ep] if cls is None else cls,
        "I_bg": 7,
        "U_bg": 9,
        "I_fg": i_fg,
        "U_fg": u_fg,
    }


def lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_rows_survive_reopen_and_table_is_sorted(tmp_path):
    path = tmp_path / "j.jsonl"
    with CellJournal(path, HEADER, EXPECTED) as j:
        j.append(row(2))
        j.append(row(0))
    assert json.loads(lines(path)[0]) == {"journal": HEADER}
    j2 = CellJournal(path, HEADER, EXPECTED)
    assert sorted(j2.rows) == [0, 2] and j2.cut_lines == 0
    assert list(j2.table()["episode"]) == [0, 2]
    j2.append(row(1))
    j2.close()
    assert len(lines(path)) == 4


def test_torn_last_line_is_cut(tmp_path):
    path = tmp_path / "j.jsonl"
    with CellJournal(path, HEADER, EXPECTED) as j:
        j.append(row(0))
        j.append(row(1))
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # a kill in the middle of writing episode 1
    j = CellJournal(path, HEADER, EXPECTED)
    assert sorted(j.rows) == [0] and j.cut_lines == 1
    j.append(row(1))
    j.close()
    assert [json.loads(x).get("episode") for x in lines(path)[1:]] == [0, 1]


@pytest.mark.parametrize(
    "foreign",
    [
        "not json at all",
        json.dumps({"episode": 1, "class": 5}),  # missing counts
        json.dumps(row(1, cls=9)),  # class disagrees with the manifest
        json.dumps({**row(1), "episode": 77}),  # not an episode of this manifest
        json.dumps(row(1, i_fg=6, u_fg=5)),  # intersection larger than union
        json.dumps(row(0)),  # a duplicate of an episode already recorded
        json.dumps([1, 2, 3]),
    ],
)
def test_a_foreign_line_and_everything_after_it_is_cut(tmp_path, foreign):
    path = tmp_path / "j.jsonl"
    with CellJournal(path, HEADER, EXPECTED) as j:
        j.append(row(0))
    with open(path, "a") as f:
        f.write(foreign + "\n")
        f.write(json.dumps(row(2), sort_keys=True) + "\n")
    j = CellJournal(path, HEADER, EXPECTED)
    assert sorted(j.rows) == [0] and j.cut_lines == 2
    j.close()
    assert len(lines(path)) == 2  # header + episode 0: the file itself was cut


def test_a_journal_of_another_cell_starts_afresh(tmp_path):
    path = tmp_path / "j.jsonl"
    with CellJournal(path, {**HEADER, "cell_key": "other"}, EXPECTED) as j:
        j.append(row(0))
    j = CellJournal(path, HEADER, EXPECTED)
    assert j.rows == {}
    j.close()
    assert lines(path) == [json.dumps({"journal": HEADER}, sort_keys=True)]
    path.write_text('{"episode": 0}\n')  # no header at all (an older or foreign file)
    assert CellJournal(path, HEADER, EXPECTED).rows == {}
