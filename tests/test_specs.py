"""The shared pieces of benchmark/specs/: field types, unknown keys, and how a schema's first error
becomes the one-line message (file, field path, value; YAML line and column)."""

from __future__ import annotations

import argparse
from typing import Annotated, Any

import pytest
from pydantic import PlainValidator

from benchmark.cli.common import non_negative_float, non_negative_int, positive_float, positive_int
from benchmark.errors import FssBenchError
from benchmark.specs.errors import in_file, invalid, located, validate
from benchmark.specs.fields import Block, int_list_field, number, one_of


def _pair(value: Any) -> Any:
    if value == "inner":
        raise invalid("bad below", "deeper")
    if value == "file":
        raise in_file("other.field: named by the message")
    if value == "located":
        raise located("elsewhere.yaml: x: named in full")
    return value


class Inner(Block):
    size: Annotated[int, number("int", 1, what="a positive integer")] = 1
    ratio: Annotated[float | None, number("float", 0, high=1, nullable=True, convert=True)] = None


class Outer(Block):
    name: Annotated[str, one_of(("a", "b"), hint=True)] = "a"
    folds: Annotated[list[int], int_list_field(0, 3)] = 0
    inner: Inner = None
    pair: Annotated[Any, PlainValidator(_pair)] = None


def test_defaults_and_values_in_declared_order():
    out = validate(Outer, {"folds": [1, 1, 2], "inner": {"ratio": 0}}, "f.yaml")
    assert out.values() == {"name": "a", "folds": [1, 2], "inner": {"size": 1, "ratio": 0.0}, "pair": None}
    assert isinstance(out.values()["inner"]["ratio"], float)  # convert=True
    assert validate(Outer, None, "f.yaml").values()["inner"] == {"size": 1, "ratio": None}  # null: defaults


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"nme": "a"},
            "f.yaml: nme: unknown field (did you mean 'name'?); known: ['name', 'folds', 'inner', 'pair']",
        ),
        ({"zz": 1, "aa": 2}, "f.yaml: zz: unknown field (and ['aa']); known:"),
        ({"inner": {"sise": 2}}, "f.yaml: inner.sise: unknown field (did you mean 'size'?)"),
        ({"inner": 3}, "f.yaml: inner: expected a mapping with fields ['size', 'ratio']"),
        ({"name": "c"}, "f.yaml: name: 'c' is not one of ['a', 'b']"),
        ({"name": "bb"}, "f.yaml: name: 'bb' is not one of ['a', 'b'] (did you mean 'b'?)"),
        ({"name": ["a"]}, "f.yaml: name: ['a'] is not one of ['a', 'b']"),  # unhashable: a message too
        ({"folds": [4]}, "f.yaml: folds: 4 is out of range: each must be in 0..3"),
        ({"folds": []}, "f.yaml: folds: expected a non-empty list of integers, got []"),
        ({"inner": {"size": 0}}, "f.yaml: inner.size: expected a positive integer, got 0"),
        ({"inner": {"size": True}}, "f.yaml: inner.size: expected a positive integer, got True"),
        ({"inner": {"ratio": 1}}, "f.yaml: inner.ratio: expected a number >= 0 or null, got 1"),
        ({"pair": "inner"}, "f.yaml: pair.deeper: bad below"),
        ({"pair": "file"}, "f.yaml: other.field: named by the message"),
        ({"pair": "located"}, "elsewhere.yaml: x: named in full"),
        ({"name": "c", "inner": {"size": 0}}, "f.yaml: name: "),  # the first field in order
    ],
)
def test_the_first_error_names_the_file_the_field_and_the_value(raw, message):
    with pytest.raises(FssBenchError) as e:
        validate(Outer, raw, "f.yaml")
    assert str(e.value).startswith(message), str(e.value)


def test_every_file_kind_names_the_line_and_column_of_a_yaml_error(tmp_path):
    from benchmark.specs.search import load_search
    from benchmark.specs.study import load_study
    from benchmark.specs.train import load_train

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {pascal: [\n")
    for load in (load_study, load_search, load_train):
        with pytest.raises(FssBenchError, match=rf"^{bad}:3:1: not valid YAML: .*line and column$"):
            load(bad)


@pytest.mark.parametrize(
    ("parse", "text", "said"),
    [
        (positive_int, "0", "expected a positive integer, got 0"),
        (positive_int, "x", "expected a positive integer, got 'x'"),
        (non_negative_int, "-1", "expected an integer >= 0, got -1"),
        (non_negative_int, "1.5", "expected an integer, got '1.5'"),
        (non_negative_float, "nan", "expected a number >= 0, got nan"),
        (positive_float, "-1", "expected a number >= 0, got -1"),
        (positive_float, "0", "expected a number > 0, got 0"),
    ],
)
def test_command_line_numbers_say_what_they_expected(parse, text, said):
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{said}$".replace("(", r"\(").replace(")", r"\)")):
        parse(text)


def test_command_line_numbers_keep_their_type():
    assert positive_int("3") == 3 and isinstance(positive_int("3"), int)
    assert non_negative_int("0") == 0 and non_negative_float("0") == 0.0
    assert positive_float("2.5") == 2.5 and isinstance(non_negative_float("1"), float)


def test_each_file_lists_exactly_its_fields():
    from benchmark.specs.search import SearchFile
    from benchmark.specs.study import StudyFile
    from benchmark.specs.train import TrainFile

    assert set(StudyFile.known) == set(StudyFile.model_fields)
    assert set(TrainFile.known) == set(TrainFile.model_fields)
    assert set(SearchFile.known) == set(SearchFile.model_fields) - {"base"}  # the parsed study: not a key
