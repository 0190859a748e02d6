"""Fixtures for the data tests: small local datasets only, never a download."""
import socket
import tempfile

import numpy as np
import pytest

from mimjax.data import offline

from tests.helpers import NUM_CLASSES, TFDS_TRAIN, smooth_image, write_folder


@pytest.fixture
def no_network(monkeypatch):
  """Any attempt to open a network connection fails the test."""
  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')
  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory):
  return write_folder(str(tmp_path_factory.mktemp('folder')), np.random.default_rng(0))


@pytest.fixture(scope='session')
def offline_photos_cache(tmp_path_factory):
  """A cache dir holding the built offline dataset (built once, with the network blocked)."""
  cache = str(tmp_path_factory.mktemp('cache'))
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(socket.socket, 'connect', lambda *a: pytest.fail('network access'))
    offline.build(cache)
  return cache


@pytest.fixture(scope='session')
def tfds_data_dir(tmp_path_factory):
  """A prepared tfds dataset 'mimjax_test_photos', generated from local arrays.

  Splits: train (40 images), test (10), corrupt (12 records, record 5 is not an image); 4 files
  each, so that file shuffling and even_splits across files are exercised.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  images = [smooth_image(rng, 40 + 8 * (i % 3), 56 - 8 * (i % 2)) for i in range(TFDS_TRAIN)]
  bad = str(tmp_path_factory.mktemp('bad') / 'bad.jpg')
  with open(bad, 'wb') as f:
    f.write(b'\xff\xd8\xff\xe0 this is not a jpeg' * 4)

  class MimjaxTestPhotos(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')
    pkg_dir_path = epath.Path(tempfile.mkdtemp())  # no metadata files to look for

    def _info(self):
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
          'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES)}))

    def _split_generators(self, dl_manager):
      del dl_manager
      corrupt = images[:12]
      corrupt[5] = bad  # a path: tfds stores the file's bytes as they are
      return {'train': self._generate_examples(images), 'test': self._generate_examples(images[:10]),
              'corrupt': self._generate_examples(corrupt)}

    def _generate_examples(self, items):
      for i, item in enumerate(items):
        yield i, {'image': item, 'label': i % NUM_CLASSES}

  data_dir = str(tmp_path_factory.mktemp('tfds'))
  builder = tfds.builder('mimjax_test_photos', data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False, num_shards=4))
  return data_dir
