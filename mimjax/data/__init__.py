"""Input pipelines: tfds / image folders / bundled photos -> augmented uint8 global batches.

  config.py    defaults (make_default_config), DataConfigError, CorruptImageError
  offline.py   the bundled offline dataset of real photos (built once, cached)
  sources.py   folders and prepared tfds datasets; the deterministic example order per shard
  augment.py   augmentation ops (stateless tf): the methods build theirs from them; the eval crop
  pipeline.py  decode + augment + batch on the host (numpy batches, no JAX): a training
               pipeline runs its method's augmentation (`Method.augment`, `Method.batch_keys`)
  device.py    global jax.Arrays from per-process batches
  pixels.py    the on-device normalization (inside the jitted step)
  mixup.py     mixup / cutmix / random erasing, on the device
  tf_host.py   TensorFlow as the host pipelines use it (never on an accelerator)

Typical use (the trainer):
  data.validate_config(cfg, training=True, num_processes=..., num_devices=...)
  it = data.make_train_iterator(cfg, methods.get('mae'), seed=0, start_step=step, mesh=mesh)
  images = data.normalize(next(it)['image'])  # inside the jitted step

Each name below is imported on first use, so TensorFlow loads only when a host pipeline is
built: the configs, the models and the train step work on a machine without TensorFlow (an
accelerator host that only benchmarks or compiles the step).
"""
import importlib

_HOMES = {
    'config': ('CorruptImageError', 'DataConfigError', 'make_default_config'),
    'pixels': ('MEAN_RGB', 'STD_RGB', 'denormalize', 'normalize'),
    'device': ('GlobalBatchIterator', 'make_eval_iterator', 'make_train_iterator'),
    'pipeline': ('HostIterator', 'make_host_eval_iterator', 'make_host_iterator', 'num_examples',
                 'validate_config'),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
_RENAMED = {'build_offline_photos': ('offline', 'build')}

__all__ = sorted([*_HOME_OF, *_RENAMED])


def __getattr__(name):
  if name in _HOME_OF:
    return getattr(importlib.import_module(f'{__name__}.{_HOME_OF[name]}'), name)
  if name in _RENAMED:
    module, attribute = _RENAMED[name]
    return getattr(importlib.import_module(f'{__name__}.{module}'), attribute)
  try:  # a submodule (`data.pipeline`)
    return importlib.import_module(f'{__name__}.{name}')
  except ModuleNotFoundError as e:
    if e.name != f'{__name__}.{name}':  # a submodule's own missing import: say that one
      raise
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
