"""The bundled offline dataset: real photos that ship inside PyPI packages.

`offline_photos` is made, with no network, from the sample photos in the scikit-image wheel
(`skimage/data/*`: astronaut, chelsea, coffee, rocket, the Hubble deep field, ...) and in
scikit-learn (`sklearn/datasets/images`: china, flower). The grayscale ones (camera, coins, moon,
...) are converted to RGB. Each of the 20 photos gives 8 fixed crops (the whole photo, a centre
crop, four corner crops, a wide and a tall strip), each resized so its shorter side is at most
256 px, and saved as a quality-90 RGB JPEG under `<cache>/offline_photos/v1/<photo>/<crop>.jpg`:
160 images in 20 classes (one class per source photo, so a kNN probe has something to find).

The folder is built once, into a temporary sibling that is renamed into place (safe when several
processes build it at the same time), and then read like any folder dataset. The cache root is
`config.cache_dir`, else `$MIMJAX_CACHE_DIR`, else `~/.cache/mimjax`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator

import numpy as np

VERSION = 'v1'
MAX_SHORT_SIDE = 256

# (file, package): packages ship these files in their wheels, so no download is ever needed.
_PHOTOS = (
    ('astronaut.png', 'skimage'), ('chelsea.png', 'skimage'), ('coffee.png', 'skimage'),
    ('rocket.jpg', 'skimage'), ('hubble_deep_field.jpg', 'skimage'), ('ihc.png', 'skimage'),
    ('motorcycle_left.png', 'skimage'), ('retina.jpg', 'skimage'),
    ('camera.png', 'skimage'), ('coins.png', 'skimage'), ('moon.png', 'skimage'),
    ('page.png', 'skimage'), ('text.png', 'skimage'), ('brick.png', 'skimage'),
    ('grass.png', 'skimage'), ('gravel.png', 'skimage'), ('cell.png', 'skimage'),
    ('clock_motion.png', 'skimage'),
    ('china.jpg', 'sklearn'), ('flower.jpg', 'sklearn'),
)

# Fixed crops as (left, top, right, bottom) fractions of the photo.
_CROPS = (
    ('full', (0.0, 0.0, 1.0, 1.0)),
    ('centre', (0.15, 0.15, 0.85, 0.85)),
    ('top_left', (0.0, 0.0, 0.6, 0.6)),
    ('top_right', (0.4, 0.0, 1.0, 0.6)),
    ('bottom_left', (0.0, 0.4, 0.6, 1.0)),
    ('bottom_right', (0.4, 0.4, 1.0, 1.0)),
    ('wide', (0.0, 0.2, 1.0, 0.8)),
    ('tall', (0.2, 0.0, 0.8, 1.0)),
)


def _package_dir(package: str) -> str:
  if package == 'skimage':
    import skimage.data  # pylint: disable=g-import-not-at-top
    return os.path.dirname(skimage.data.__file__)
  import sklearn.datasets  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(sklearn.datasets.__file__), 'images')


def iter_photos() -> Iterator[tuple[str, np.ndarray]]:
  """Yields (name, uint8 RGB array) for each bundled photo found in the installed packages.

  Files are read directly from the packages (not through `skimage.data.<name>()`, which may try
  to download the images it does not ship).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for filename, package in _PHOTOS:
    path = os.path.join(_package_dir(package), filename)
    if not os.path.exists(path):  # another package version may not ship it
      continue
    with Image.open(path) as im:
      yield os.path.splitext(filename)[0], np.asarray(im.convert('RGB'))


def cache_root(cache_dir: str = '') -> str:
  return os.path.expanduser(
      cache_dir or os.environ.get('MIMJAX_CACHE_DIR') or os.path.join('~', '.cache', 'mimjax'))


def dataset_dir(cache_dir: str = '') -> str:
  return os.path.join(cache_root(cache_dir), 'offline_photos', VERSION)


def _write_crops(out_dir: str) -> int:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  count = 0
  for name, photo in iter_photos():
    h, w = photo.shape[:2]
    os.makedirs(os.path.join(out_dir, name))
    for crop_name, (l, t, r, b) in _CROPS:
      crop = Image.fromarray(photo[round(t * h):round(b * h), round(l * w):round(r * w)])
      scale = MAX_SHORT_SIDE / min(crop.size)
      if scale < 1:
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)),
                           Image.Resampling.LANCZOS)
      crop.save(os.path.join(out_dir, name, crop_name + '.jpg'), quality=90)
      count += 1
  return count


def build_once(final: str, write) -> str:
  """Makes the folder `final` with `write(tmp_dir)` unless it exists; atomic, so that readers
  (and other processes building it at the same time) never see a half-built folder."""
  if os.path.isdir(final):
    return final
  parent = os.path.dirname(final)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.building-', dir=parent)
  try:
    write(tmp)
    try:
      os.rename(tmp, final)
    except OSError:
      if not os.path.isdir(final):  # not a lost race with another process: a real error
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return final


def build(cache_dir: str = '') -> str:
  """Builds the offline dataset if it is not cached yet; returns its folder."""
  def write(tmp):
    if _write_crops(tmp) == 0:
      raise RuntimeError('offline_photos: no bundled photo found in scikit-image/scikit-learn.')
  return build_once(dataset_dir(cache_dir), write)
