"""The training resize against PIL's antialiased bicubic (what the reference pipelines run)."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mimjax.data import augment, offline

# (source photo side scale, output size): shrinking by 2-6x, as RandomResizedCrop to 224 does.
SIZES = [(64, 64), (96, 72), (50, 80)]


@pytest.fixture(scope='module')
def photos():
  return [image for _, image in offline.iter_photos()][:8]


def _mean_errors(photos, antialias):
  errors = []
  for image in photos:
    for h, w in SIZES:
      ours = augment.to_uint8(augment.resize(tf.constant(image), h, w, antialias)).numpy()
      pil = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC))
      errors.append(np.abs(ours.astype(np.float64) - pil).mean())
  return np.asarray(errors)


def test_antialiased_resize_matches_pil_bicubic(photos):
  errors = _mean_errors(photos, antialias=True)
  # Well under one grey level on average on every photo and size (measured: at most 0.16).
  assert errors.max() < 0.5, errors
  # The plain bicubic, the fast_resize switch, is measurably off when shrinking.
  assert _mean_errors(photos, antialias=False).mean() > 3 * errors.mean()


def test_pipelines_resize_antialiased_unless_fast_resize():
  from mimjax.data import pipeline  # pylint: disable=g-import-not-at-top
  from tests.data.datatest_helpers import make_cfg  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)
  data = tf.io.encode_png(image)
  seed = tf.constant([1, 2], tf.int64)
  exact = pipeline.augment_fn('lut', make_cfg(image_size=32))(data, seed)['view1'].numpy()
  fast = pipeline.augment_fn('lut', make_cfg(image_size=32, fast_resize=True))(data, seed)
  # Resize(32) of noise: antialiasing averages it, the plain kernel keeps its spread.
  assert exact.std() < 0.7 * fast['view1'].numpy().std()


@pytest.mark.parametrize('shape,size', [((375, 500, 3), (224, 224)), ((60, 90, 3), (36, 54)),
                                        ((7, 1, 3), (3, 9)), ((40, 56, 1), (80, 28))])
def test_antialiased_resize_is_tf_image_resize_bit_for_bit(shape, size):
  # Shrinking, both ways, upsampling, one-pixel sides, one channel.
  image = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
  expected = tf.image.resize(image, size, 'bicubic', antialias=True).numpy()
  np.testing.assert_array_equal(augment.resize(tf.constant(image), *size).numpy(), expected)
