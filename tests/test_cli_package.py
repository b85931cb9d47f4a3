"""The CLI package's seams: every command module is composed into the parser, and each command's
parser runs that module's own function."""

import argparse
import pkgutil
import subprocess
import sys

import benchmark.cli
from benchmark.cli import build_parser
from benchmark.cli.common import HelpWithDefaults
from benchmark.cli.entry import COMMANDS

SHARED = {"common", "entry", "guards", "study_options", "__main__"}


def leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) for every parser that runs a command (has ``fn``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from leaf_parsers(sub, (*path, name))
    if "fn" in parser._defaults:
        yield path, parser


def test_every_command_module_is_composed_into_the_parser():
    found = {m.name for m in pkgutil.iter_modules(benchmark.cli.__path__)} - SHARED
    assert {m.__name__.rsplit(".", 1)[1] for m in COMMANDS} == found


def test_each_command_runs_the_function_of_the_module_that_declares_it():
    for module in COMMANDS:
        parser = argparse.ArgumentParser()
        module.add_parser(parser.add_subparsers())
        leaves = list(leaf_parsers(parser))
        assert leaves, module.__name__
        for path, leaf in leaves:
            assert leaf._defaults["fn"].__module__ == module.__name__, path
            assert leaf.formatter_class is HelpWithDefaults, path


def test_the_top_level_lists_the_commands_in_their_documented_order():
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(sub.choices) == [
        "data",
        "episodes",
        "run",
        "search",
        "train",
        "export",
        "cache",
        "fetch",
        "profile",
        "report",
        "compare",
        "bench-model",
        "demo",
    ]


def test_python_dash_m_runs_the_same_command_line():
    out = subprocess.run(
        [sys.executable, "-m", "benchmark.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("fssam-bench ")
