"""Shared test setup: a private offline-dataset cache and tiny trainer configs."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# libtpu (the `tpu` extra, for mimjax-compile) would otherwise probe for TPU hosts in every test
# process and its subprocesses; tests that compile for TPU slices describe them explicitly.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session", autouse=True)
def offline_cache(tmp_path_factory):
  """Builds the bundled photo dataset once per session, away from the user's cache."""
  path = os.environ.setdefault("MIMJAX_CACHE_DIR", str(tmp_path_factory.mktemp("mimjax_cache")))
  return path
