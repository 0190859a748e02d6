"""What the layouts share: model kwargs, expected shapes, flat trees, safetensors and JSON files."""
import functools
import importlib.metadata
import json
import math
import os
import tempfile
from typing import Any, Mapping

import numpy as np
import safetensors
import safetensors.numpy

from mimjax import storage
from mimjax.models import mae
from mimjax.models import vit
from mimjax.export.rules import ConversionError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# The MAE(...) constructor arguments that define the architecture (and so the exported files).
ARCH_KEYS = ("variant", "mask_ratio", "norm_pix_loss", "decoder_width", "decoder_depth",
             "decoder_heads")
# Constructor arguments that change only how the model computes (or a LUT head): not exported.
COMPUTE_KEYS = ("dtype", "attention_impl", "remat", "head_hidden")
CHANNELS = 3  # the MAE decoder predicts RGB patches


def mimjax_version() -> str:
  try:
    return importlib.metadata.version("mimjax")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def arch_kwargs(model_kwargs: Mapping[str, Any]) -> dict[str, Any]:
  """The architecture part of `MAE(**model_kwargs)`, with MAE's defaults filled in."""
  if model_kwargs.get("num_registers", 0):
    raise ConversionError(
        f"the model has {model_kwargs['num_registers']} register tokens "
        "(config.model.num_registers), which the timm and Hugging Face ViTs have no place for: "
        "export a model trained with config.model.num_registers=0, or use it through "
        "mimjax.load_pretrained(WORKDIR)")
  model_kwargs = {k: v for k, v in model_kwargs.items() if k != "num_registers"}
  unknown = set(model_kwargs) - set(ARCH_KEYS) - set(COMPUTE_KEYS)
  if unknown:
    raise ValueError(f"unknown model_kwargs {sorted(unknown)}: expected MAE(...) arguments "
                     f"{list(ARCH_KEYS)} (and optionally {list(COMPUTE_KEYS)}, not exported)")
  kwargs = {k: model_kwargs.get(k, getattr(mae.MAE, k)) for k in ARCH_KEYS}
  vit.decode_variant(kwargs["variant"])  # a clear error for a bad variant
  return kwargs


def grid_of(model_kwargs: Mapping[str, Any], image_size: int) -> tuple[int, int]:
  patch = vit.decode_variant(model_kwargs["variant"]).patch
  if not isinstance(image_size, (int, np.integer)) or image_size <= 0 or image_size % patch:
    raise ValueError(f"image_size must be a positive multiple of the patch size {patch}, "
                     f"got {image_size!r}")
  return (int(image_size) // patch,) * 2


def has_learned_pos(params: Mapping[str, Any], model_kwargs: Mapping[str, Any],
                    image_size: int) -> bool:
  """Whether `params` hold a trained position embedding (`encoder/pos_embed`, a classifier
  fine-tuned with it); refuses one trained for another image size than `image_size`."""
  table = params.get("encoder", {}).get("pos_embed")
  if table is None:
    return False
  grid = grid_of(model_kwargs, image_size)
  width = vit.decode_variant(model_kwargs["variant"]).width
  expected = (1, 1 + grid[0] * grid[1], width)
  if tuple(np.shape(table)) != expected:
    raise ConversionError(
        f"the learned position embedding has shape {tuple(np.shape(table))}, not {expected} "
        f"(image size {image_size}): export at the image size the classifier was fine-tuned at")
  return True


@functools.lru_cache(maxsize=32)
def _shapes(items: tuple[tuple[str, Any], ...], image_size: int) -> dict[str, tuple[int, ...]]:
  import jax  # pylint: disable=g-import-not-at-top
  import flax.traverse_util  # pylint: disable=g-import-not-at-top
  model = mae.MAE(**dict(items))
  grid = grid_of(dict(items), image_size)
  images = jax.ShapeDtypeStruct((1, image_size, image_size, CHANNELS), np.float32)
  noise = jax.ShapeDtypeStruct((1, grid[0] * grid[1]), np.float32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), images, noise)["params"]
  return {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(abstract, sep="/").items()}


def expected_shapes(model_kwargs: Mapping[str, Any], image_size: int,
                    scope: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
  """Flat path -> shape of the mimjax MAE params under `scope`, via `jax.eval_shape` (no arrays)."""
  shapes = _shapes(tuple(sorted(arch_kwargs(model_kwargs).items())), int(image_size))
  return {k: s for k, s in shapes.items() if k.split("/", 1)[0] in scope}


def flatten(params: Mapping[str, Any]) -> dict[str, Any]:
  """Nested params (a `{'params': ...}` wrapper is accepted) -> '/'-paths."""
  import flax.traverse_util  # pylint: disable=g-import-not-at-top
  if set(params) == {"params"}:
    params = params["params"]
  return flax.traverse_util.flatten_dict(dict(params), sep="/")


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  import flax.traverse_util  # pylint: disable=g-import-not-at-top
  return flax.traverse_util.unflatten_dict(dict(flat), sep="/")


# ----------------------------------------------------------------------------------------------
# Files: safetensors (no pickles) and JSON, written atomically.
# ----------------------------------------------------------------------------------------------


def _atomic_write(path: str, data: bytes):
  """Writes `data` to `path` (a local path or a URL) so that readers never see a partial file."""
  target = storage.path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  if storage.is_remote(path):
    target.write_bytes(data)  # an object appears whole, once its upload completes
    return
  fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-" + target.name)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, target)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_safetensors(tensors: Mapping[str, np.ndarray], path: str, metadata: Mapping[str, Any]):
  """Writes float32, C-contiguous, finite tensors; metadata values become strings."""
  bad = [k for k, v in tensors.items() if not np.all(np.isfinite(v))]
  if bad:
    raise ConversionError(f"refusing to export non-finite values (NaN or Inf) in {len(bad)} "
                          f"tensor(s): {', '.join(sorted(bad))}")
  arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
  meta = {"format": "pt", **{str(k): str(v) for k, v in metadata.items()}}
  _atomic_write(path, safetensors.numpy.save(arrays, metadata=meta))


def load_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  data = storage.path(path).read_bytes()
  # The metadata sits in the JSON header: 8 bytes of little-endian length, then the header.
  header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
  return safetensors.numpy.load(data), dict(header.get("__metadata__") or {})


def save_json(obj: Mapping[str, Any], path: str):
  _atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_json(path: str) -> dict[str, Any]:
  return json.loads(storage.path(path).read_text())


def count(shapes: Mapping[str, tuple[int, ...]]) -> int:
  return sum(math.prod(s) for s in shapes.values())
