"""RandAugment's ops against PIL on a bundled photo, and the policy's draws."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from mimjax.data import offline
from mimjax.data import randaugment as RA


@pytest.fixture(scope='module')
def photo():
  name, image = next(iter(offline.iter_photos()))
  del name
  return np.asarray(Image.fromarray(image).resize((48, 40), Image.Resampling.BICUBIC))


def _ours(op, photo, m=9.0, sign=1.0):
  return op(tf.constant(photo), tf.constant(m), tf.constant(sign)).numpy().astype(np.int32)


def test_pixel_ops_equal_pil(photo):
  pil = Image.fromarray(photo)
  m = 9.0  # timm's levels at magnitude 9: bits 1, threshold 26, add 99, factor 1 +- 0.81
  exact = {
      RA.invert: ImageOps.invert(pil),
      RA.auto_contrast: ImageOps.autocontrast(pil),
      RA.equalize: ImageOps.equalize(pil),
      RA.posterize: ImageOps.posterize(pil, 1),
      RA.solarize: ImageOps.solarize(pil, 256 - int(m / 10 * 256)),
  }
  for op, expected in exact.items():
    np.testing.assert_array_equal(_ours(lambda x, m, s: op(x, m), photo), np.asarray(expected),
                                  err_msg=op.__name__)
  add = int(m / 10 * 110)
  lut = [min(255, i + add) if i < 128 else i for i in range(256)]
  np.testing.assert_array_equal(_ours(lambda x, m, s: RA.solarize_add(x, m), photo),
                                np.asarray(pil.point(lut * 3)))
  for op, enhance in ((RA.color, ImageEnhance.Color), (RA.contrast, ImageEnhance.Contrast),
                      (RA.brightness, ImageEnhance.Brightness),
                      (RA.sharpness, ImageEnhance.Sharpness)):
    for sign in (1.0, -1.0):
      expected = np.asarray(enhance(pil).enhance(1 + sign * 0.81)).astype(np.int32)
      diff = np.abs(_ours(op, photo, m, sign) - expected)
      # PIL blends in fixed point: off by one grey level at most, and rarely.
      assert diff.max() <= 1 and diff.mean() < 0.05, (op.__name__, sign, diff.max())


def test_geometric_ops_move_pixels_as_pil(photo):
  pil = Image.fromarray(photo)
  fill = RA.FILL
  cases = [
      (RA.rotate, pil.rotate(27.0, resample=Image.Resampling.BILINEAR, fillcolor=fill)),
      (RA.shear_x, pil.transform(pil.size, Image.Transform.AFFINE, (1, 0.27, 0, 0, 1, 0),
                                 Image.Resampling.BILINEAR, fillcolor=fill)),
      (RA.translate_y, pil.transform(pil.size, Image.Transform.AFFINE,
                                     (1, 0, 0, 0, 1, 0.405 * 40), Image.Resampling.BILINEAR,
                                     fillcolor=fill)),
  ]
  for op, expected in cases:
    diff = np.abs(_ours(op, photo) - np.asarray(expected).astype(np.int32))
    # The same geometry: sub-pixel sampling conventions differ, edges and fill agree.
    assert np.median(diff) <= 6 and diff.mean() < 12, (op.__name__, diff.mean())


def test_policy_is_deterministic_and_changes_images(photo):
  image = tf.constant(photo)
  outs = [RA.rand_augment(image, tf.constant([3, i], tf.int64)).numpy() for i in range(24)]
  again = RA.rand_augment(image, tf.constant([3, 0], tf.int64)).numpy()
  np.testing.assert_array_equal(outs[0], again)
  unchanged = sum(np.array_equal(o, photo) for o in outs)
  # Each of the 2 ops is skipped with probability 0.5: about a quarter stay as they were.
  assert 1 <= unchanged <= 14
  assert all(o.dtype == np.uint8 and o.shape == photo.shape for o in outs)


def test_classify_pipeline_gives_labelled_augmented_batches(image_folder):
  from mimjax import data, methods  # pylint: disable=g-import-not-at-top
  from tests.helpers import data_config  # pylint: disable=g-import-not-at-top
  cfg = data_config(dataset='folder', folder=image_folder, randaugment=RA.RECIPE)
  it = data.make_host_iterator(cfg, methods.get('finetune'), seed=0, process_count=1,
                               with_ids=True)
  batch = next(it)
  assert batch['image'].shape == (8, 32, 32, 3) and batch['image'].dtype == np.uint8
  # Labels are the class subfolders of the files.
  names = [n.decode() for n in batch['name']]
  assert [int(n.split('class_')[1][0]) for n in names] == list(batch['label'])
  with pytest.raises(data.DataConfigError, match='randaugment'):
    data.validate_config(data_config(dataset='folder', folder=image_folder, randaugment='rand-m9'),
                         True)
