"""Helpers shared by the data tests (a uniquely named module: conftest is not importable)."""
import os

import numpy as np
from PIL import Image

from mimjax import data

NUM_CLASSES = 3
PER_CLASS = 8  # 24 images: batch 8 -> 3 steps per epoch
TFDS_TRAIN = 40


def smooth_image(rng, height, width):
  """A smooth, colourful uint8 image: low-resolution noise upsampled."""
  small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def write_folder(root, rng, num_classes=NUM_CLASSES, per_class=PER_CLASS):
  """Class subfolders of small JPEGs (and a few PNGs) of varied sizes and aspect ratios."""
  sizes = [(40, 56), (56, 40), (48, 48), (36, 64)]
  for c in range(num_classes):
    os.makedirs(os.path.join(root, f'class_{c}'))
    for i in range(per_class):
      image = Image.fromarray(smooth_image(rng, *sizes[i % len(sizes)]))
      ext = 'png' if i == per_class - 1 else 'jpg'
      image.save(os.path.join(root, f'class_{c}', f'img_{i}.{ext}'))
  return root


def make_cfg(**overrides):
  cfg = data.make_default_config()
  cfg.update(dict(batch_size=8, image_size=32, num_threads=2))
  cfg.update(overrides)
  return cfg


def take(it, n):
  return [next(it) for _ in range(n)]
