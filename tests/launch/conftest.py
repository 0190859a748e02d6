"""A storage emulator for the whole session, its environment set for this process and children."""
import os

import pytest

from tests.launch import gcs_emulator


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
