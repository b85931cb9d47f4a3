"""Moved to :mod:`benchmark.records.tracking`; this alias stays while ``benchmark/cli.py`` imports it."""

from benchmark.records.tracking import *  # noqa: F403
from benchmark.records.tracking import check_tracking_uri, default_tracking_uri  # noqa: F401
