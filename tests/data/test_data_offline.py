"""The bundled offline dataset builds from package files alone and loads."""
import os

import numpy as np
from PIL import Image

from mimjax import data
from mimjax.data import offline

from tests.helpers import data_config


def test_offline_photos_build_without_network(offline_photos_cache, no_network):
  root = offline.dataset_dir(offline_photos_cache)
  classes = sorted(os.listdir(root))
  assert len(classes) == 20 and 'astronaut' in classes and 'china' in classes
  files = [os.path.join(root, c, f) for c in classes for f in os.listdir(os.path.join(root, c))]
  assert len(files) == 160
  for path in files[::7]:
    with Image.open(path) as im:
      assert im.format == 'JPEG' and im.mode == 'RGB'
      assert 64 <= min(im.size) <= offline.MAX_SHORT_SIDE
  # Grayscale photos are stored as RGB with equal channels.
  camera = np.asarray(Image.open(os.path.join(root, 'camera', 'full.jpg'))).astype(int)
  assert np.abs(camera[..., 0] - camera[..., 1]).max() <= 8  # up to JPEG chroma noise
  # Cached: a second build is a no-op that returns the same folder.
  mtime = os.path.getmtime(root)
  assert offline.build(offline_photos_cache) == root and os.path.getmtime(root) == mtime
  cfg = data_config(cache_dir=offline_photos_cache)
  assert data.num_examples(cfg) == 160
  source = data.validate_config(cfg, True, 1, 1)
  assert len(source.classes) == 20 and set(source.labels) == set(range(20))


def test_cache_dir_from_env(monkeypatch, tmp_path):
  monkeypatch.setenv('MIMJAX_CACHE_DIR', str(tmp_path))
  assert offline.dataset_dir() == os.path.join(str(tmp_path), 'offline_photos', offline.VERSION)
  assert offline.dataset_dir('/elsewhere') == os.path.join('/elsewhere', 'offline_photos',
                                                            offline.VERSION)
  monkeypatch.delenv('MIMJAX_CACHE_DIR')
  assert offline.dataset_dir().startswith(os.path.expanduser('~'))


def test_digits_dataset_builds_once_with_every_image_in_its_class(tmp_path):
  from mimjax.data import digits
  folder = digits.build(str(tmp_path))
  counts = {d: len(os.listdir(os.path.join(folder, d))) for d in sorted(os.listdir(folder))}
  assert sorted(counts) == [str(i) for i in range(10)]
  assert sum(counts.values()) == 1797  # scikit-learn's digits
  assert not [p for p in os.listdir(os.path.dirname(folder)) if p.startswith(".building-")]
  stamp = os.path.getmtime(os.path.join(folder, "0"))
  assert digits.build(str(tmp_path)) == folder  # cached: not written again
  assert os.path.getmtime(os.path.join(folder, "0")) == stamp
