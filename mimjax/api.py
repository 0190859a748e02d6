"""`mimjax.load_pretrained(path)`: a pre-trained MAE/LUT encoder and decoder, ready to run.

    model = mimjax.load_pretrained("exports/mae_b16")      # a directory written by export.save_hf
    tokens = model.encode(images)                          # (N, 1 + L, D), cls first, after the final LN
    loss, pred, mask = model.reconstruct(images, noise)    # noise: (N, L) in [0, 1)

`images` are NHWC float32 (numpy or jax), already mean/std-normalized. Both functions are jit-compiled.

Sources are tried in the order of `_LOADERS`: each entry is (name, what the directory must hold,
predicate, loader). A loader returns (MAE constructor kwargs, params with `encoder`/`decoder`,
image_size); anything else in the params (a LUT's heads) is dropped.
"""
import os
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from mimjax import errors
from mimjax import storage
from mimjax import workdir_layout
from mimjax.export import common
from mimjax.export import hf_vitmae
from mimjax.models import mae


class Pretrained:
  """A loaded MAE: `encode(images)` and `reconstruct(images, noise)`, both jit-compiled."""

  def __init__(self, model_kwargs: Mapping[str, Any], params: Mapping[str, Any],
               image_size: int | None = None, source: str = ""):
    # Register tokens live only in training workdirs (exports refuse them).
    self.num_registers = int(model_kwargs.get("num_registers", 0))
    self.model_kwargs = common.arch_kwargs(  # drops compute-only keys and LUT heads
        {k: v for k, v in model_kwargs.items() if k != "num_registers"})
    self.model = mae.MAE(**self.model_kwargs, num_registers=self.num_registers)
    self.params = jax.tree.map(jnp.asarray, {k: params[k] for k in ("encoder", "decoder")})
    self.image_size = image_size
    self.source = source
    self._encode = jax.jit(lambda p, x: self.model.apply({"params": p}, x, method="encode"))
    self._reconstruct = jax.jit(lambda p, x, n: self.model.apply({"params": p}, x, n))

  @property
  def patch(self) -> int:
    return self.model.patch

  def _images(self, images) -> jax.Array:
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be NHWC with 3 channels, got shape {images.shape}")
    if images.shape[1] % self.patch or images.shape[2] % self.patch:
      raise ValueError(f"image height and width must be multiples of the patch size {self.patch}, "
                       f"got {images.shape[1:3]}")
    return images

  def encode(self, images) -> jax.Array:
    """All tokens (cls first) after the final LayerNorm, no masking: (N, 1 + L, width)."""
    return self._encode(self.params, self._images(images))

  def reconstruct(self, images, noise) -> mae.Reconstruction:
    """(loss, pred (N, L, p*p*3), mask (N, L), 1 = removed), masking by argsort of `noise`."""
    images = self._images(images)
    noise = jnp.asarray(noise, jnp.float32)
    length = (images.shape[1] // self.patch) * (images.shape[2] // self.patch)
    if noise.shape != (images.shape[0], length):
      raise ValueError(f"noise must have shape (batch, patches) = {(images.shape[0], length)}, "
                       f"got {noise.shape}")
    return self._reconstruct(self.params, images, noise)

  def __repr__(self):
    return f"Pretrained({self.model_kwargs}, image_size={self.image_size}, source={self.source!r})"


def _load_from_export(path: str):
  return hf_vitmae.load_hf(path)


def _is_workdir(path: str) -> bool:
  return storage.path(path).joinpath(workdir_layout.CHECKPOINTS).is_dir()


def _load_from_workdir(path: str):
  """A training workdir: the student of its latest checkpoint (its config names the model)."""
  from mimjax import state as state_lib  # local: the trainer's modules pull in orbax and tf.data
  config, _, state = state_lib.restore_state(path)
  return state_lib.model_kwargs(config), state["params"], config.input.image_size


class _Loader(NamedTuple):
  name: str
  expects: str
  matches: Callable[[str], bool]
  load: Callable[[str], tuple[dict, dict, int]]


_LOADERS = [
    _Loader("export", "config.json + model.safetensors (a mimjax.export.save_hf directory or a "
            "Hugging Face ViTMAE checkpoint)", hf_vitmae.is_hf_dir, _load_from_export),
    _Loader("workdir", f"{workdir_layout.CHECKPOINTS}/ (a mimjax training workdir)", _is_workdir,
            _load_from_workdir),
]


def _find_loader(path: str) -> _Loader:
  storage.check_bucket(path)
  directory = storage.path(path)
  if directory.is_dir():
    for loader in _LOADERS:
      if loader.matches(path):
        return loader
  found = sorted(p.name for p in directory.iterdir())[:20] if directory.is_dir() else "no such directory"
  expected = "; or ".join(loader.expects for loader in _LOADERS)
  raise errors.PathNotFoundError(f"cannot load a pre-trained model from {path!r}: expected a directory "
                          f"holding {expected} (found: {found})")


def load_params(path: str | os.PathLike) -> dict:
  """The whole parameter tree of an export directory or a training workdir (for `init_from`)."""
  path = os.fspath(path)
  return _find_loader(path).load(path)[1]


def load_pretrained(path: str | os.PathLike) -> Pretrained:
  """Loads an exported model directory or a training workdir (its latest checkpoint)."""
  path = os.fspath(path)
  loader = _find_loader(path)
  model_kwargs, params, image_size = loader.load(path)
  return Pretrained(model_kwargs, params, image_size, source=f"{loader.name}:{path}")
