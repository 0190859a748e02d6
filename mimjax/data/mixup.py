"""On-device batch augmentations of fine-tuning, in JAX: random erasing, mixup / cutmix, soft
targets with label smoothing. They follow timm's `RandomErasing(mode='pixel')` and
`Mixup(mode='batch')`, which MAE's and LUT's fine-tuning use.

They run inside the jitted step on normalized float images (NHWC), keyed by JAX keys: erasing per
example (keys from the global example, so it does not depend on the accumulation steps), mixup
and cutmix once per (micro-)batch, pairing each image with the batch reversed.
"""
import math

import jax
import jax.numpy as jnp

ERASE_AREA = (0.02, 1 / 3)
ERASE_LOG_RATIO = (math.log(0.3), math.log(1 / 0.3))
ERASE_ATTEMPTS = 10


def smooth_targets(labels, num_classes: int, smoothing: float):
  """One-hot targets with `smoothing` spread evenly: on = 1 - s + s/K, off = s/K."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def _erase_one(key, image, probability: float):
  """timm's RandomErasing on one (H, W, C) image: with `probability`, up to 10 tries of a box
  of area U(0.02, 1/3) and log-uniform ratio in (0.3, 1/0.3); the first that fits is filled
  with N(0, 1) noise per pixel and channel."""
  h, w, c = image.shape
  k_apply, k_area, k_ratio, k_top, k_left, k_fill = jax.random.split(key, 6)
  area = h * w * jax.random.uniform(k_area, (ERASE_ATTEMPTS,), minval=ERASE_AREA[0],
                                    maxval=ERASE_AREA[1])
  ratio = jnp.exp(jax.random.uniform(k_ratio, (ERASE_ATTEMPTS,), minval=ERASE_LOG_RATIO[0],
                                     maxval=ERASE_LOG_RATIO[1]))
  eh = jnp.round(jnp.sqrt(area * ratio)).astype(jnp.int32)
  ew = jnp.round(jnp.sqrt(area / ratio)).astype(jnp.int32)
  fits = (ew < w) & (eh < h)
  first = jnp.argmax(fits)
  eh, ew = eh[first], ew[first]
  top = jnp.floor(jax.random.uniform(k_top) * (h - eh + 1)).astype(jnp.int32)
  left = jnp.floor(jax.random.uniform(k_left) * (w - ew + 1)).astype(jnp.int32)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  box = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)
  apply = (jax.random.uniform(k_apply) < probability) & jnp.any(fits)
  noise = jax.random.normal(k_fill, image.shape, image.dtype)
  return jnp.where((box & apply)[..., None], noise, image)


def random_erasing(keys, images, probability: float):
  """Random erasing per example; `keys` has one key per image."""
  if probability <= 0:
    return images
  return jax.vmap(lambda k, x: _erase_one(k, x, probability))(keys, images)


def cutmix_box(key, height: int, width: int, lam):
  """timm's rand_bbox: a box of side ratio sqrt(1 - lam) centred at a uniform pixel, clipped.

  Returns (top, bottom, left, right) and the corrected lam = 1 - box area / image area.
  """
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = (height * ratio).astype(jnp.int32)
  cut_w = (width * ratio).astype(jnp.int32)
  k_y, k_x = jax.random.split(key)
  cy = jax.random.randint(k_y, (), 0, height)
  cx = jax.random.randint(k_x, (), 0, width)
  top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  lam = 1.0 - (bottom - top) * (right - left) / (height * width)
  return (top, bottom, left, right), lam


def mixup_cutmix(key, images, targets, mixup_alpha: float, cutmix_alpha: float,
                 prob: float = 1.0, switch_prob: float = 0.5):
  """timm's Mixup in 'batch' mode on soft `targets`: with probability `prob`, mixup (lam ~
  Beta(mixup_alpha)) or, with `switch_prob` when both are on, cutmix (lam ~ Beta(cutmix_alpha),
  then corrected to the box's area). Each image mixes with the batch reversed.

  Returns (images, targets, lam).
  """
  if mixup_alpha <= 0 and cutmix_alpha <= 0:
    return images, targets, jnp.ones(())
  k_apply, k_switch, k_mix, k_cut, k_box = jax.random.split(key, 5)
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(k_switch) < switch_prob
  else:
    use_cutmix = jnp.asarray(cutmix_alpha > 0)
  beta = lambda k, a: jax.random.beta(k, a, a) if a > 0 else jnp.ones(())
  lam = jnp.where(use_cutmix, beta(k_cut, cutmix_alpha), beta(k_mix, mixup_alpha))
  apply = jax.random.uniform(k_apply) < prob
  lam = jnp.where(apply, lam, 1.0).astype(jnp.float32)
  n, h, w, _ = images.shape
  (top, bottom, left, right), box_lam = cutmix_box(k_box, h, w, lam)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  flipped = images[::-1]
  cut = jnp.where(box[None, :, :, None], flipped, images)
  mixed = images * lam + flipped * (1.0 - lam)
  cutting = use_cutmix & apply
  images = jnp.where(cutting, cut, mixed)
  lam = jnp.where(cutting, box_lam, lam).astype(jnp.float32)
  targets = targets * lam + targets[::-1] * (1.0 - lam)
  return images, targets, lam
