"""Data config: defaults, errors and the cheap up-front validation."""
from __future__ import annotations

import ml_collections

from mimjax import errors

ON_CORRUPT = ('fail', 'skip')
OFFLINE = 'offline_photos'
DIGITS = 'digits'  # sklearn's digits as 32 px colour images, 10 classes (mimjax/data/digits.py)
FOLDER = 'folder'


class DataConfigError(errors.UserError, ValueError):
  """A data config that cannot work (raised before anything runs)."""


class CorruptImageError(errors.UserError, RuntimeError):
  """An image that cannot be decoded, with on_corrupt='fail' (names the file or record)."""


def make_default_config() -> ml_collections.ConfigDict:
  """The data section of a training config, with its defaults."""
  return ml_collections.ConfigDict(dict(
      # 'offline_photos' or 'digits' (bundled), 'folder' (then `folder`), or a prepared tfds name.
      dataset=OFFLINE,
      folder='',
      # tfds split (slices like 'train[:90%]' work); for folders 'train' is every image.
      split='train',
      data_dir='',  # tfds data_dir; '' = the tfds default.
      batch_size=256,  # GLOBAL batch size.
      image_size=224,
      # Only for tfds (record streams): folders are shuffled with a full permutation per epoch.
      shuffle_buffer=10_000,
      on_corrupt='fail',  # 'fail' raises naming the file; 'skip' replaces it and counts it.
      # True: plain (aliased) bicubic for the training resizes, faster than the antialiased
      # bicubic that matches PIL's (the reference pipelines'); the recipes leave it off.
      fast_resize=False,
      # timm's RandAugment policy, for the augmentations that apply one (fine-tuning's); '' = none.
      randaugment='',
      eval_crop_fraction=0.875,  # eval: resize the shorter side to size / fraction, centre crop.
      cache_dir='',  # offline dataset cache; '' = $MIMJAX_CACHE_DIR or ~/.cache/mimjax.
      num_threads=0,  # tf.data private thread pool per process; 0 = all cores.
  ))


def _get(cfg, key):
  defaults = make_default_config()
  return cfg.get(key, defaults[key]) if hasattr(cfg, 'get') else defaults[key]


def check_basic(cfg, num_processes: int = 1, num_devices: int = 1) -> None:
  """Checks the values that need no file system access; raises DataConfigError."""
  on_corrupt = _get(cfg, 'on_corrupt')
  if on_corrupt not in ON_CORRUPT:
    raise DataConfigError(f'config.on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}.')
  bs = _get(cfg, 'batch_size')
  if not isinstance(bs, int) or bs <= 0:
    raise DataConfigError(f'config.batch_size must be a positive int, got {bs!r}.')
  for what, n in (('process count', num_processes), ('device count', num_devices)):
    if n <= 0 or bs % n:
      raise DataConfigError(
          f'config.batch_size={bs} (the global batch) must be divisible by the {what} {n}.')
  size = _get(cfg, 'image_size')
  # RandomCrop pads 4 px with reflection, which needs at least 5 px per side.
  if not isinstance(size, int) or size < 8:
    raise DataConfigError(f'config.image_size must be an int >= 8, got {size!r}.')
  frac = _get(cfg, 'eval_crop_fraction')
  if not 0 < frac <= 1:
    raise DataConfigError(f'config.eval_crop_fraction must be in (0, 1], got {frac!r}.')
  if _get(cfg, 'shuffle_buffer') < 1:
    raise DataConfigError('config.shuffle_buffer must be >= 1.')
  if _get(cfg, 'num_threads') < 0:
    raise DataConfigError('config.num_threads must be >= 0 (0 = all cores).')
  if _get(cfg, 'dataset') == FOLDER and not _get(cfg, 'folder'):
    raise DataConfigError("config.dataset='folder' needs config.folder (a path).")
  spec = _get(cfg, 'randaugment')
  if spec:
    from mimjax.data import randaugment  # pylint: disable=g-import-not-at-top
    try:
      randaugment.from_spec(spec)
    except ValueError as e:
      raise DataConfigError(f'config.{e}') from None
  if not _get(cfg, 'dataset'):
    raise DataConfigError('config.dataset is empty.')
