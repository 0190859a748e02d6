"""`digits`: a small labelled dataset made from scikit-learn's bundled handwritten digits.

The 1797 8x8 grayscale digits of `sklearn.datasets.load_digits` (shipped inside the wheel, no
download) become 32x32 RGB images in 10 balanced classes: each digit is upscaled to 24 px
(bilinear), placed at a random offset on a 32 px canvas, and drawn in a light random ink colour
on a dark random background (fixed by the image's index). More images and classes than the
bundled photos, so kNN and linear-probe numbers are less noisy (raw-pixel kNN, k=20: 84% on
'train[80%:]').

Built once into `<cache>/digits/v1/<digit>/<index>.png` (atomically, like offline_photos) and read
as a folder dataset; slice it for held-out splits ('train[:80%]', 'train[80%:]').
"""
from __future__ import annotations

import os

import numpy as np

from mimjax.data import offline

VERSION = 'v1'
SIZE = 32
DIGIT = 24


def dataset_dir(cache_dir: str = '') -> str:
  return os.path.join(offline.cache_root(cache_dir), 'digits', VERSION)


def render(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One 8x8 digit (values 0-16) -> a (SIZE, SIZE, 3) uint8 image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  ink = Image.fromarray((digit * (255 / 16)).astype(np.uint8)).resize((DIGIT, DIGIT),
                                                                     Image.Resampling.BILINEAR)
  alpha = np.zeros((SIZE, SIZE), np.float32)
  top, left = rng.integers(0, SIZE - DIGIT + 1, size=2)
  alpha[top:top + DIGIT, left:left + DIGIT] = np.asarray(ink, np.float32) / 255
  background = rng.integers(0, 64, size=3)
  colour = rng.integers(192, 256, size=3)
  image = background * (1 - alpha[..., None]) + colour * alpha[..., None]
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _write(out_dir: str) -> int:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  for label in range(10):
    os.makedirs(os.path.join(out_dir, str(label)))
  for index, (image, label) in enumerate(zip(digits.images, digits.target)):
    rng = np.random.default_rng([VERSION.encode()[1], index])
    Image.fromarray(render(image, rng)).save(os.path.join(out_dir, str(label), f'{index:04d}.png'))
  return len(digits.images)


def build(cache_dir: str = '') -> str:
  """Builds the digits folder if it is not cached yet; returns it."""
  return offline.build_once(dataset_dir(cache_dir), _write)
