"""RandAugment as timm's `rand-m9-mstd0.5-inc1` (MAE's and LUT's fine-tuning), in TF graph ops.

Two ops drawn with replacement from timm's 15 "increasing" ops; each is applied with probability
0.5 at a magnitude ~ N(9, 0.5) clipped to [0, 10] (drawn per op), signed ops negated with
probability 0.5. Geometric ops fill with the ImageNet mean (124, 116, 104), as timm's
create_transform passes it. Pixel ops follow PIL's ImageOps / ImageEnhance on uint8 values
(tested against PIL). Known difference: the geometric ops interpolate bilinearly where timm
asks PIL for bicubic (TF's projective transform has no bicubic mode).
Images are uint8 (H, W, 3) in and out; every draw is stateless, keyed by `seed`.
"""
from __future__ import annotations

import functools
import math
import re

from mimjax.data.tf_host import tf

MAGNITUDE = 9.0
MAGNITUDE_STD = 0.5
MAGNITUDE_MAX = 10.0
NUM_OPS = 2
OP_PROB = 0.5
FILL = (124, 116, 104)  # round(255 * ImageNet mean)
_GRAY = (0.299, 0.587, 0.114)


def _uniform(seed, shape=()):
  return tf.random.stateless_uniform(shape, seed, dtype=tf.float32)


def _lut(image, table):
  """Applies a per-channel 256-entry table (float (3, 256) or (256,)) to a uint8 image."""
  x = tf.cast(image, tf.int32)
  table = tf.cast(tf.clip_by_value(tf.round(table), 0, 255), tf.uint8)
  if table.shape.rank == 1:
    return tf.gather(table, x)
  channels = [tf.gather(table[c], x[..., c]) for c in range(3)]
  return tf.stack(channels, axis=-1)


def _gray(image):
  """PIL's convert('L'): (299 R + 587 G + 114 B) / 1000, rounded (ITU-R 601-2)."""
  x = tf.cast(image, tf.float32)
  return tf.round(_GRAY[0] * x[..., 0] + _GRAY[1] * x[..., 1] + _GRAY[2] * x[..., 2])


def _blend(image, degenerate, factor):
  """PIL ImageEnhance: degenerate + factor * (image - degenerate), clipped and truncated to
  uint8 (as PIL's Image.blend)."""
  x = tf.cast(image, tf.float32)
  out = degenerate + factor * (x - degenerate)
  return tf.cast(tf.floor(tf.clip_by_value(out, 0, 255)), tf.uint8)


# --- pixel ops (PIL ImageOps / ImageEnhance) --------------------------------------------------
def invert(image, _):
  return 255 - image


def auto_contrast(image, _):
  """Per channel: stretch [min, max] to [0, 255] (ImageOps.autocontrast, cutoff 0)."""
  x = tf.cast(image, tf.float32)
  lo = tf.reduce_min(x, axis=[0, 1])
  hi = tf.reduce_max(x, axis=[0, 1])
  scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
  offset = tf.where(hi > lo, -lo * scale, 0.0)
  levels = tf.range(256, dtype=tf.float32)[None]
  table = tf.floor(levels * scale[:, None] + offset[:, None])  # PIL: int(ix * scale + offset)
  return _lut(image, tf.clip_by_value(table, 0.0, 255.0))


def equalize(image, _):
  """Per channel histogram equalization (ImageOps.equalize)."""
  x = tf.cast(image, tf.int32)
  tables = []
  for c in range(3):
    hist = tf.math.bincount(tf.reshape(x[..., c], [-1]), minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(hist, hist > 0)
    step = (tf.reduce_sum(hist) - nonzero[-1]) // 255
    safe = tf.maximum(step, 1)
    # lut[i] = (step // 2 + sum(hist[:i])) // step
    before = tf.concat([[0], tf.cumsum(hist)[:-1]], axis=0)
    table = (safe // 2 + before) // safe
    tables.append(tf.where(step > 0, table, tf.range(256)))
  return _lut(image, tf.cast(tf.stack(tables), tf.float32))


def posterize(image, m):
  bits = 4 - tf.cast(m / MAGNITUDE_MAX * 4, tf.int32)  # PosterizeIncreasing
  shift = 8 - bits
  x = tf.cast(image, tf.int32)
  return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(x, shift), shift), tf.uint8)


def solarize(image, m):
  threshold = 256.0 - tf.floor(m / MAGNITUDE_MAX * 256)  # SolarizeIncreasing
  x = tf.cast(image, tf.float32)
  return tf.cast(tf.where(x < threshold, x, 255.0 - x), tf.uint8)


def solarize_add(image, m):
  add = tf.floor(m / MAGNITUDE_MAX * 110)
  x = tf.cast(image, tf.float32)
  return tf.cast(tf.where(x < 128, tf.minimum(x + add, 255.0), x), tf.uint8)


def _signed_factor(m, sign):
  return 1.0 + sign * m / MAGNITUDE_MAX * 0.9  # the *Increasing enhance ops


def color(image, m, sign):
  return _blend(image, _gray(image)[..., None], _signed_factor(m, sign))


def contrast(image, m, sign):
  mean = tf.floor(tf.reduce_mean(_gray(image)) + 0.5)  # PIL: int(mean + 0.5)
  return _blend(image, mean, _signed_factor(m, sign))


def brightness(image, m, sign):
  return _blend(image, 0.0, _signed_factor(m, sign))


def sharpness(image, m, sign):
  """Blend with PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13); borders unfiltered."""
  x = tf.cast(image, tf.float32)
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.round(tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], 'VALID')[0])
  degenerate = tf.pad(smooth - x[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]) + x
  return _blend(image, degenerate, _signed_factor(m, sign))


# --- geometric ops (PIL affine transforms: output (x, y) samples input (a x + b y + c, ...)) ---
def _affine(image, matrix):
  """matrix = (a, b, c, d, e, f): output pixel (x, y) reads input (a x + b y + c, d x + e y + f)."""
  transform = tf.concat([tf.stack(matrix), tf.zeros([2])], axis=0)[None]
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  x = tf.cast(image, tf.float32)
  # Fill per channel: transform image - fill with fill 0, then add fill back.
  fill = tf.constant(FILL, tf.float32)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=(x - fill)[None], transforms=transform, output_shape=tf.stack([h, w]),
      fill_value=0.0, interpolation='BILINEAR', fill_mode='CONSTANT')[0]
  return tf.cast(tf.clip_by_value(tf.round(out + fill), 0, 255), tf.uint8)


def rotate(image, m, sign):
  """PIL Image.rotate(degrees) about the centre, counter-clockwise for positive degrees."""
  angle = -sign * m / MAGNITUDE_MAX * 30.0 * math.pi / 180.0
  h = tf.cast(tf.shape(image)[0], tf.float32)
  w = tf.cast(tf.shape(image)[1], tf.float32)
  cx, cy = w / 2.0, h / 2.0
  a, b = tf.cos(angle), tf.sin(angle)
  d, e = -tf.sin(angle), tf.cos(angle)
  c = a * -cx + b * -cy + cx
  f = d * -cx + e * -cy + cy
  return _affine(image, [a, b, c, d, e, f])


def shear_x(image, m, sign):
  s = sign * m / MAGNITUDE_MAX * 0.3
  return _affine(image, [1.0, s, 0.0, 0.0, 1.0, 0.0])


def shear_y(image, m, sign):
  s = sign * m / MAGNITUDE_MAX * 0.3
  return _affine(image, [1.0, 0.0, 0.0, s, 1.0, 0.0])


def translate_x(image, m, sign):
  pixels = sign * m / MAGNITUDE_MAX * 0.45 * tf.cast(tf.shape(image)[1], tf.float32)
  return _affine(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0])


def translate_y(image, m, sign):
  pixels = sign * m / MAGNITUDE_MAX * 0.45 * tf.cast(tf.shape(image)[0], tf.float32)
  return _affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels])


_unsigned = lambda op: (lambda image, m, sign: op(image, m))
# timm's _RAND_INCREASING_TRANSFORMS, in its order.
OPS = (
    ('AutoContrast', _unsigned(auto_contrast)), ('Equalize', _unsigned(equalize)),
    ('Invert', _unsigned(invert)), ('Rotate', rotate), ('PosterizeIncreasing', _unsigned(posterize)),
    ('SolarizeIncreasing', _unsigned(solarize)), ('SolarizeAdd', _unsigned(solarize_add)),
    ('ColorIncreasing', color), ('ContrastIncreasing', contrast),
    ('BrightnessIncreasing', brightness), ('SharpnessIncreasing', sharpness),
    ('ShearX', shear_x), ('ShearY', shear_y), ('TranslateXRel', translate_x),
    ('TranslateYRel', translate_y))


def rand_augment(image, seed, num_ops: int = NUM_OPS, magnitude: float = MAGNITUDE,
                 magnitude_std: float = MAGNITUDE_STD):
  """`num_ops` ops with replacement, each with probability 0.5 at a jittered magnitude."""
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num_ops))
  for op_seed in seeds:
    s_choice, s_apply, s_mag, s_sign = tf.unstack(
        tf.random.experimental.stateless_split(op_seed, 4))
    choice = tf.cast(tf.floor(_uniform(s_choice) * len(OPS)), tf.int32)
    m = magnitude + magnitude_std * tf.random.stateless_normal((), s_mag)
    m = tf.clip_by_value(m, 0.0, MAGNITUDE_MAX)
    sign = tf.where(_uniform(s_sign) < 0.5, -1.0, 1.0)
    branches = [lambda op=op, x=image, m=m, sign=sign: op(x, m, sign) for _, op in OPS]
    image = tf.cond(_uniform(s_apply) < OP_PROB,
                    lambda b=branches, c=choice: tf.switch_case(c, b), lambda x=image: x)
    image.set_shape([None, None, 3])
  return image


RECIPE = 'rand-m9-mstd0.5-inc1'


def from_spec(spec: str):
  """timm's policy string ('rand-m9-mstd0.5-inc1', optionally '-nN') -> (image, seed) -> image.

  Raises ValueError naming the accepted form.
  """
  match = re.fullmatch(r'rand-m([\d.]+)-mstd([\d.]+)-inc1(?:-n(\d+))?', spec)
  if not match:
    raise ValueError(f'randaugment={spec!r}: use timm\'s form {RECIPE!r} (optionally -nN ops), '
                     "or '' for none")
  m, std, n = float(match.group(1)), float(match.group(2)), int(match.group(3) or NUM_OPS)
  return functools.partial(rand_augment, num_ops=n, magnitude=m, magnitude_std=std)
