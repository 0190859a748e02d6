"""Where examples come from, and in which order: image folders and prepared tfds datasets.

A source turns (seed, step, shard) into a tf.data stream of *undecoded* elements:
  pos    int64      global position of the example in the training stream (keys augmentation)
  data   string[K]  candidates: file paths (FileSource) or encoded bytes (TfdsSource); the first
                    is the example, the others substitutes used only if it cannot be decoded
                    (the next examples of the order; for streams, the neighbouring records)
  name   string[K]  file path or tfds record id, for error messages and tests
  label  int32[K]   class index, -1 if the dataset has none
  valid  bool       (eval only) False for the padding that fills the last batch

The global batch of step k is rows [k*B, (k+1)*B) of that stream; a shard (index, count) reads
rows [index*B/count, (index+1)*B/count) of each global batch, i.e. one process's share.

* FileSource (folders, offline_photos) has random access: epoch e is a permutation of all indices
  drawn from (seed, e), cut into N // B global batches. The global batch is then independent of
  the process count, and starting at step k only slices index tensors: nothing is read or decoded.
* TfdsSource reads record streams: each shard reads its own `tfds.even_splits` part, with file
  order and a shuffle buffer seeded by (seed, epoch); starting at step k rebuilds epoch k // spe
  and skips the serialized records before its offset (read, never decoded). Its batches depend on
  the process count, since each process shuffles only its part.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import re
from typing import Iterator

import numpy as np

from mimjax.data import digits
from mimjax.data import offline
from mimjax.data.config import DIGITS, DataConfigError, FOLDER, OFFLINE
from mimjax.data.tf_host import tf

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
_SLICE = re.compile(r'^(?P<base>[\w-]+)(\[(?P<start>-?\d*%?):(?P<stop>-?\d*%?)\])?$')


# Element functions are plain TF ops with no Python control flow on tensors: skipping
# autograph's conversion makes building a pipeline ~2x faster.
graph_fn = tf.autograph.experimental.do_not_convert


@dataclasses.dataclass(frozen=True)
class Shard:
  """Rows [index * B / count, (index + 1) * B / count) of every global batch of size B."""
  index: int = 0
  count: int = 1


def seed_key(seed: int, salt: int) -> tf.Tensor:
  """A stateless-op seed [2] for one purpose (salt) of a run's seed."""
  return tf.constant([seed % (1 << 63), salt], tf.int64)


def fold_in(key, data) -> tf.Tensor:
  return tf.random.experimental.stateless_fold_in(key, tf.cast(data, tf.int64))


def python_seed(seed: int, salt: int, epoch: int) -> int:
  """An int seed for APIs that want one (tfds file shuffle, tf.data shuffle)."""
  return int(np.random.SeedSequence([seed % (1 << 63), salt, epoch]).generate_state(1)[0])


def _expand(el):
  """Makes data/name/label candidate vectors of length 1 (no substitutes)."""
  return dict(el, data=el['data'][None], name=el['name'][None], label=el['label'][None])


def with_neighbours(ds: tf.data.Dataset, reach: int) -> tf.data.Dataset:
  """Gives each record of a stream the `reach` records after it and the `reach` before it as
  substitutes (a stream has no index to look others up by).

  A scan keeps a window of 2 * reach + 1 records and emits its centre, so even the first and
  last records of a stream have `reach` real substitutes; the blanks that pad the window's ends
  are ordered after the real candidates.
  """
  if reach == 0:
    return ds.map(graph_fn(_expand))
  keys = ('data', 'name', 'label')
  width = 2 * reach + 1
  blank = dict(data=tf.constant(''), name=tf.constant(''), label=tf.constant(-1, tf.int32))
  init = {key: tf.fill([width - 1], blank[key]) for key in keys}
  # Centre first, then the records after it, then those before it (nearest first).
  order = [reach] + list(range(reach + 1, width)) + list(range(reach - 1, -1, -1))

  def step(state, el):
    window = {key: tf.concat([state[key], el[key][None]], 0) for key in keys}
    cand = {key: tf.gather(window[key], order) for key in keys}
    real_first = tf.argsort(tf.cast(tf.equal(cand['name'], ''), tf.int32), stable=True)
    out = {key: tf.gather(cand[key], real_first) for key in keys}
    return {key: window[key][1:] for key in keys}, out

  ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(reach))
  return ds.scan(init, graph_fn(step)).skip(reach)  # the first outputs centre on padding


def _parse_split(split: str) -> tuple[str, str | None, str | None]:
  m = _SLICE.match(split.replace(' ', ''))
  if not m:
    raise DataConfigError(f'config.split={split!r} is not a split name like "train" or '
                          '"train[:90%]".')
  return m['base'], m['start'], m['stop']


def _bound(text: str | None, n: int, default: int) -> int:
  if not text:
    return default
  value = round(float(text[:-1]) * n / 100) if text.endswith('%') else int(text)
  return max(0, min(n, value + n if value < 0 else value))


# ---------------------------------------------------------------------------------------------
# Folders of images (and the offline dataset, which is one).
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def list_images(root: str) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
  """(paths, labels, classes) under root, sorted; labels index the top-level subfolders.

  Images directly in root get label -1. Listed once per process (cached): listing a large
  folder is the slow part of validating a config.
  """
  found = []
  for dirpath, _, filenames in tf.io.gfile.walk(root):
    for f in filenames:
      if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'):
        found.append(os.path.join(dirpath, f))
  found.sort()
  tops = [os.path.relpath(p, root).split(os.sep) for p in found]
  classes = tuple(sorted({t[0] for t in tops if len(t) > 1}))
  index = {c: i for i, c in enumerate(classes)}
  labels = tuple(index[t[0]] if len(t) > 1 else -1 for t in tops)
  return tuple(found), labels, classes


# tfds names the held-out split 'validation', ImageNet-style folders name it 'val': either name
# finds either folder, so evaluators' default split works on both.
_ALIASES = {'validation': 'val', 'val': 'validation'}


def _split_folder(root: str, base: str) -> str | None:
  """The subfolder of root that holds split `base` (itself or its alias), or None."""
  for name in (base, _ALIASES.get(base)):
    if name and tf.io.gfile.isdir(os.path.join(root, name)):
      return name
  return None


class FileSource:
  """Image files with random access by index; see the module docstring for the order."""

  reads_files = True

  def __init__(self, root: str, split: str = 'train'):
    base, start, stop = _parse_split(split)
    if not tf.io.gfile.isdir(root):
      raise DataConfigError(f'Image folder {root!r} does not exist (config.folder).')
    folder = _split_folder(root, base)
    if folder:
      root = os.path.join(root, folder)  # an ImageNet-style layout: root/train, root/val
    elif base != 'train':
      subfolders = sorted(d.rstrip('/') for d in tf.io.gfile.listdir(root)
                          if tf.io.gfile.isdir(os.path.join(root, d)))
      raise DataConfigError(
          f'Split {split!r} not found: no folder {os.path.join(root, base)!r}'
          f'{" (nor " + repr(_ALIASES[base]) + ")" if base in _ALIASES else ""}; its subfolders: '
          f"{subfolders or 'none'}. For a folder dataset, 'train' means every image in the "
          'folder unless it has a train/ subfolder.')
    paths, labels, self.classes = list_images(root)
    if not paths:
      raise DataConfigError(f'Image folder {root!r} holds no images ({"/".join(IMAGE_EXTENSIONS)}).')
    n = len(paths)
    lo, hi = _bound(start, n, 0), _bound(stop, n, n)
    if (lo, hi) != (0, n):
      # Slice a fixed shuffle of the sorted files, so that 'train[:90%]' holds every class.
      keep = np.sort(np.random.default_rng(0).permutation(n)[lo:hi])
      paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    if not paths:
      raise DataConfigError(f'Split {split!r} of {root!r} is empty.')
    self.description = f'{root} [{split}]'
    self.paths = np.asarray(paths, dtype=object)
    self.labels = np.asarray(labels, np.int32)
    self.num_examples = len(paths)

  def steps_per_epoch(self, batch_size: int, shard: Shard) -> int:
    del shard  # every shard walks the same global batches
    return self.num_examples // batch_size

  def train_chunks(self, *, seed: int, salt: int, batch_size: int, shard: Shard,
                   start_step: int, num_candidates: int, **unused) -> Iterator[tf.data.Dataset]:
    """One infinite stream of elements from global step start_step on."""
    del unused
    n, b = self.num_examples, batch_size
    bpp = b // shard.count
    spe = self.steps_per_epoch(b, shard)
    epoch0, offset = divmod(start_step, spe)
    key = seed_key(seed, salt)
    # Positions inside an epoch of the rows this shard owns: (step, row) -> step * B + row.
    q = (np.arange(spe)[:, None] * b + np.arange(shard.index * bpp, (shard.index + 1) * bpp))
    q = tf.constant(q.reshape(-1), tf.int64)
    k = tf.range(num_candidates, dtype=tf.int64)

    def epoch(e):
      perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), fold_in(key, e))
      # Substitutes are the next examples of the epoch's order (wrapping around).
      idx = tf.gather(perm, (q[:, None] + k[None, :]) % n)
      first = tf.where(e == epoch0, offset * bpp, 0)  # resume: drop index rows, decode nothing
      return tf.data.Dataset.from_tensor_slices(dict(pos=e * spe * b + q[first:], idx=idx[first:]))

    ds = tf.data.Dataset.range(epoch0, np.iinfo(np.int64).max).flat_map(graph_fn(epoch))
    yield self._elements_from(ds)

  def _elements_from(self, ds):
    """Index rows (key 'idx') -> undecoded elements: the only place paths are looked up."""
    paths = tf.constant(self.paths.astype(str))
    labels = tf.constant(self.labels)

    def lookup(el):
      el = dict(el)
      idx = el.pop('idx')
      return dict(el, data=tf.gather(paths, idx), name=tf.gather(paths, idx),
                  label=tf.gather(labels, idx))

    return ds.map(graph_fn(lookup))

  def eval_elements(self, *, batch_size: int, shard: Shard,
                    options: tf.data.Options | None = None) -> tuple[tf.data.Dataset, int]:
    """Every example once, in sorted order, padded to whole global batches."""
    del options
    n, b = self.num_examples, batch_size
    bpp = b // shard.count
    num_batches = math.ceil(n / b)
    q = np.arange(num_batches)[:, None] * b + np.arange(shard.index * bpp, (shard.index + 1) * bpp)
    q = q.reshape(-1)
    ds = tf.data.Dataset.from_tensor_slices(
        dict(pos=q.astype(np.int64), idx=np.minimum(q, n - 1)[:, None].astype(np.int64),
             valid=q < n))
    return self._elements_from(ds), num_batches


# ---------------------------------------------------------------------------------------------
# Prepared tfds datasets.
# ---------------------------------------------------------------------------------------------
def _prepare_hint(name: str, data_dir: str) -> str:
  target = f' --data_dir {data_dir}' if data_dir else ''
  return (f'Prepare it first, e.g. `tfds build {name}{target}`; datasets with a manual download '
          f'(imagenet2012) need the archives too: `tfds build {name}{target} --manual_dir DIR`. '
          'mimjax never downloads data.')


class TfdsSource:
  """A prepared tfds dataset read as record streams; see the module docstring for the order."""

  reads_files = False

  def __init__(self, name: str, split: str = 'train', data_dir: str = ''):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self._tfds = tfds
    try:
      # Constructing a builder only reads metadata; download_and_prepare is never called.
      self.builder = tfds.builder(name, data_dir=data_dir or None)
    except Exception as e:  # DatasetNotFoundError and friends  # pylint: disable=broad-except
      raise DataConfigError(f'config.dataset={name!r} is neither a tfds dataset nor '
                            f"'{FOLDER}'/'{OFFLINE}': {str(e).splitlines()[0]}") from None
    if not self.builder.is_prepared():
      raise DataConfigError(
          f'tfds dataset {name!r} is not prepared in {self.builder.data_dir!r}. '
          + _prepare_hint(name, data_dir))
    splits = self.builder.info.splits
    base, _, _ = _parse_split(split)
    if base not in splits:
      raise DataConfigError(f'Split {split!r} not found in tfds dataset {name!r}; it has '
                            f'{sorted(splits.keys())}.')
    try:
      self.num_examples = splits[split].num_examples
    except Exception as e:  # pylint: disable=broad-except
      raise DataConfigError(f'Bad split {split!r} for {name!r}: {e}') from None
    if not self.num_examples:
      raise DataConfigError(f'Split {split!r} of tfds dataset {name!r} is empty.')
    features = self.builder.info.features
    self.image_key = 'image' if 'image' in features else next(
        (k for k, f in features.items() if isinstance(f, tfds.features.Image)), None)
    if self.image_key is None:
      raise DataConfigError(f'tfds dataset {name!r} has no image feature.')
    self.label_key = 'label' if 'label' in features else None
    self.split = split
    self.description = f'tfds {name} [{split}] in {self.builder.data_dir}'

  def steps_per_epoch(self, batch_size: int, shard: Shard) -> int:
    # even_splits sizes differ by at most one: every shard stops at the smallest one.
    return (self.num_examples // shard.count) // (batch_size // shard.count)

  def _read(self, split, *, shuffle_seed, options) -> tf.data.Dataset:
    tfds = self._tfds
    read_config = tfds.ReadConfig(
        shuffle_seed=shuffle_seed, add_tfds_id=True, try_autocache=False, options=options)
    ds = self.builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None, read_config=read_config,
        decoders={self.image_key: tfds.decode.SkipDecoding()})  # bytes: decode later, maybe never
    label_key = self.label_key
    return ds.map(graph_fn(lambda ex: dict(
        data=ex[self.image_key], name=ex['tfds_id'],
        label=tf.cast(ex[label_key], tf.int32) if label_key else tf.constant(-1, tf.int32))))

  def train_chunks(self, *, seed: int, salt: int, batch_size: int, shard: Shard,
                   start_step: int, num_candidates: int, shuffle_buffer: int,
                   options: tf.data.Options | None = None) -> Iterator[tf.data.Dataset]:
    """One finite stream per epoch, from global step start_step on."""
    b = batch_size
    bpp = b // shard.count
    spe = self.steps_per_epoch(b, shard)
    epoch0, offset = divmod(start_step, spe)
    share = self._tfds.even_splits(self.split, shard.count)[shard.index]
    row0 = shard.index * bpp
    for e in itertools.count(epoch0):
      pyseed = python_seed(seed, salt, e)
      ds = self._read(share, shuffle_seed=pyseed, options=options)
      ds = ds.shuffle(shuffle_buffer, seed=pyseed)
      ds = with_neighbours(ds, (num_candidates - 1) // 2).take(spe * bpp).enumerate()
      if e == epoch0 and offset:
        ds = ds.skip(offset * bpp)  # serialized records only: nothing is decoded
      yield ds.map(graph_fn(lambda q, el, e=e: dict(
          el, pos=e * spe * b + (q // bpp) * b + row0 + q % bpp)))

  def eval_elements(self, *, batch_size: int, shard: Shard,
                    options: tf.data.Options | None = None) -> tuple[tf.data.Dataset, int]:
    """Every example of the shard's part once, in file order, padded to whole batches."""
    bpp = batch_size // shard.count
    num_batches = math.ceil(math.ceil(self.num_examples / shard.count) / bpp)
    share = self._tfds.even_splits(self.split, shard.count)[shard.index]
    ds = self._read(share, shuffle_seed=None, options=options)
    ds = ds.map(graph_fn(lambda el: dict(el, valid=True)))
    pad = tf.data.Dataset.from_tensors(
        dict(data='', name='', label=tf.constant(-1, tf.int32), valid=False)).repeat()
    ds = ds.concatenate(pad).take(num_batches * bpp).enumerate()
    ds = ds.map(graph_fn(lambda q, el: _expand(dict(el, pos=q))))
    return ds, num_batches


def get_source(cfg, split: str | None = None):
  """The source named by cfg.dataset; raises DataConfigError if it cannot be read."""
  split = cfg.split if split is None else split
  if cfg.dataset == OFFLINE:
    return FileSource(offline.build(cfg.get('cache_dir', '')), split)
  if cfg.dataset == DIGITS:
    return FileSource(digits.build(cfg.get('cache_dir', '')), split)
  if cfg.dataset == FOLDER:
    return FileSource(os.path.expanduser(cfg.folder), split)
  return TfdsSource(cfg.dataset, split, cfg.get('data_dir', ''))
