"""Augmentation invariants: windows, shapes, dtypes, colours, determinism."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mimjax.data import augment as A

from tests.helpers import smooth_image


def seed(i):
  return tf.constant([7, i], tf.int64)


def encode(array, fmt='JPEG', **kw):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, fmt, **kw)
  return tf.constant(buf.getvalue())


@pytest.fixture(scope='module')
def photo():
  return smooth_image(np.random.default_rng(3), 60, 90)


def test_random_resized_crop_window_follows_torchvision():
  h, w = 300, 400
  areas, ratios = [], []
  for i in range(300):
    y, x, ch, cw = A.random_resized_crop_window(tf.constant([h, w]), seed(i)).numpy()
    assert 0 <= y and y + ch <= h and 0 <= x and x + cw <= w
    areas.append(ch * cw / (h * w))
    ratios.append(cw / ch)
  # round() of the sides lets the area and ratio step a little out of their ranges.
  assert 0.2 - 0.01 <= min(areas) and max(areas) <= 1.0
  assert 3 / 4 - 0.01 <= min(ratios) and max(ratios) <= 4 / 3 + 0.01
  assert max(areas) - min(areas) > 0.6  # the scale range is really explored
  # Log-uniform ratio: about as many crops are wider than tall as the reverse.
  assert 0.35 < np.mean(np.array(ratios) > 1) < 0.65


def test_random_resized_crop_falls_back_to_clamped_centre_crop():
  # No (area >= 0.2, ratio <= 4/3) crop fits in a 10 x 1000 strip: the fallback is the whole
  # height, width clamped to ratio 4/3, centred (torchvision's behaviour).
  for i in range(3):
    window = A.random_resized_crop_window(tf.constant([10, 1000]), seed(i)).numpy()
    np.testing.assert_array_equal(window, [0, (1000 - 13) // 2, 10, 13])
  window = A.random_resized_crop_window(tf.constant([1000, 10]), seed(0)).numpy()
  np.testing.assert_array_equal(window, [(1000 - 13) // 2, 0, 13, 10])


def test_decode_and_crop_matches_decode_then_slice(photo):
  def window_fn(hw):
    del hw
    return tf.constant([5, 7, 30, 50])
  for data in (encode(photo, quality=95), encode(photo, 'PNG')):
    cropped = A.decode_and_crop(data, window_fn).numpy().astype(int)
    full = A.decode(data).numpy()[5:35, 7:57].astype(int)
    assert cropped.shape == (30, 50, 3)
    # libjpeg's cropped decode may round chroma differently at the window's edge.
    assert np.abs(cropped - full).mean() < 0.1 and np.abs(cropped - full).max() <= 8


def test_mae_train_shapes_determinism_and_flip(photo):
  data = encode(photo, quality=95)
  outs = [A.mae_train(data, seed(i), 32).numpy() for i in range(12)]
  for out in outs:
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(A.mae_train(data, seed(0), 32).numpy(), outs[0])
  assert len({o.tobytes() for o in outs}) == len(outs)
  # Grayscale and PNG sources are RGB too.
  gray = encode(photo.mean(-1).astype(np.uint8), 'PNG')
  out = A.mae_train(gray, seed(0), 16).numpy()
  assert out.shape == (16, 16, 3) and (out[..., 0] == out[..., 1]).all()


def test_random_flip_flips_about_half_the_time(photo):
  image = tf.constant(photo)
  flips = [not np.array_equal(A.random_flip(image, seed(i)).numpy(), photo) for i in range(200)]
  assert 0.35 < np.mean(flips) < 0.65


def test_random_crop_flip_equals_reflect_pad_crop_flip():
  size, pad = 32, A.LUT_PADDING
  image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
  padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode='reflect')
  xs, ys = [], []
  for i in range(60):
    s_crop, _ = A.split_seed(seed(i), 2)
    y, x = A.random_crop_window(tf.constant([32, 48]), size, s_crop).numpy()
    ys.append(y)
    xs.append(x)
    crop = padded[y:y + size, x:x + size]
    view = A.random_crop_flip(tf.constant(image), size, seed(i)).numpy()
    assert np.array_equal(view, crop) or np.array_equal(view, crop[:, ::-1])
  # The window slides along the long side (x in [0, 48 + 8 - 32]) and jitters by the padding.
  assert max(ys) <= 2 * pad and max(xs) > 2 * pad and max(xs) <= 48 + 2 * pad - size


def test_shorter_side_resize_follows_torchvision():
  for (h, w), expected in [((375, 500), (224, 298)), ((500, 375), (298, 224)), ((7, 7), (224, 224))]:
    nh, nw = A.shorter_side_size(tf.constant([h, w]), 224)
    assert (int(nh), int(nw)) == expected


def _triples(image):
  return set(map(tuple, np.asarray(image).reshape(-1, 3).tolist()))


def test_lut_view1_is_a_rearrangement_and_view2_changes_colours(photo):
  data = encode(photo, quality=95)
  resized = A.to_uint8(A.resize_shorter(A.decode(data), 32)).numpy()
  source_colours = _triples(resized)
  changed = 0
  for i in range(10):
    view1, view2 = (v.numpy() for v in A.lut_train(data, seed(i), 32))
    assert view1.shape == view2.shape == (32, 32, 3)
    assert view1.dtype == view2.dtype == np.uint8
    # Crop, reflect padding and flip move pixels: every colour of view 1 is a source colour.
    assert _triples(view1) <= source_colours
    changed += not _triples(view2) <= source_colours
  assert changed >= 8  # jitter (p=0.8) and gray / solarize / blur alter colours


def test_one_of_gray_solarize_blur_branches(photo):
  image = tf.constant(photo, tf.float32)
  kinds = set()
  for i in range(30):
    out = A.one_of_gray_solarize_blur(image, seed(i)).numpy()
    if (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all():
      kinds.add('gray')
    elif np.array_equal(out, np.where(photo >= 128, 255.0 - photo, photo)):
      kinds.add('solarize')
    else:
      # A Gaussian blur keeps the mean and smooths the image.
      assert abs(out.mean() - photo.mean()) < 1.0
      assert np.abs(np.diff(out, axis=1)).mean() < np.abs(np.diff(photo.astype(float), axis=1)).mean()
      kinds.add('blur')
  assert kinds == {'gray', 'solarize', 'blur'}


def test_gaussian_blur_is_a_normalized_gaussian():
  image = np.zeros((31, 31, 3), np.float32)
  image[15, 15] = 1.0
  out = A.gaussian_blur(tf.constant(image), 1.5).numpy()
  np.testing.assert_allclose(out.sum((0, 1)), 1.0, rtol=1e-5)
  x = np.arange(-6, 7)
  g = np.exp(-0.5 * (x / 1.5) ** 2)
  np.testing.assert_allclose(out[15, 9:22, 0], g / g.sum() * (g / g.sum())[6], rtol=1e-4)


def test_color_jitter_ranges(photo):
  image = tf.constant(photo / 255.0, tf.float32)
  for i in range(10):
    # Brightness alone: a factor in [0.6, 1.4] (clipped at 1).
    out = A.color_jitter(image, seed(i), contrast=0.0, saturation=0.0, hue=0.0).numpy()
    dark = photo > 10
    factor = np.median(out[dark & (out < 0.99)] / (photo[dark & (out < 0.99)] / 255.0))
    assert 0.6 - 1e-3 <= factor <= 1.4 + 1e-3
    full = A.color_jitter(image, seed(i)).numpy()
    assert full.min() >= 0.0 and full.max() <= 1.0
  np.testing.assert_array_equal(A.color_jitter(image, seed(1)).numpy(),
                                A.color_jitter(image, seed(1)).numpy())


def test_eval_image_resizes_shorter_side_then_centre_crops(photo):
  data = encode(photo, 'PNG')  # 60 x 90: shorter side -> int(32 / 0.875) = 36, long -> 54
  out = A.eval_image(data, 32, 0.875).numpy()
  resized = tf.image.resize(photo, [36, 54], 'bicubic', antialias=True).numpy()
  expected = np.clip(np.round(resized), 0, 255).astype(np.uint8)[2:34, 11:43]
  np.testing.assert_array_equal(out, expected)
