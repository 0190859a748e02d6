"""TensorFlow as the input pipelines use it: on the host only.

Every module of this package that runs TensorFlow imports it from here, so that TensorFlow,
whichever module loads it first, never claims a GPU or TPU that JAX trains on.
"""
import tensorflow as tf

try:
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
except (RuntimeError, ValueError):  # already initialized, or no such device type
  pass

__all__ = ['tf']
