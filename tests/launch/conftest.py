"""A storage emulator for the whole session, its environment set for this process and children."""
import os

import pytest

from mimjax import train
from tests import trainer_utils as tu
from tests.launch import gcs_emulator
from tests.launch import launch_utils


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
  """The running emulator; `gs://{gcs_emulator.BUCKET}/...` paths work in and out of process."""
  emulator = gcs_emulator.Emulator(str(tmp_path_factory.mktemp("gcs")))
  emulator.start()
  saved = {k: os.environ.get(k) for k in emulator.env()}
  os.environ.update(emulator.env())
  yield emulator
  emulator.stop()
  for key, value in saved.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """The losses of an uninterrupted one-process local run, for every run here to match."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  train.train(tu.tiny_config("mae", **launch_utils.STEPS), workdir)
  return workdir
