"""The LUT paper's analyses of an encoder, as numbers (mimjax-analyze draws them).

  mean_attention_distance   per head: the mean over images and query patches of
                            sum_k A[q, k] * ||pos_q - pos_k|| in pixels (patch centres), the
                            ViT paper's definition; queries and keys are the patches (cls and
                            registers excluded), each query's weights renormalized over them
  attention_entropy         per head: the entropy (nats) of each patch query's full attention row
  singular_spectrum         singular values of the covariance of centred features, sorted,
                            divided by the largest (plotted on a log scale); effective_rank is
                            exp(entropy of the values normalized to sum 1) (Roy & Vetterli 2007)
  token_norm_stats          per layer, the distribution of token norms in the residual stream
                            (high-norm outlier tokens, Darcet et al. 2023), cls and registers apart

`EncoderInternals` runs the encoder with its attention weights and block outputs recorded
(`mutable=["intermediates"]`; training never records them).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def patch_centres(grid: tuple[int, int], patch: int) -> np.ndarray:
  """(rows * cols, 2) pixel coordinates (y, x) of the patch centres, row-major."""
  rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
  return (np.stack([rows.ravel(), cols.ravel()], axis=1) + 0.5) * patch


def patch_distances(grid: tuple[int, int], patch: int) -> np.ndarray:
  """(L, L) Euclidean pixel distances between patch centres."""
  c = patch_centres(grid, patch)
  return np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))


def _patch_block(attn, num_prefix: int):
  """Patch queries x patch keys, each row renormalized to sum 1."""
  a = np.asarray(attn, np.float64)[..., num_prefix:, num_prefix:]
  return a / np.maximum(a.sum(-1, keepdims=True), 1e-30)


def attention_distance_sum(attn, grid, patch: int, num_prefix: int = 1) -> np.ndarray:
  """(heads,) the sum over images and patch queries of the mean attended distance (pixels)."""
  a = _patch_block(attn, num_prefix)
  return np.einsum("nhqk,qk->h", a, patch_distances(grid, patch))


def mean_attention_distance(attn, grid, patch: int, num_prefix: int = 1) -> np.ndarray:
  """(heads,) mean attention distance in pixels of (N, heads, T, T) attention weights whose
  first `num_prefix` tokens are cls (and registers) and the rest the grid's patches."""
  n, _, t, _ = np.shape(attn)
  return attention_distance_sum(attn, grid, patch, num_prefix) / (n * (t - num_prefix))


def attention_entropy_sum(attn, num_prefix: int = 1) -> np.ndarray:
  """(heads,) the sum over images and patch queries of the attention rows' entropy (nats)."""
  a = np.asarray(attn, np.float64)[..., num_prefix:, :]
  return -np.sum(a * np.log(np.maximum(a, 1e-30)), axis=(0, 2, 3))


def attention_entropy(attn, num_prefix: int = 1) -> np.ndarray:
  n, _, t, _ = np.shape(attn)
  return attention_entropy_sum(attn, num_prefix) / (n * (t - num_prefix))


def singular_spectrum(features) -> np.ndarray:
  """Singular values of the covariance of the centred (N, D) features, descending, / the largest."""
  x = np.asarray(features, np.float64)
  x = x - x.mean(axis=0, keepdims=True)
  s = np.linalg.svd(x.T @ x / len(x), compute_uv=False)
  return s / s[0] if s[0] > 0 else s


def effective_rank(spectrum) -> float:
  """exp(entropy of the spectrum normalized to sum 1): between 1 and the number of values."""
  p = np.asarray(spectrum, np.float64)
  p = p[p > 0] / p[p > 0].sum()
  return float(np.exp(-np.sum(p * np.log(p))))


def numerical_rank(spectrum, tol: float = 1e-6) -> int:
  """How many normalized singular values exceed `tol`."""
  return int(np.sum(np.asarray(spectrum) > tol))


def token_norm_stats(tokens, num_registers: int = 0) -> dict:
  """Norm statistics of (N, T, D) tokens (cls first, then registers, then patches)."""
  norms = np.linalg.norm(np.asarray(tokens, np.float64), axis=-1)
  patches = norms[:, 1 + num_registers:].ravel()
  median = float(np.median(patches))
  out = dict(cls=float(norms[:, 0].mean()), patch_median=median,
             patch_p99=float(np.percentile(patches, 99)), patch_max=float(patches.max()),
             # High-norm outliers: patch tokens more than twice the median patch norm.
             patch_outlier_fraction=float(np.mean(patches > 2 * median)))
  if num_registers:
    out["registers"] = float(norms[:, 1:1 + num_registers].mean())
  return out


class Internals(NamedTuple):
  attention: list   # per layer (N, heads, T, T), T = 1 + registers + patches
  tokens: list      # per layer (N, T, width): the residual stream after the block
  output: jax.Array  # (N, 1 + patches, width) after the final LayerNorm (registers dropped)


def encoder_internals(model, params, images) -> Internals:
  """Runs `model.encode` on normalized `images`, recording every block's attention and output."""
  out, state = model.apply({"params": params}, images, method="encode",
                           mutable=["intermediates"])
  blocks = state["intermediates"]["encoder"]["transformer"]
  depth = len([k for k in blocks if k.startswith("block")])
  layer = lambda i: blocks[f"block{i}"]
  return Internals([layer(i)["attn"]["attention"][0] for i in range(depth)],
                   [layer(i)["tokens"][0] for i in range(depth)], out)
