"""The launch tests' reference run (the storage emulator, `gcs`, is in tests/conftest.py: the TPU
sweep's tests use it too)."""
import pytest

from mimjax import train
from tests import helpers


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """The losses of an uninterrupted one-process local run, for every run here to match."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  train.train(helpers.tiny_config("mae", **helpers.STEPS), workdir)
  return workdir
