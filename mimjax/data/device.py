"""From per-process numpy batches to global jax.Arrays.

Images cross to the devices as uint8 (4x fewer bytes than float32) and are normalized there
(pixels.py).

Each process's host pipeline reads exactly the rows of the global batch that its devices hold
under NamedSharding(mesh, P(batch_axes)): they are worked out from the sharding, then assembled
with jax.make_array_from_process_local_data.
"""
from __future__ import annotations

import collections
import math
from typing import Iterator, Sequence

import jax
from jax.sharding import Mesh, NamedSharding

from mimjax import sharding as sharding_lib
from mimjax.data import pipeline
from mimjax.data.config import DataConfigError


def process_rows(sharding: NamedSharding, global_batch: int) -> tuple[int, int]:
  """(index, count): this process holds rows [index * B / count, (index + 1) * B / count).

  Usually (jax.process_index(), jax.process_count()), but read off the sharding so that any
  mesh device order, or processes holding replicated rows, still lines up with what
  make_array_from_process_local_data expects.
  """
  rows = set()
  for index in sharding.addressable_devices_indices_map((global_batch,)).values():
    rows.update(range(*index[0].indices(global_batch)))
  lo, n = min(rows), len(rows)
  if max(rows) + 1 - lo != n or global_batch % n or lo % n:
    raise DataConfigError(
        f'This process holds batch rows {sorted(rows)} of {global_batch}: not one aligned block. '
        'Order the mesh devices by process.')
  return lo // n, global_batch // n


class GlobalBatchIterator:
  """Yields dicts of global jax.Arrays; keeps `prefetch` batches in flight to the devices."""

  def __init__(self, host: pipeline.HostIterator, sharding: NamedSharding, global_batch: int,
               prefetch: int = 2):
    self.host = host
    self._sharding = sharding
    self._global_batch = global_batch
    self._queue = collections.deque()
    self._prefetch = max(1, prefetch)

  @property
  def num_corrupt(self) -> int:
    """Corrupt images this process skipped (on_corrupt='skip'), for logging."""
    return self.host.num_corrupt

  def __iter__(self):
    return self

  def _put(self, batch):
    return {k: jax.make_array_from_process_local_data(
        self._sharding, v, (self._global_batch,) + v.shape[1:]) for k, v in batch.items()}

  def __next__(self) -> dict[str, jax.Array]:
    while len(self._queue) < self._prefetch:
      try:
        self._queue.append(self._put(next(self.host)))  # device_put is asynchronous
      except StopIteration:
        break
    if not self._queue:
      raise StopIteration
    return self._queue.popleft()


def _setup(cfg, mesh, batch_axes, training):
  mesh = mesh if mesh is not None else sharding_lib.make_mesh(data=-1, fsdp=1)
  try:
    sharding = sharding_lib.batch_sharding(mesh, batch_axes)
  except ValueError as e:
    raise DataConfigError(str(e)) from None
  num_devices = math.prod(mesh.shape[a] for a in batch_axes)
  pipeline.validate_config(cfg, training, jax.process_count(), num_devices)
  index, count = process_rows(sharding, cfg.batch_size)
  return sharding, index, count


def make_train_iterator(cfg, method, seed: int = 0, start_step: int = 0, *,
                        mesh: Mesh | None = None,
                        batch_axes: Sequence[str] = ('data', 'fsdp'),
                        prefetch: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Infinite global training batches of `method.batch_keys`, augmented by `method.augment`
  (a mimjax.methods.Method: see pipeline.make_host_iterator).

  The batch at step k depends only on (dataset, seed, k) (and the process count for tfds); a
  run resumed with start_step=k sees what an uninterrupted run sees at step k.
  """
  sharding, index, count = _setup(cfg, mesh, batch_axes, True)
  host = pipeline.make_host_iterator(cfg, method, seed, start_step, process_index=index,
                                     process_count=count)
  return GlobalBatchIterator(host, sharding, cfg.batch_size, prefetch)


def make_eval_iterator(cfg, split: str | None = None, *, mesh: Mesh | None = None,
                       batch_axes: Sequence[str] = ('data', 'fsdp'),
                       prefetch: int = 2) -> Iterator[dict[str, jax.Array]]:
  """One pass of global eval batches {'image', 'label', 'mask'} (centre crops, no shuffle).

  The last batch is padded to the full size; 'mask' is False on the padding rows.
  """
  sharding, index, count = _setup(cfg, mesh, batch_axes, False)
  host = pipeline.make_host_eval_iterator(cfg, split, process_index=index, process_count=count)
  it = GlobalBatchIterator(host, sharding, cfg.batch_size, prefetch)
  it.num_batches = host.num_batches
  return it
