"""Shared test setup: a private offline-dataset cache, the XLA cache, the storage emulator."""
import atexit
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# libtpu (the `tpu` extra, for mimjax-compile) would otherwise probe for TPU hosts in every test
# process and its subprocesses; tests that compile for TPU slices describe them explicitly.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One XLA compilation cache for this process (a pytest-xdist worker under `make test`) and its
# subprocesses: the suite starts dozens of trainers of the same tiny configs, which would
# otherwise compile the same steps anew. Private to the process (made here, removed at exit), so
# no entry outlives the code it came from.
_XLA_CACHE = tempfile.mkdtemp(prefix="mimjax_test_xla_cache_")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.update(JAX_COMPILATION_CACHE_DIR=_XLA_CACHE,
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
# After the environment above: jax reads it when first imported (mimjax.tf_env imports it).
from mimjax import tf_env  # pylint: disable=unused-import,wrong-import-position  (as the CLIs)
from tests import gcs_emulator  # pylint: disable=wrong-import-position
from tests import helpers  # pylint: disable=wrong-import-position


@pytest.fixture(scope="session", autouse=True)
def offline_cache(tmp_path_factory):
  """Builds the bundled photo dataset once per session, away from the user's cache."""
  path = os.environ.setdefault("MIMJAX_CACHE_DIR", str(tmp_path_factory.mktemp("mimjax_cache")))
  return path


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
  """A Cloud Storage emulator for the whole session (launch, storage and TPU-sweep tests), its
  environment set for this process and children: `gs://{gcs_emulator.BUCKET}/...` paths work in
  and out of process."""
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
  """The losses of an uninterrupted one-process local run, for the launch and storage runs to
  match."""
  from mimjax import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("reference"))
  train.train(helpers.tiny_config("mae", **helpers.STEPS), workdir)
  return workdir
