"""Per-example augmentations as TensorFlow graph ops, deterministic given a seed.

Every random draw is a stateless op (`tf.random.stateless_*`) keyed by a seed of shape [2];
the pipeline derives that seed from (global seed, global example position), so an example's
augmentation does not depend on threads, process count or where a run was resumed.

Semantics follow torchvision (what the MAE and LUT reference code uses on PIL images):
  * MAE: RandomResizedCrop(scale=(0.2, 1), ratio=(3/4, 4/3), bicubic) + horizontal flip.
  * LUT: per view Resize(shorter side, bicubic) -> RandomCrop(padding 4, reflect) -> flip;
    view 2 adds ColorJitter(0.4, 0.4, 0.2, 0.1) with p=0.8 (the four ops in a random order,
    as torchvision) and then one of {grayscale, solarize, Gaussian blur} chosen uniformly.
  * Eval: Resize(shorter side to size / crop_fraction, bicubic) -> CentreCrop(size).
Every resize is antialiased bicubic (Keys a=-0.5, the kernel widened when shrinking), as PIL's
bicubic that the reference pipelines use. `antialias=False` on the training ops (the data
config's `fast_resize`) selects TF's plain bicubic: the same on upsampling, aliasing when
shrinking, and faster; the recipes leave it off (see the README for its cost and effect).
Colour ops work on floats and clip after each op, where PIL rounds to uint8 after each op.
Images come in as encoded bytes and leave as uint8 (size, size, 3).
"""
from __future__ import annotations

import math

from mimjax.data.tf_host import tf

MAE_SCALE = (0.2, 1.0)
CLASSIFY_SCALE = (0.08, 1.0)  # timm / torchvision's default, used by fine-tuning
MAE_RATIO = (3 / 4, 4 / 3)
RRC_ATTEMPTS = 10  # torchvision tries 10 (area, ratio) draws before its fallback
LUT_PADDING = 4
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
JITTER_P = 0.8
BLUR_SIGMA = (0.1, 2.0)
SOLARIZE_THRESHOLD = 128.0
_BLUR_HALF = 6  # 3 sigma at the largest sigma: a fixed 13-tap kernel with dynamic weights
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert('L')
# libjpeg's accurate integer IDCT, PIL's: JPEGs then decode to PIL's pixels bit for bit. TF's
# default, the fast IDCT, is 0.8 grey levels off them on average, for ~5% less decode time.
JPEG_DCT_METHOD = 'INTEGER_ACCURATE'


def split_seed(seed, n: int):
  """n independent stateless seeds from one."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _uniform(seed, shape=(), lo=0.0, hi=1.0, dtype=tf.float64):
  return tf.random.stateless_uniform(shape, seed, minval=lo, maxval=hi, dtype=dtype)


def _randint(seed, n):
  """A uniform int in [0, n) for a scalar int tensor n >= 1 (torch.randint(0, n))."""
  return tf.cast(tf.floor(_uniform(seed) * tf.cast(n, tf.float64)), tf.int32)


def to_uint8(image):
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resize(image, height, width, antialias=True):
  """Bicubic resize to (height, width); returns float32 on the 0-255 scale.

  Antialiased, PIL's bicubic (what torchvision's transforms call on PIL images) is matched to a
  mean error well below one grey level; `antialias=False` is TF's plain bicubic, faster but
  aliased when shrinking.
  """
  if antialias:
    return _antialiased_resize(image, height, width)
  return tf.image.resize(image, tf.stack([height, width]), method='bicubic', antialias=False)


def _resample_rows(rows, length):
  """Antialiased bicubic along axis 0 of a (L, C) array -> (length, C) float32.

  ScaleAndTranslate (tf.image.resize's antialiased kernel) on a one-pixel-wide image with C
  channels: its vertical pass runs over whole rows (vectorized), its horizontal pass is a copy.
  """
  scale = tf.stack([tf.cast(length, tf.float32) / tf.cast(tf.shape(rows)[0], tf.float32), 1.0])
  out = tf.raw_ops.ScaleAndTranslate(
      images=rows[None, :, None, :], size=tf.stack([length, 1]), scale=scale,
      translation=tf.zeros([2]), kernel_type='keyscubic', antialias=True)
  return out[0, :, 0, :]


def _antialiased_resize(image, height, width):
  """tf.image.resize(image, (height, width), 'bicubic', antialias=True), bit for bit.

  That kernel's horizontal pass loops over single pixels of 3 channels (most of its CPU time);
  here both passes are its vertical pass, the second on the transposed image: the same
  products summed in the same order, about 5x less CPU time.
  """
  h, w, c = tf.unstack(tf.shape(image))
  rows = _resample_rows(tf.reshape(image, [h, w * c]), height)  # (height, w * c)
  cols = tf.transpose(tf.reshape(rows, [height, w, c]), [1, 0, 2])
  out = _resample_rows(tf.reshape(cols, [w, height * c]), width)  # (width, height * c)
  return tf.transpose(tf.reshape(out, [width, height, c]), [1, 0, 2])


def shorter_side_size(shape_hw, size):
  """torchvision Resize(int): the shorter side becomes `size`, the longer int(size*long/short)."""
  h, w = shape_hw[0], shape_hw[1]
  size = tf.cast(size, h.dtype)
  long_ = tf.maximum(h, w) * size // tf.minimum(h, w)  # integer floor, as Python's int()
  return tf.where(h <= w, size, long_), tf.where(h <= w, long_, size)


def resize_shorter(image, size, antialias=True):
  """Resizes so the shorter side is `size` (bicubic); float32 holding uint8 values."""
  nh, nw = shorter_side_size(tf.shape(image)[:2], size)
  return tf.round(tf.clip_by_value(resize(image, nh, nw, antialias), 0.0, 255.0))


def random_flip(image, seed):
  return tf.cond(_uniform(seed) < 0.5, lambda: tf.reverse(image, axis=[1]), lambda: image)


# ---------------------------------------------------------------------------------------------
# MAE: RandomResizedCrop + flip.
# ---------------------------------------------------------------------------------------------
def random_resized_crop_window(shape_hw, seed, scale=MAE_SCALE, ratio=MAE_RATIO,
                               attempts=RRC_ATTEMPTS):
  """torchvision's RandomResizedCrop.get_params: returns int32 [y, x, height, width].

  The up-to-`attempts` tries are drawn at once and the first one that fits is taken, which has
  the same distribution as torchvision's loop. If none fits: the whole image, clamped to the
  ratio range, centred.
  """
  s_area, s_ratio, s_y, s_x = split_seed(seed, 4)
  h = tf.cast(shape_hw[0], tf.float64)
  w = tf.cast(shape_hw[1], tf.float64)
  target_area = h * w * _uniform(s_area, [attempts], scale[0], scale[1])
  aspect = tf.exp(_uniform(s_ratio, [attempts], math.log(ratio[0]), math.log(ratio[1])))
  cw = tf.round(tf.sqrt(target_area * aspect))  # round half to even, as Python's round()
  ch = tf.round(tf.sqrt(target_area / aspect))
  fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  ch, cw = ch[first], cw[first]
  y = tf.floor(_uniform(s_y, [attempts])[first] * (h - ch + 1))
  x = tf.floor(_uniform(s_x, [attempts])[first] * (w - cw + 1))
  # Fallback: centre crop of the whole image with its ratio clamped to [ratio[0], ratio[1]].
  in_ratio = w / h
  fw = tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w)
  fh = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
  fy = tf.floor((h - fh) / 2)
  fx = tf.floor((w - fw) / 2)
  found = tf.reduce_any(fits)
  window = tf.where(found, tf.stack([y, x, ch, cw]), tf.stack([fy, fx, fh, fw]))
  return tf.cast(window, tf.int32)


def image_shape(data):
  """(height, width) of encoded image bytes; JPEG headers are parsed without decoding."""
  return tf.cond(tf.io.is_jpeg(data),
                 lambda: tf.io.extract_jpeg_shape(data)[:2],
                 lambda: tf.shape(decode(data))[:2])


def decode(data):
  """Any TF-supported format (JPEG, PNG, GIF first frame, BMP) -> uint8 RGB (H, W, 3)."""
  image = tf.cond(
      tf.io.is_jpeg(data),
      lambda: tf.io.decode_jpeg(data, channels=3, dct_method=JPEG_DCT_METHOD),
      lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
  image.set_shape([None, None, 3])
  return image


def decode_and_crop(data, window_fn):
  """Decodes only the crop window_fn((h, w)) -> [y, x, height, width] of an encoded image.

  JPEGs go through decode_and_crop_jpeg, which skips the pixels outside the window (most of the
  MAE pipeline's decode cost for scale ~ U(0.2, 1)); other formats decode fully, then slice.
  """
  def jpeg():
    window = window_fn(tf.io.extract_jpeg_shape(data)[:2])
    return tf.io.decode_and_crop_jpeg(data, window, channels=3, dct_method=JPEG_DCT_METHOD)

  def other():
    image = decode(data)
    y, x, ch, cw = tf.unstack(window_fn(tf.shape(image)[:2]))
    return image[y:y + ch, x:x + cw]

  image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
  image.set_shape([None, None, 3])
  return image


def mae_train(data, seed, size: int, antialias: bool = True):
  """MAE view: RandomResizedCrop(size, bicubic) + horizontal flip; bytes -> uint8."""
  s_crop, s_flip = split_seed(seed, 2)
  crop = decode_and_crop(data, lambda hw: random_resized_crop_window(hw, s_crop))
  image = to_uint8(resize(crop, size, size, antialias))
  image = random_flip(image, s_flip)
  image.set_shape([size, size, 3])
  return image


def classify_train(data, seed, size: int, antialias: bool = True, randaugment=None):
  """Fine-tuning view: RandomResizedCrop(size, scale (0.08, 1), bicubic) + flip, then
  `randaugment(image uint8, seed) -> uint8` when given; bytes -> uint8 (timm's
  create_transform(is_training=True) before its ToTensor)."""
  s_crop, s_flip, s_aug = split_seed(seed, 3)
  crop = decode_and_crop(
      data, lambda hw: random_resized_crop_window(hw, s_crop, scale=CLASSIFY_SCALE))
  image = random_flip(to_uint8(resize(crop, size, size, antialias)), s_flip)
  if randaugment is not None:
    image = randaugment(image, s_aug)
  image.set_shape([size, size, 3])
  return image


# ---------------------------------------------------------------------------------------------
# LUT: Resize -> RandomCrop(padding 4, reflect) -> flip; view 2 with colour augmentations.
# ---------------------------------------------------------------------------------------------
def random_crop_window(shape_hw, size, seed, padding=LUT_PADDING):
  """RandomCrop(size, padding) offsets [y, x] into the image padded by `padding` per side."""
  s_y, s_x = split_seed(seed, 2)
  return tf.stack([_randint(s_y, shape_hw[0] + 2 * padding - size + 1),
                   _randint(s_x, shape_hw[1] + 2 * padding - size + 1)])


def _reflect(index, n):
  """Maps indices in [-n + 1, 2n - 2] into [0, n) by reflection (tf.pad 'REFLECT')."""
  index = tf.abs(index)
  return tf.where(index > n - 1, 2 * (n - 1) - index, index)


def random_crop_flip(image, size, seed, padding=LUT_PADDING):
  """RandomCrop(size, padding, reflect) at a random position (sliding along the long side), then
  a random horizontal flip.

  Gathers the output rows and columns straight from the unpadded image (reflected indices,
  reversed columns for the flip): the same pixels as pad -> crop -> flip, without the copies.
  """
  s_crop, s_flip = split_seed(seed, 2)
  h, w = tf.unstack(tf.shape(image)[:2])
  y, x = tf.unstack(random_crop_window(tf.stack([h, w]), size, s_crop, padding))
  offsets = tf.range(size)
  cols = x - padding + tf.where(_uniform(s_flip) < 0.5, size - 1 - offsets, offsets)
  view = tf.gather(tf.gather(image, _reflect(y - padding + offsets, h)), _reflect(cols, w),
                   axis=1)
  view.set_shape([size, size, 3])
  return view


def _gray(image):
  """(H, W, 1) luma; channel slices are ~3x faster than a tensordot with 3 weights."""
  r, g, b = image[..., 0:1], image[..., 1:2], image[..., 2:3]
  return _GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b


def _blend(image, other, factor):
  """factor * image + (1 - factor) * other, clipped to [0, 1] (torchvision's _blend)."""
  return tf.clip_by_value(other + factor * (image - other), 0.0, 1.0)


def color_jitter(image, seed, brightness=JITTER['brightness'], contrast=JITTER['contrast'],
                 saturation=JITTER['saturation'], hue=JITTER['hue']):
  """torchvision ColorJitter on a float image in [0, 1]: factors drawn, ops in a random order.

  Brightness, contrast and saturation are all blends with a target (black, the mean gray, the
  gray image), so one blend per step picks its target and factor; only hue needs a branch.
  """
  s_b, s_c, s_s, s_h, s_order = split_seed(seed, 5)
  f = lambda s, lo, hi: tf.cast(_uniform(s, (), lo, hi), tf.float32)
  factors = tf.stack([f(s_b, 1 - brightness, 1 + brightness),
                      f(s_c, 1 - contrast, 1 + contrast),
                      f(s_s, 1 - saturation, 1 + saturation)])
  delta = f(s_h, -hue, hue)
  order = tf.argsort(_uniform(s_order, [4]))  # a uniform random permutation (torch.randperm)

  def blend_step(x, op):
    gray = _gray(x)
    target = tf.where(op == 0, tf.zeros_like(gray),
                      tf.where(op == 1, tf.reduce_mean(gray), gray))
    return _blend(x, target, tf.gather(factors, tf.minimum(op, 2)))

  for i in range(4):
    image = tf.cond(order[i] == 3,
                    lambda x=image: tf.clip_by_value(tf.image.adjust_hue(x, delta), 0.0, 1.0),
                    lambda x=image, op=order[i]: blend_step(x, op))
    image.set_shape([None, None, 3])
  return image


def gaussian_blur(image, sigma):
  """Separable Gaussian blur of an (H, W, 3) float image, symmetric edges (PIL GaussianBlur)."""
  taps = tf.range(-_BLUR_HALF, _BLUR_HALF + 1, dtype=tf.float32)
  kernel = tf.exp(-0.5 * tf.square(taps / sigma))
  kernel /= tf.reduce_sum(kernel)
  x = tf.pad(image, [[_BLUR_HALF] * 2, [_BLUR_HALF] * 2, [0, 0]], mode='SYMMETRIC')[None]
  kv = tf.tile(kernel[:, None, None, None], [1, 1, 3, 1])
  kh = tf.tile(kernel[None, :, None, None], [1, 1, 3, 1])
  x = tf.nn.depthwise_conv2d(x, kv, [1, 1, 1, 1], 'VALID')
  x = tf.nn.depthwise_conv2d(x, kh, [1, 1, 1, 1], 'VALID')
  return x[0]


def one_of_gray_solarize_blur(image, seed):
  """Exactly one of grayscale (3 channels), solarize (>= 128 inverted), blur; on 0-255 floats."""
  s_choice, s_sigma = split_seed(seed, 2)
  sigma = tf.cast(_uniform(s_sigma, (), *BLUR_SIGMA), tf.float32)
  branches = [
      lambda: tf.tile(tf.round(_gray(image)), [1, 1, 3]),
      lambda: tf.where(image >= SOLARIZE_THRESHOLD, 255.0 - image, image),
      lambda: gaussian_blur(image, sigma),
  ]
  out = tf.switch_case(_randint(s_choice, 3), branches)
  out.set_shape([None, None, 3])
  return out


def lut_color(view, seed):
  """View 2's colour recipe on a uint8-valued float image: jitter (p=0.8), then one of three."""
  s_apply, s_jitter, s_one = split_seed(seed, 3)
  view = tf.cond(_uniform(s_apply) < JITTER_P,
                 lambda: tf.round(color_jitter(view / 255.0, s_jitter) * 255.0),
                 lambda: view)
  return one_of_gray_solarize_blur(view, s_one)


def lut_train(data, seed, size: int, antialias: bool = True):
  """LUT's two views of one image: bytes -> (view1, view2), uint8 (size, size, 3) each.

  The Resize is the same deterministic op for both views, so it is computed once; the crops
  move uint8 pixels, view 1 is never converted to float again.
  """
  s_view1, s_view2, s_color = split_seed(seed, 3)
  resized = to_uint8(resize_shorter(decode(data), size, antialias))
  view1 = random_crop_flip(resized, size, s_view1)
  view2 = lut_color(tf.cast(random_crop_flip(resized, size, s_view2), tf.float32), s_color)
  return view1, to_uint8(view2)


# ---------------------------------------------------------------------------------------------
# Evaluation: resize the shorter side, centre crop.
# ---------------------------------------------------------------------------------------------
def center_crop(image, size):
  """torchvision CenterCrop: offsets int(round((H - size) / 2))."""
  hw = tf.cast(tf.shape(image)[:2], tf.float64)
  y, x = tf.unstack(tf.cast(tf.round((hw - size) / 2.0), tf.int32))
  return image[y:y + size, x:x + size]


def eval_image(data, size: int, crop_fraction: float):
  resize_to = int(size / crop_fraction)
  image = to_uint8(center_crop(resize_shorter(decode(data), resize_to), size))
  image.set_shape([size, size, 3])
  return image
