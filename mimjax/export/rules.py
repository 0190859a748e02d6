"""The declarative conversion engine: tables of rules, named transforms, one generic applier.

A `Rule` ties mimjax parameter path(s) to PyTorch state-dict key(s) through a *named* transform
that has an inverse. A table is a plain list of rules, generated per depth by the layout modules
(`timm_vit.py`, `hf_vitmae.py`); the engine below applies a table in either direction and reports
missing and unexpected keys on both sides in one clear error.

mimjax paths are '/'-joined (`encoder/transformer/block0/attn/qkv/kernel`); torch keys are
'.'-joined. Every array is numpy float32; no torch is needed to convert or write.

A rule with no mimjax path is a *constant*: its forward transform makes the torch tensor(s) from the
rule's arguments alone (fixed position embeddings, a fresh classifier head) and its inverse checks or
ignores the incoming tensor(s) and yields nothing.
"""
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mimjax import errors
from mimjax.models import vit


class ConversionError(errors.UserError, ValueError):
  """A table could not be applied: missing/unexpected keys, bad shapes, or a value mimjax can't hold."""


@dataclasses.dataclass(frozen=True)
class Rule:
  mimjax: tuple[str, ...]     # mimjax parameter paths ('/'-joined); empty for a constant
  torch: tuple[str, ...]      # torch state-dict keys ('.'-joined)
  transform: str              # a name in TRANSFORMS
  args: tuple[tuple[str, Any], ...] = ()  # keyword arguments of the transform (hashable pairs)

  @property
  def kwargs(self) -> dict[str, Any]:
    return dict(self.args)


@dataclasses.dataclass(frozen=True)
class Transform:
  """forward: mimjax arrays -> torch arrays; inverse: torch arrays -> mimjax arrays (both lists)."""
  forward: Callable[..., list]
  inverse: Callable[..., list]


def rule(mimjax, torch, transform: str = "identity", **args) -> Rule:
  as_tuple = lambda x: (x,) if isinstance(x, str) else tuple(x)
  if transform not in TRANSFORMS:
    raise ValueError(f"unknown transform {transform!r}; known: {sorted(TRANSFORMS)}")
  return Rule(as_tuple(mimjax), as_tuple(torch), transform, tuple(sorted(args.items())))


# ----------------------------------------------------------------------------------------------
# Named transforms.
# ----------------------------------------------------------------------------------------------


def _identity():
  return Transform(lambda xs: list(xs), lambda ys: list(ys))


def _dense_kernel():
  """Flax Dense kernel (in, out) <-> torch Linear weight (out, in)."""
  return Transform(lambda xs: [xs[0].T], lambda ys: [ys[0].T])


def _conv_kernel():
  """Flax Conv kernel (kh, kw, in, out) <-> torch Conv2d weight (out, in, kh, kw)."""
  return Transform(lambda xs: [xs[0].transpose(3, 2, 0, 1)], lambda ys: [ys[0].transpose(2, 3, 1, 0)])


def _split3_kernel():
  """Fused qkv kernel (D, 3D), output order [q | k | v] <-> three torch Linear weights (D, D)."""
  def forward(xs):
    return [part.T for part in np.split(xs[0], 3, axis=1)]
  def inverse(ys):
    return [np.concatenate([y.T for y in ys], axis=1)]
  return Transform(forward, inverse)


def _split3_bias():
  """Fused qkv bias (3D,) <-> three torch biases (D,)."""
  return Transform(lambda xs: list(np.split(xs[0], 3)), lambda ys: [np.concatenate(ys)])


def _sincos_table(width: int, grid: tuple[int, int], atol: float = 1e-5):
  """Constant: the fixed 2D sin-cos table (1, 1+L, width) with a zero cls row (`vit.sincos_2d`).

  The inverse refuses anything else: mimjax computes these in the forward pass and cannot hold
  learned or interpolated position embeddings.
  """
  def table():
    return vit.sincos_2d(width, tuple(grid))[None]

  def inverse(ys):
    expected = table()
    got = ys[0]
    if got.shape != expected.shape:
      raise ConversionError(
          f"position embedding has shape {got.shape}, expected {expected.shape} (the fixed sin-cos "
          f"table for width {width} on a {grid[0]}x{grid[1]} patch grid)")
    err = float(np.max(np.abs(got.astype(np.float64) - expected)))
    if not err <= atol:
      raise ConversionError(
          f"position embedding is not the fixed 2D sin-cos table (max abs difference {err:.3g}); "
          "mimjax computes its position embeddings and cannot represent learned ones")
    return []
  return Transform(lambda xs: [table()], inverse)


def _trunc_normal_head(num_classes: int, width: int, std: float, seed: int,
                       low: float = -2.0, high: float = 2.0):
  """Constant: a fresh classifier, weight ~ N(0, std) truncated to [low, high], seeded; bias 0.

  As MAE fine-tuning's `trunc_normal_(head.weight, std=2e-5)`, whose bounds (-2, 2) are absolute
  values (torch's defaults), so with std 2e-5 the truncation never bites. The inverse drops the head.
  """
  def forward(xs):
    rng = np.random.default_rng(seed)
    weight = std * rng.standard_normal((num_classes, width))
    while np.any(bad := (weight < low) | (weight > high)):
      weight[bad] = std * rng.standard_normal(int(bad.sum()))
    return [weight.astype(np.float32), np.zeros((num_classes,), np.float32)]
  return Transform(forward, lambda ys: [])


def _drop():
  """mimjax parameters the torch model has no place for (the final norm of a global-pool export)."""
  def inverse(ys):
    raise ConversionError("this layout drops parameters on export and cannot be imported back")
  return Transform(lambda xs: [], inverse)


def _fresh_layernorm(width: int):
  """Constant: a freshly initialized LayerNorm (weight 1, bias 0), as nn.LayerNorm starts."""
  forward = lambda xs: [np.ones((width,), np.float32), np.zeros((width,), np.float32)]
  return Transform(forward, lambda ys: [])


TRANSFORMS: dict[str, Callable[..., Transform]] = {
    "identity": _identity,
    "dense_kernel": _dense_kernel,
    "conv_kernel": _conv_kernel,
    "split3_kernel": _split3_kernel,
    "split3_bias": _split3_bias,
    "sincos_table": _sincos_table,
    "trunc_normal_head": _trunc_normal_head,
    "drop": _drop,
    "fresh_layernorm": _fresh_layernorm,
}


# ----------------------------------------------------------------------------------------------
# Rule constructors shared by the layouts.
# ----------------------------------------------------------------------------------------------


def dense(mj: str, pt: str) -> list[Rule]:
  return [rule(f"{mj}/kernel", f"{pt}.weight", "dense_kernel"), rule(f"{mj}/bias", f"{pt}.bias")]


def layernorm(mj: str, pt: str) -> list[Rule]:
  return [rule(f"{mj}/scale", f"{pt}.weight"), rule(f"{mj}/bias", f"{pt}.bias")]


def pos_embed(pt: str, width: int, grid: tuple[int, int], learned: bool) -> Rule:
  """The position embedding: a classifier's trained `encoder/pos_embed` (same layout, (1, 1+L,
  width), cls row first), or the fixed sin-cos table as a constant."""
  if learned:
    return rule("encoder/pos_embed", pt)
  return rule((), pt, "sincos_table", width=width, grid=grid)


def conv(mj: str, pt: str) -> list[Rule]:
  return [rule(f"{mj}/kernel", f"{pt}.weight", "conv_kernel"), rule(f"{mj}/bias", f"{pt}.bias")]


def split_qkv(mj: str, pt_q: str, pt_k: str, pt_v: str) -> list[Rule]:
  return [rule(f"{mj}/kernel", (f"{pt_q}.weight", f"{pt_k}.weight", f"{pt_v}.weight"),
               "split3_kernel"),
          rule(f"{mj}/bias", (f"{pt_q}.bias", f"{pt_k}.bias", f"{pt_v}.bias"), "split3_bias")]


def block(mj: str, pt: str, names: Mapping[str, Any]) -> list[Rule]:
  """One transformer block; `names` maps the mimjax sub-modules (norm1, qkv, out, norm2, fc1, fc2)
  to the torch ones. A 3-tuple for `qkv` splits the fused projection into separate q, k, v."""
  qkv = names["qkv"]
  rules = layernorm(f"{mj}/norm1", f"{pt}.{names['norm1']}")
  if isinstance(qkv, str):
    rules += dense(f"{mj}/attn/qkv", f"{pt}.{qkv}")
  else:
    rules += split_qkv(f"{mj}/attn/qkv", *(f"{pt}.{n}" for n in qkv))
  rules += dense(f"{mj}/attn/out", f"{pt}.{names['out']}")
  rules += layernorm(f"{mj}/norm2", f"{pt}.{names['norm2']}")
  rules += dense(f"{mj}/fc1", f"{pt}.{names['fc1']}")
  rules += dense(f"{mj}/fc2", f"{pt}.{names['fc2']}")
  return rules


# ----------------------------------------------------------------------------------------------
# The engine.
# ----------------------------------------------------------------------------------------------


def _keys_error(what: str, missing: Sequence[str], unexpected: Sequence[str]) -> ConversionError:
  lines = [f"{what} does not match the conversion table:"]
  if missing:
    lines.append(f"  missing ({len(missing)}): {', '.join(sorted(missing))}")
  if unexpected:
    lines.append(f"  unexpected ({len(unexpected)}): {', '.join(sorted(unexpected))}")
  return ConversionError("\n".join(lines))


def _check_duplicates(rules: Sequence[Rule]):
  for side in ("mimjax", "torch"):
    seen = set()
    for r in rules:
      for key in getattr(r, side):
        if key in seen:
          raise ValueError(f"conversion table names {side} key {key!r} twice")
        seen.add(key)


def _float32(name: str, value) -> np.ndarray:
  array = np.asarray(value)
  if array.dtype != np.float32:
    if not np.issubdtype(array.dtype, np.floating):
      raise ConversionError(f"{name}: expected a floating-point array, got {array.dtype}")
    array = array.astype(np.float32)
  return array


def _check_shapes(arrays: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], what: str):
  bad = [f"{k}: got {tuple(np.shape(arrays[k]))}, expected {tuple(s)}"
         for k, s in sorted(expected.items()) if tuple(np.shape(arrays[k])) != tuple(s)]
  if bad:
    raise ConversionError(f"shape mismatch in {what}:\n  " + "\n  ".join(bad))


def to_torch(rules: Sequence[Rule], flat_params: Mapping[str, Any], scope: Sequence[str],
             expected_shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
  """mimjax -> torch. `flat_params` maps '/'-paths to arrays; keys outside `scope` are ignored.

  Every parameter under `scope` must be consumed by a rule and every rule's paths must exist;
  with `expected_shapes` (flat path -> shape, e.g. from `jax.eval_shape`) shapes are checked too.
  """
  _check_duplicates(rules)
  in_scope = {k for k in flat_params if k.split("/", 1)[0] in scope}
  wanted = {p for r in rules for p in r.mimjax}
  if wanted != in_scope:
    raise _keys_error(f"the mimjax parameter tree (under {', '.join(scope)})",
                      sorted(wanted - in_scope), sorted(in_scope - wanted))
  if expected_shapes is not None:
    _check_shapes(flat_params, {k: s for k, s in expected_shapes.items() if k in wanted},
                  "the mimjax parameters")
  out = {}
  for r in rules:
    xs = [_float32(p, flat_params[p]) for p in r.mimjax]
    ys = TRANSFORMS[r.transform](**r.kwargs).forward(xs)
    for key, y in zip(r.torch, ys, strict=True):
      out[key] = np.ascontiguousarray(y, dtype=np.float32)
  return out


def from_torch(rules: Sequence[Rule], state: Mapping[str, Any],
               expected_shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
  """torch -> mimjax: returns flat '/'-paths -> float32 arrays. Every key must be consumed.

  With `expected_shapes` (flat path -> shape, e.g. from `jax.eval_shape`), shapes are checked too.
  """
  _check_duplicates(rules)
  wanted = {k for r in rules for k in r.torch}
  if wanted != set(state):
    raise _keys_error("the PyTorch state dict", sorted(wanted - set(state)),
                      sorted(set(state) - wanted))
  out = {}
  for r in rules:
    ys = [_float32(k, state[k]) for k in r.torch]
    try:
      xs = TRANSFORMS[r.transform](**r.kwargs).inverse(ys)
    except ConversionError as e:
      raise ConversionError(f"{', '.join(r.torch)}: {e}") from None
    except (ValueError, IndexError) as e:  # e.g. a split of mismatched shapes
      raise ConversionError(f"{', '.join(r.torch)}: cannot apply {r.transform!r}: {e}") from e
    for path, x in zip(r.mimjax, xs, strict=True):
      out[path] = np.ascontiguousarray(x, dtype=np.float32)
  if expected_shapes is not None:
    if set(expected_shapes) != set(out):
      raise _keys_error("the converted parameters vs the model", sorted(set(expected_shapes) - set(out)),
                        sorted(set(out) - set(expected_shapes)))
    _check_shapes(out, expected_shapes, "the converted parameters (vs the model the config describes)")
  return out
