"""The training decode and resize against PIL's (what the reference pipelines run)."""
import io

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
  from mimjax import methods  # pylint: disable=g-import-not-at-top
  from tests.helpers import data_config  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)
  data = tf.io.encode_png(image)
  seed = tf.constant([1, 2], tf.int64)
  lut = methods.get('lut')
  exact = lut.augment(data_config(image_size=32))(data, seed)['view1'].numpy()
  fast = lut.augment(data_config(image_size=32, fast_resize=True))(data, seed)
  # Resize(32) of noise: antialiasing averages it, the plain kernel keeps its spread.
  assert exact.std() < 0.7 * fast['view1'].numpy().std()


@pytest.mark.parametrize('shape,size', [((375, 500, 3), (224, 224)), ((60, 90, 3), (36, 54)),
                                        ((7, 1, 3), (3, 9)), ((40, 56, 1), (80, 28))])
def test_antialiased_resize_is_tf_image_resize_bit_for_bit(shape, size):
  # Shrinking, both ways, upsampling, one-pixel sides, one channel.
  image = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
  expected = tf.image.resize(image, size, 'bicubic', antialias=True).numpy()
  np.testing.assert_array_equal(augment.resize(tf.constant(image), *size).numpy(), expected)


def _jpeg(image):
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, 'JPEG', quality=90)
  return buf.getvalue()


def test_jpeg_decodes_are_pils_bit_for_bit(photos):
  data = _jpeg(photos[1])
  pil = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
  np.testing.assert_array_equal(augment.decode(tf.constant(data)).numpy(), pil)
  window = tf.constant([13, 27, 200, 301])  # not on 8 x 8 block edges
  cropped = augment.decode_and_crop(tf.constant(data), lambda hw: window).numpy()
  # libjpeg's cropped decode may round chroma differently at the window's edge (measured: 0.07%
  # of the values, by at most 5).
  difference = np.abs(cropped.astype(int) - pil[13:213, 27:328])
  assert np.mean(difference > 0) < 0.005 and difference.max() <= 8


def test_mae_view_matches_torchvision_on_pil(photos):
  """The MAE view against torchvision's steps on a full PIL decode: the same window, PIL's
  bicubic from the box, flipped or not."""
  for i, image in enumerate(photos[:4]):
    data = _jpeg(image)
    pil = Image.open(io.BytesIO(data)).convert('RGB')
    seed = tf.constant([5, i], tf.int64)
    y, x, h, w = augment.random_resized_crop_window(
        tf.constant([pil.height, pil.width]), augment.split_seed(seed, 2)[0]).numpy()
    expected = np.asarray(pil.resize((224, 224), Image.Resampling.BICUBIC,
                                     box=(x, y, x + w, y + h)), np.float64)
    ours = augment.mae_train(tf.constant(data), seed, 224).numpy()
    error = min(np.abs(ours - expected).mean(), np.abs(ours - expected[:, ::-1]).mean())
    assert error < 0.5, (i, error)  # measured: at most 0.21 (1.03 with TF's default IDCT)
