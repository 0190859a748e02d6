"""What the evaluators share: their input config, and frozen features of a labelled split.

Features are computed batch by batch on global batches (the batch axis split over the mesh, as
in training) and stay global `jax.Array`s sharded over that axis: no process ever holds a whole
split's features unless an evaluator gathers them.
"""
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from mimjax import data
from mimjax import sharding

FEATURES = ("cls", "mean")  # the [CLS] token, or the mean of the patch tokens (after the final LN)
_DATA_KEYS = ("dataset", "folder", "data_dir", "batch_size", "image_size")


def input_config(config: ml_collections.ConfigDict,
                 eval_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The trainer's `config.input` with the data keys the evaluator sets (non-empty) replacing it."""
  cfg = ml_collections.ConfigDict(config.input.to_dict())
  for key in _DATA_KEYS:
    if eval_config.get(key):
      cfg[key] = eval_config[key]
  if eval_config.get("dataset") and eval_config.dataset != config.input.dataset:
    cfg.folder = eval_config.get("folder", "")  # a different dataset: do not inherit its folder
  return cfg


def check_split(cfg, split: str, key: str, num_processes: int, num_devices: int,
                labelled: bool) -> None:
  """Raises ValueError naming `key` if `split` of `cfg`'s dataset cannot be read (or has no labels)."""
  try:
    data.validate_config(cfg, None, num_processes, num_devices)
    source = data.pipeline.get_source(cfg, split)
  except data.DataConfigError as e:
    raise ValueError(f"{key}: {split!r}: {e}") from None
  if labelled and not has_labels(source):
    raise ValueError(f"{key}: {source.description} has no labels: use a labelled dataset (a folder "
                     "needs one subfolder per class)")


def has_labels(source) -> bool:
  labels = getattr(source, "labels", None)
  if labels is not None:
    return bool(np.any(np.asarray(labels) >= 0))
  return getattr(source, "label_key", None) is not None


def encoder_features(model, feature: str) -> Callable:
  """(params, uint8 images) -> (N, width) float32 features of the encoder, no masking."""
  def fn(params, images):
    tokens = model.apply({"params": params}, data.normalize(images), method="encode")
    tokens = tokens.astype(jnp.float32)
    return tokens[:, 0] if feature == "cls" else jnp.mean(tokens[:, 1:], axis=1)
  return fn


def eval_batches(cfg, split: str, mesh) -> Iterator[dict[str, jax.Array]]:
  """One pass of global batches {'image', 'label', 'valid'}; padding rows get label -1 and
  valid False."""
  for batch in data.make_eval_iterator(cfg, split, mesh=mesh, batch_axes=sharding.BATCH_AXES):
    yield dict(image=batch["image"], label=_labels(batch["label"], batch["mask"]),
               valid=batch["mask"])


_labels = jax.jit(lambda label, mask: jnp.where(mask, label, -1))


class Extractor:
  """Features and labels of a whole split, as global arrays sharded over the batch axes."""

  def __init__(self, model, mesh, feature: str, normalize: bool):
    self.mesh = mesh
    self._rows = sharding.batch_sharding(mesh)
    encode = encoder_features(model, feature)

    def features(params, images):
      f = encode(params, images)
      if normalize:
        f = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
      return f

    self.features = jax.jit(features, out_shardings=self._rows)
    self._concat = jax.jit(lambda xs: jnp.concatenate(xs, axis=0), out_shardings=self._rows)

  def __call__(self, params, cfg, split: str) -> tuple[jax.Array, jax.Array]:
    feats, labels = [], []
    for batch in eval_batches(cfg, split, self.mesh):
      feats.append(self.features(params, batch["image"]))
      labels.append(batch["label"])
    return self._concat(feats), self._concat(labels)


def to_host(x: jax.Array) -> np.ndarray:
  """A global array as one numpy array on every process."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def replicate_params(params, mesh):
  """Parameters that live on other devices (a loaded model) placed replicated on `mesh`."""
  return jax.device_put(params, sharding.replicated(mesh))
