"""Input pipeline throughput: images/second per CPU core for MAE and LUT (uint8, 224 px).

Not a test. Run:  .venv/bin/python benchmarks/data_throughput.py [--images 300] [--seconds 6] [--rounds 3]

It writes its own JPEGs (random 500x375 crops of the bundled offline photos, ImageNet-like in
size) into a temporary folder, then times, with the same tf.data settings:
  baseline  read + full decode_jpeg + RandomResizedCrop (stateless_sample_distorted_bounding_box)
            + plain bicubic resize + flip: a plain tf.data recipe
  mae       mimjax's MAE pipeline (decode_and_crop_jpeg + torchvision-exact RandomResizedCrop,
            antialiased bicubic as PIL's)
  lut       mimjax's LUT pipeline (two views, colour augmentations on view 2)
  mae_fast, lut_fast  the same with input.fast_resize=True (plain, aliased bicubic)
  pil       the reference: what torchvision's MAE transform does on PIL images, in one Python
            thread (full Image.open().convert('RGB') decode, RandomResizedCrop's get_params
            with scale (0.2, 1) and ratio (3/4, 4/3), 10 tries then the clamped centre crop,
            PIL's antialiased BICUBIC resize of the box to 224, flip with p=0.5, np.asarray,
            batches stacked). torchvision itself is not installed here, so the same calls are
            made on PIL directly.
and prints images/s, images/s per core (wall-clock rate / cores, and images per CPU-second of
the process, which other jobs on the machine disturb less), mae / baseline and mae / pil.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf

from mimjax import data, methods
from mimjax.data import augment, offline, pipeline


def write_jpegs(folder: str, count: int, seed: int = 0) -> None:
  """`count` 500x375 JPEGs: random crops of the bundled photos, resized, quality 90."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  photos = [p for _, p in offline.iter_photos()]
  for i in range(count):
    photo = photos[i % len(photos)]
    h, w = photo.shape[:2]
    ch = int(h * rng.uniform(0.6, 1.0))
    cw = min(w, int(ch * 4 / 3 * rng.uniform(0.9, 1.1)))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    im = Image.fromarray(photo[y:y + ch, x:x + cw]).resize((500, 375), Image.Resampling.BICUBIC)
    im.save(os.path.join(folder, f'{i:05d}.jpg'), quality=90)


def baseline_dataset(folder: str, batch_size: int, size: int, num_threads: int):
  """The reference recipe: full decode, sampled crop box, resize, flip; same threading."""
  files = sorted(tf.io.gfile.glob(os.path.join(folder, '*.jpg')))

  def one(path, index):
    seed = tf.stack([tf.constant(0, tf.int64), index])
    s_box, s_flip = augment.split_seed(seed, 2)
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=s_box,
        area_range=augment.MAE_SCALE, aspect_ratio_range=augment.MAE_RATIO,
        max_attempts=augment.RRC_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, box_size)
    image = augment.to_uint8(augment.resize(image, size, size, antialias=False))
    return augment.random_flip(image, s_flip)

  ds = tf.data.Dataset.from_tensor_slices(files).repeat().enumerate()
  ds = ds.map(lambda i, p: one(p, i), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(pipeline.data_options(num_threads))


def rrc_params(rng, height: int, width: int, scale=augment.MAE_SCALE, ratio=augment.MAE_RATIO,
               attempts=augment.RRC_ATTEMPTS) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop.get_params, line for line: (top, left, height, width)."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(attempts):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height  # fallback: the centre crop, its ratio clamped to the range
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def pil_batches(folder: str, batch_size: int, size: int, seed: int = 0):
  """torchvision's MAE train transform on PIL images, one Python thread: uint8 batches."""
  from PIL import Image
  files = sorted(tf.io.gfile.glob(os.path.join(folder, '*.jpg')))
  rng = np.random.default_rng(seed)

  def one(path):
    with open(path, 'rb') as f:
      image = Image.open(f).convert('RGB')  # torchvision's pil_loader: a full decode
    top, left, h, w = rrc_params(rng, image.height, image.width)
    image = image.resize((size, size), Image.Resampling.BICUBIC,
                         box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
      image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image)

  i = 0
  while True:
    batch = [one(files[(i + j) % len(files)]) for j in range(batch_size)]
    i += batch_size
    yield np.stack(batch)


def measure(batches, batch_size: int, seconds: float, warmup: int = 3) -> tuple[float, float]:
  """(images per wall second, images per CPU second of this process).

  The second is the per-core rate, and it is robust to other jobs sharing the cores: it
  counts only the CPU time this process's threads (tf.data's included) actually got.
  """
  for _ in range(warmup):  # tracing, autotuning and the first file reads
    next(batches)
  n, wall, cpu = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - wall < seconds:
    next(batches)
    n += batch_size
  return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--images', type=int, default=300)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--seconds', type=float, default=6.0)
  parser.add_argument('--rounds', type=int, default=3, help='best of this many runs each')
  parser.add_argument('--threads', type=int, default=0, help='0 = all cores')
  parser.add_argument('--pipelines', default='pil,baseline,mae,mae_fast,lut,lut_fast')
  args = parser.parse_args()
  cores = args.threads or pipeline.num_cores()

  with tempfile.TemporaryDirectory() as folder:
    write_jpegs(folder, args.images)
    cfg = data.make_default_config()
    cfg.update(dataset='folder', folder=folder, batch_size=args.batch_size,
               image_size=args.image_size, num_threads=args.threads)
    fast = cfg.copy_and_resolve_references()
    fast.fast_resize = True
    makers = {
        'baseline': lambda: baseline_dataset(folder, args.batch_size, args.image_size,
                                             args.threads).as_numpy_iterator(),
        'pil': lambda: pil_batches(folder, args.batch_size, args.image_size),
        'mae': lambda: data.make_host_iterator(cfg, methods.get('mae'), seed=0, process_count=1),
        'lut': lambda: data.make_host_iterator(cfg, methods.get('lut'), seed=0, process_count=1),
        'mae_fast': lambda: data.make_host_iterator(fast, methods.get('mae'), seed=0,
                                                    process_count=1),
        'lut_fast': lambda: data.make_host_iterator(fast, methods.get('lut'), seed=0,
                                                    process_count=1),
    }
    names = args.pipelines.split(',')
    wall = {name: 0.0 for name in names}
    cpu = {name: 0.0 for name in names}
    for _ in range(args.rounds):  # interleaved rounds: a noisy neighbour hits all alike
      for name in names:
        w, c = measure(makers[name](), args.batch_size, args.seconds)
        wall[name], cpu[name] = max(wall[name], w), max(cpu[name], c)
  print(f'{args.images} JPEGs 500x375 -> uint8 {args.image_size}px, batch {args.batch_size}, '
        f'{cores} core(s), best of {args.rounds} x {args.seconds:.0f}s')
  print(f'  {"":9s} {"images/s":>9s} {"per core (wall/cores)":>22s} {"per CPU-second":>15s}')
  for name in names:
    print(f'  {name:9s} {wall[name]:9.1f} {wall[name] / cores:22.1f} {cpu[name]:15.1f}')
  if 'baseline' in names and 'mae' in names:
    print(f'  mae / baseline = {wall["mae"] / wall["baseline"]:.2f} (wall), '
          f'{cpu["mae"] / cpu["baseline"]:.2f} (CPU time); target >= 0.85')
  if 'pil' in names and 'mae' in names:
    print(f'  mae / pil = {cpu["mae"] / cpu["pil"]:.2f} (images per CPU-second; pil runs on one '
          f'thread, so its wall-clock rate is not comparable); target >= 1.0')


if __name__ == '__main__':
  main()
