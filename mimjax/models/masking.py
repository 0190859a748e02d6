"""Per-sample random masking by argsort of noise, as in the MAE reference.

Given the same `noise`, these functions keep exactly the patches the reference keeps.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Masking(NamedTuple):
  ids_keep: jax.Array     # (N, len_keep) kept token ids, in shuffled order
  mask: jax.Array         # (N, L) 1 for removed tokens, 0 for kept, original order
  ids_restore: jax.Array  # (N, L) un-shuffles [kept, removed] back to the original order


def num_kept(num_patches: int, mask_ratio: float) -> int:
  return int(num_patches * (1 - mask_ratio))


def _views(noise: jax.Array, mask_ratio: float, num_views: int) -> tuple[Masking, ...]:
  """View v keeps the disjoint slice ids_shuffle[:, v*len_keep:(v+1)*len_keep]."""
  length = noise.shape[1]
  len_keep = num_kept(length, mask_ratio)
  ids_shuffle = jnp.argsort(noise, axis=1)
  ids_restore = jnp.argsort(ids_shuffle, axis=1)
  positions = jnp.arange(length)
  views = []
  for v in range(num_views):
    start, stop = v * len_keep, (v + 1) * len_keep
    removed_shuffled = jnp.where((positions >= start) & (positions < stop), 0.0, 1.0)
    mask = jnp.take_along_axis(jnp.broadcast_to(removed_shuffled, noise.shape), ids_restore, axis=1)
    views.append(Masking(ids_shuffle[:, start:stop], mask, ids_restore))
  return tuple(views)


def random_masking(noise: jax.Array, mask_ratio: float) -> Masking:
  """Keeps the `len_keep` lowest-noise patches of each sample."""
  return _views(noise, mask_ratio, 1)[0]


def two_view_masking(noise: jax.Array, mask_ratio: float) -> tuple[Masking, Masking]:
  """LUT: view 1 keeps ids_shuffle[:len_keep], view 2 the disjoint ids_shuffle[len_keep:2*len_keep]."""
  if mask_ratio < 0.5:
    raise ValueError(f"two disjoint masks need mask_ratio >= 0.5, got {mask_ratio}")
  return _views(noise, mask_ratio, 2)


def sample_noise(rng: jax.Array, batch: int, num_patches: int) -> jax.Array:
  """The noise both masking functions take: U[0, 1) of shape (N, L)."""
  return jax.random.uniform(rng, (batch, num_patches), jnp.float32)
