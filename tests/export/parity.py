"""Helpers for checking exports against their PyTorch consumers (tests/export, tests/models and
the fine-tuning and recipe tests use them).

`import_timm()` imports timm where torchvision is missing (the Makefile installs timm with --no-deps,
since torchvision has no CPU build here); `relative_error` is the parity measure.
"""
import enum
import importlib.machinery
import importlib.util
import sys
import types

import numpy as np


def relative_error(got, want) -> float:
  """max |got - want| / max |want|, in float64."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  if got.shape != want.shape:
    raise ValueError(f"shapes differ: {got.shape} vs {want.shape}")
  return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def import_timm():
  """Imports timm, with a stand-in torchvision if torchvision is not installed.

  timm imports torchvision at import time (transforms, datasets, ops) but its ViT never calls it.
  The stand-in module tree is on `sys.modules` only while timm imports (names looked up on it are
  inert placeholder classes), then removed, so transformers still sees no torchvision.
  """
  if "timm" in sys.modules:
    return sys.modules["timm"]
  if importlib.util.find_spec("torchvision") is not None:  # a real torchvision: nothing to do
    import timm  # pylint: disable=g-import-not-at-top
    import timm.models.vision_transformer  # pylint: disable=g-import-not-at-top,unused-import
    return timm

  class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"

  def module(name):
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    mod.__path__ = []
    def placeholder(attr):
      if attr.startswith("__"):
        raise AttributeError(attr)
      return type(attr, (), {"__init__": lambda self, *a, **k: None})
    mod.__getattr__ = placeholder
    sys.modules[name] = mod
    parent, _, child = name.rpartition(".")
    if parent:
      setattr(sys.modules[parent], child, mod)
    return mod

  names = ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.datasets",
           "torchvision.transforms", "torchvision.transforms.functional", "torchvision.utils",
           "torchvision.models", "torchvision.models.feature_extraction")
  try:
    for name in names:
      module(name)
    sys.modules["torchvision.transforms.functional"].InterpolationMode = InterpolationMode
    import timm  # pylint: disable=g-import-not-at-top
    import timm.models.vision_transformer  # pylint: disable=g-import-not-at-top,unused-import
  finally:
    for name in names:
      sys.modules.pop(name, None)
  return timm


def random_params(model_kwargs, image_size: int, seed: int = 0):
  """Random MAE params (numpy float32) with every value informative, without running `init`.

  Kernels ~ N(0, 1/fan_in), cls and mask tokens ~ N(0, 0.02) as at init, and, unlike a fresh init,
  biases ~ N(0, 0.1) and LayerNorm scales ~ 1 + N(0, 0.1), so that a parity check also sees a
  swapped or misplaced bias. Shapes come from `jax.eval_shape` (nothing is compiled).
  """
  from mimjax.export import common  # pylint: disable=g-import-not-at-top
  shapes = common.expected_shapes(model_kwargs, image_size, ("encoder", "decoder"))
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in sorted(shapes.items()):
    leaf = path.rsplit("/", 1)[-1]
    if leaf == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.standard_normal(shape) / np.sqrt(fan_in)
    elif leaf in ("cls", "mask_token"):
      value = 0.02 * rng.standard_normal(shape)
    elif leaf == "scale":
      value = 1 + 0.1 * rng.standard_normal(shape)
    else:
      value = 0.1 * rng.standard_normal(shape)
    flat[path] = value.astype(np.float32)
  return common.unflatten(flat)
