"""Moved to tests/helpers.py; this name stays only until its last importers switch."""
from tests.helpers import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import
