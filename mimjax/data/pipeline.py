"""Host-side input pipelines: undecoded elements -> decode + augment -> per-process numpy batches.

Determinism: the element stream (sources.py) fixes which example sits at each global position;
the augmentation of an example is keyed by (seed, global position); maps run in parallel with
deterministic=True. So the batch at step k is a pure function of (dataset, seed, k) (and, for
tfds, the process count), and a pipeline started at step k equals an uninterrupted one there.

Corrupt images: on_corrupt='fail' decodes with a plain parallel map; when it fails, the failing
step's elements are decoded one by one to name the culprit in a CorruptImageError. With
on_corrupt='skip' a training element carries MAX_SUBSTITUTES substitutes (the next examples of
the order, or a stream's neighbouring records); the first candidate that decodes fills the slot
and the failures are counted (HostIterator.num_corrupt). Filling the slot, instead of dropping
it, keeps every position where it was, so resumption stays exact even with corrupt files. In an
eval pass a corrupt image's row is masked out instead (mask=False), and counted.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Iterator

import numpy as np

from mimjax.data import augment
from mimjax.data.config import CorruptImageError, DataConfigError, check_basic, make_default_config
from mimjax.data.sources import Shard, fold_in, get_source, graph_fn, seed_key
from mimjax.data.tf_host import tf

SALT_ORDER = 0x0D1
SALT_AUGMENT = 0xA06
MAX_SUBSTITUTES = 4
# The one batch entry the dataset gives (int32, -1 where unknown); a training method's
# augmentation gives its other batch keys, each a uint8 (S, S, 3) image.
LABEL = 'label'
AUTOTUNE = tf.data.AUTOTUNE


def _cfg(cfg):
  """cfg with the defaults for any missing key (so older configs keep working)."""
  full = make_default_config()
  full.update(dict(cfg))
  return full


def num_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def data_options(num_threads: int = 0) -> tf.data.Options:
  opts = tf.data.Options()
  opts.deterministic = True
  # A private pool sized to the cores; one thread per op: parallelism is across examples.
  opts.threading.private_threadpool_size = num_threads or num_cores()
  opts.threading.max_intra_op_parallelism = 1
  return opts


def _augmented_keys(batch_keys) -> tuple[str, ...]:
  """The batch entries a training augmentation makes: all but LABEL, which the dataset gives."""
  return tuple(k for k in batch_keys if k != LABEL)


def _blank(keys, size: int):
  return {k: tf.zeros([size, size, 3], tf.uint8) for k in keys}


class _Decoder:
  """The decode + augment stage, shared by the pipeline and the failure diagnosis."""

  def __init__(self, fn: Callable, keys: tuple[str, ...], size: int, seed: int,
               reads_files: bool):
    self.fn, self.keys, self.size = fn, keys, size
    self.key = seed_key(seed, SALT_AUGMENT)
    self.reads_files = reads_files

  def load(self, data):
    return tf.io.read_file(data) if self.reads_files else data

  def one(self, data, pos):
    return self.fn(self.load(data), fold_in(self.key, pos))

  def first(self, el):
    """Decodes candidate 0 only (on_corrupt='fail')."""
    out = self._guarded(el, lambda: self.one(el['data'][0], el['pos']))
    return dict(out, label=el['label'][0], name=el['name'][0], skipped=tf.constant(0, tf.int32),
                **_valid(el))

  def _guarded(self, el, decode):
    if 'valid' not in el:
      return decode()
    return tf.cond(el['valid'], decode, lambda: _blank(self.keys, self.size))

  def with_substitutes(self, el):
    """A 1-element dataset: the first candidate that decodes, and how many failed before it."""
    k = el['data'].shape[0]
    cands = tf.data.Dataset.from_tensor_slices(
        (el['data'], el['name'], el['label'], tf.range(k, dtype=tf.int32)))
    decoded = cands.map(graph_fn(lambda d, n, l, t: dict(
        self._guarded(el, lambda: self.one(d, el['pos'])), label=l, name=n, skipped=t,
        **_valid(el))))
    # Lazy: candidate i + 1 is decoded only if candidate i raised.
    decoded = decoded.ignore_errors()
    # All failed: an eval row is masked out; a training row is an error (_check_substituted).
    failed = dict(_blank(self.keys, self.size), label=tf.constant(-1, tf.int32),
                  name=tf.strings.reduce_join(el['name'], separator=', '),
                  skipped=tf.constant(k, tf.int32),
                  **({'valid': tf.constant(False)} if 'valid' in el else {}))
    return decoded.concatenate(tf.data.Dataset.from_tensors(failed)).take(1)


def _valid(el):
  """Passes the eval padding flag through."""
  return {'valid': el['valid']} if 'valid' in el else {}


def _check_substituted(el, k):
  ok = el['skipped'] < k
  assert_op = tf.debugging.Assert(
      ok, ['Cannot decode any of', el['name'], f'(an image and its {k - 1} substitutes)'])
  with tf.control_dependencies([assert_op]):
    return dict(el, skipped=tf.identity(el['skipped']))


def decode_and_batch(elements: tf.data.Dataset, decoder: _Decoder, *, on_corrupt: str,
                     batch_size: int, options: tf.data.Options) -> tf.data.Dataset:
  """Undecoded elements -> batches of uint8 images (+ label, name, skipped, [valid])."""
  if on_corrupt == 'fail':
    ds = elements.map(graph_fn(decoder.first), num_parallel_calls=AUTOTUNE, deterministic=True)
  else:
    k = elements.element_spec['data'].shape[0]
    ds = elements.interleave(graph_fn(decoder.with_substitutes), cycle_length=2 * num_cores() + 2,
                             block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
    if 'valid' not in elements.element_spec:
      ds = ds.map(graph_fn(lambda el: _check_substituted(el, k)))
  ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.prefetch(AUTOTUNE).with_options(options)


class HostIterator:
  """Per-process numpy batches; `step` is the global step of the next batch.

  `num_corrupt` counts the images this process failed to decode and replaced (on_corrupt='skip')
  since the iterator was made: log it as a metric.
  """

  def __init__(self, chunks: Iterator[tf.data.Dataset], to_batches: Callable,
               diagnose: Callable[[int], list[str]], keys: tuple[str, ...], start_step: int,
               on_corrupt: str):
    self._chunks = chunks
    self._to_batches = to_batches
    self._diagnose = diagnose
    self._keys = keys
    self._on_corrupt = on_corrupt
    self._it = None
    self.step = start_step
    self.num_corrupt = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    while True:
      if self._it is None:
        self._it = self._to_batches(next(self._chunks)).as_numpy_iterator()
      try:
        batch = next(self._it)
        break
      except StopIteration:
        self._it = None  # next epoch (tfds) or the end (eval)
      except tf.errors.OpError as e:
        raise self._error(e) from None
    self.num_corrupt += int(batch['skipped'].sum())
    self.step += 1
    return {k: batch[k] for k in self._keys}

  def _error(self, e: tf.errors.OpError) -> Exception:
    if self._on_corrupt == 'skip':
      return CorruptImageError(f'Batch at step {self.step}: {_short(e)}')
    names = self._diagnose(self.step)
    if not names:
      return e
    return CorruptImageError(
        f'Cannot decode {len(names)} image(s) of the batch at step {self.step}: '
        f'{", ".join(names)} ({_short(e)}). Remove them, or set config.on_corrupt="skip".')


def _short(e: tf.errors.OpError) -> str:
  """The useful part of a tf.data error ('Invalid JPEG data, size 7')."""
  line = e.message.strip().splitlines()[0]
  m = re.search(r'with iterator: \S+: (.*)$', line)
  return (m.group(1) if m else line).strip()


def _shard(process_index, process_count) -> Shard:
  if process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_count = jax.process_count()
    process_index = jax.process_index() if process_index is None else process_index
  process_index = 0 if process_index is None else process_index
  if not 0 <= process_index < process_count:
    raise DataConfigError(f'process_index {process_index} not in [0, {process_count}).')
  return Shard(process_index, process_count)


def validate_config(cfg, training: bool = False, num_processes: int | None = None,
                    num_devices: int | None = None, split: str | None = None):
  """Raises DataConfigError if cfg cannot give batches (`training`: of a whole global batch per
  epoch); cheap (lists a folder at most).

  Returns the source, so that callers that go on to build a pipeline need not resolve it again.
  """
  cfg = _cfg(cfg)
  check_basic(cfg, num_processes or 1, num_devices or 1)
  source = get_source(cfg, split)
  if training and source.steps_per_epoch(cfg.batch_size, Shard(0, num_processes or 1)) < 1:
    raise DataConfigError(
        f'config.batch_size={cfg.batch_size} is larger than one epoch of {source.description} '
        f'({source.num_examples} examples).')
  return source


def num_examples(cfg, split: str | None = None) -> int:
  """Examples per epoch of cfg's dataset and split."""
  return get_source(_cfg(cfg), split).num_examples


def make_host_iterator(cfg, method, seed: int = 0, start_step: int = 0, *,
                       process_index: int | None = None, process_count: int | None = None,
                       with_ids: bool = False) -> HostIterator:
  """Infinite training batches for this process as numpy: no JAX involved.

  `method` (a mimjax.methods.Method) gives the augmentation, `method.augment(cfg)`:
  (encoded bytes, seed) -> {key: uint8 (S, S, 3) image}, and the batch keys,
  `method.batch_keys`: those images and maybe LABEL, each (B / process_count, ...);
  with_ids adds 'name' (the file path or tfds id of each example, for tests).
  process_index/count default to jax.process_index()/count(); tests override them.
  """
  cfg = _cfg(cfg)
  shard = _shard(process_index, process_count)
  source = validate_config(cfg, True, shard.count)
  options = data_options(cfg.num_threads)
  decoder = _Decoder(method.augment(cfg), _augmented_keys(method.batch_keys), cfg.image_size,
                     seed, source.reads_files)
  k = 1 + MAX_SUBSTITUTES if cfg.on_corrupt == 'skip' else 1
  bpp = cfg.batch_size // shard.count

  def chunks(start):
    return source.train_chunks(seed=seed, salt=SALT_ORDER, batch_size=cfg.batch_size,
                               shard=shard, start_step=start, num_candidates=k,
                               shuffle_buffer=cfg.shuffle_buffer, options=options)

  def diagnose(step):
    return _failing(next(chunks(step)).take(bpp), decoder)

  return HostIterator(
      chunks(start_step),
      lambda el: decode_and_batch(el, decoder, on_corrupt=cfg.on_corrupt, batch_size=bpp,
                                  options=options),
      diagnose, tuple(method.batch_keys) + (('name',) if with_ids else ()), start_step,
      cfg.on_corrupt)


def make_host_eval_iterator(cfg, split: str | None = None, *, process_index: int | None = None,
                            process_count: int | None = None,
                            with_ids: bool = False) -> HostIterator:
  """One pass over a split, no shuffle, centre crops: {'image', 'label', 'mask'} per process.

  The last global batch is padded: 'mask' is False on padding rows (label -1, black image).
  `.num_batches` is the number of batches (the same on every process).
  """
  cfg = _cfg(cfg)
  shard = _shard(process_index, process_count)
  check_basic(cfg, shard.count, 1)
  source = get_source(cfg, split)
  options = data_options(cfg.num_threads)
  size, frac = cfg.image_size, cfg.eval_crop_fraction
  decoder = _Decoder(lambda data, seed: {'image': augment.eval_image(data, size, frac)},
                     ('image',), size, 0, source.reads_files)
  bpp = cfg.batch_size // shard.count
  elements, num_batches = source.eval_elements(batch_size=cfg.batch_size, shard=shard,
                                               options=options)

  def to_batches(el):
    ds = decode_and_batch(el, decoder, on_corrupt=cfg.on_corrupt, batch_size=bpp,
                          options=options)
    return ds.map(graph_fn(lambda b: dict(b, mask=b['valid'])))

  def diagnose(step):
    return _failing(elements.skip(step * bpp).take(bpp), decoder)

  it = HostIterator(iter([elements]), to_batches, diagnose,
                    ('image', 'label', 'mask') + (('name',) if with_ids else ()), 0,
                    cfg.on_corrupt)
  it.num_batches = num_batches
  return it


def _failing(elements: tf.data.Dataset, decoder: _Decoder) -> list[str]:
  """Decodes elements one by one (eagerly) and returns the names of those that fail."""
  names = []
  for el in elements:
    if 'valid' in el and not el['valid']:
      continue
    try:
      decoder.one(el['data'][0], el['pos'])
    except tf.errors.OpError:
      names.append(el['name'][0].numpy().decode())
  return names
