"""Input pipelines: tfds / image folders / bundled photos -> augmented uint8 global batches.

  config.py    defaults (make_default_config), DataConfigError, CorruptImageError
  offline.py   the bundled offline dataset of real photos (built once, cached)
  sources.py   folders and prepared tfds datasets; the deterministic example order per shard
  augment.py   MAE / LUT / eval augmentations as stateless tf ops
  pipeline.py  decode + augment + batch on the host (numpy batches, no JAX)
  device.py    global jax.Arrays from per-process batches; normalize on device

Typical use (the trainer):
  data.validate_config(cfg, method='mae', num_processes=..., num_devices=...)
  it = data.make_train_iterator(cfg, 'mae', seed=0, start_step=step, mesh=mesh)
  images = data.normalize(next(it)['image'])  # inside the jitted step
"""
import tensorflow as tf

# TF is only the host-side input pipeline: keep it off any accelerator JAX uses.
try:
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
except (RuntimeError, ValueError):  # already initialized, or no such device type
  pass

# pylint: disable=g-import-not-at-top,wrong-import-position
from mimjax.data.config import (CorruptImageError, DataConfigError, make_default_config)
from mimjax.data.device import (MEAN_RGB, STD_RGB, GlobalBatchIterator, denormalize,
                                make_eval_iterator, make_train_iterator, normalize)
from mimjax.data.offline import build as build_offline_photos
from mimjax.data.pipeline import (HostIterator, make_host_eval_iterator, make_host_iterator,
                                  num_examples, validate_config)

__all__ = [
    'CorruptImageError', 'DataConfigError', 'GlobalBatchIterator', 'HostIterator', 'MEAN_RGB',
    'STD_RGB', 'build_offline_photos', 'denormalize', 'make_default_config',
    'make_eval_iterator', 'make_host_eval_iterator', 'make_host_iterator', 'make_train_iterator',
    'normalize', 'num_examples', 'validate_config',
]
