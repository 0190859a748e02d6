"""ViT encoder with fixed 2D sin-cos position embeddings, as in the MAE reference.

Fine-tuning learns the table instead (`learned_pos`), starting from the same sin-cos values.

Parameters are float32; the compute dtype is a module attribute. XLA computes attention
(`attend`) unless `attention_impl='cudnn'` picks jax.nn.dot_product_attention's fused kernel.
"""
import dataclasses
import re
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LN_EPS = 1e-6

# name -> (width, depth, heads); MLP ratio 4 everywhere.
_WIDTHS = {
    "mu": (32, 2, 2),  # tests
    "nano": (64, 4, 4),  # the CPU demo
    "Ti": (192, 12, 3),
    "S": (384, 12, 6),
    "M": (512, 12, 8),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "H": (1280, 32, 16),
    "g": (1408, 40, 16),
}


@dataclasses.dataclass(frozen=True)
class VitSpec:
  width: int
  depth: int
  heads: int
  patch: int
  mlp_dim: int


def decode_variant(variant: str) -> VitSpec:
  """Decodes "B/16" (name/patch) or "W768-D12-H12/16" (explicit width-depth-heads/patch) into sizes.

  Raises ValueError naming the valid choices.
  """
  custom = re.fullmatch(r"W(\d+)-D(\d+)-H(\d+)/(\d+)", variant or "")
  if custom:
    width, depth, heads, patch = map(int, custom.groups())
    return VitSpec(width, depth, heads, patch, 4 * width)
  match = re.fullmatch(r"([A-Za-z]+)/(\d+)", variant or "")
  if not match or match.group(1) not in _WIDTHS:
    raise ValueError(
        f"unknown ViT variant {variant!r}: use NAME/PATCH with NAME in {sorted(_WIDTHS)}, e.g. "
        "'B/16', or WIDTH-DEPTH-HEADS/PATCH as 'W768-D12-H12/16'")
  width, depth, heads = _WIDTHS[match.group(1)]
  return VitSpec(width, depth, heads, int(match.group(2)), 4 * width)


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
  """concat[sin(pos * w), cos(pos * w)] with w_k = 1 / 10000^(k / (dim/2))."""
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid: tuple[int, int], cls_token: bool = True) -> np.ndarray:
  """Fixed 2D position embedding, (rows*cols [+1], dim): first half column, second half row."""
  if dim % 4:
    raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
  rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
  emb = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
  if cls_token:
    emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
  return emb.astype(np.float32)


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """(N, H, W, C) -> (N, h*w, p*p*C), tokens row-major, (row, col, channel) inside a patch."""
  n, h, w, c = images.shape
  x = images.reshape(n, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(tokens: jax.Array, patch: int, grid: tuple[int, int], channels: int = 3) -> jax.Array:
  """Inverse of `patchify`."""
  n = tokens.shape[0]
  x = tokens.reshape(n, *grid, patch, patch, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, grid[0] * patch, grid[1] * patch, channels)


def gather_tokens(x: jax.Array, ids: jax.Array) -> jax.Array:
  """x[n, ids[n, i], :] for each sample n."""
  return jnp.take_along_axis(x, ids[..., None], axis=1)


def torch_conv_bias_init(fan_in: int):
  """PyTorch's default Conv2d bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  The reference re-initializes the patch embedding's weight (xavier) but keeps this bias.
  """
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class PatchEmbed(nn.Module):
  """Conv with kernel = stride = p, computed as patchify + one matmul.

  The parameters are the conv's, `kernel` (p, p, C, D) and `bias` (D,), so checkpoints and
  exports do not depend on how it is computed. As a matmul, the kernel's gradient is another
  matmul; a strided conv's is a dilated conv, which XLA's CPU backend runs far slower.
  """
  width: int
  patch: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images):
    channels = images.shape[-1]
    # xavier over the flattened (p*p*C, D) shape, as the reference initializes its conv.
    kernel = self.param("kernel", nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=3),
                        (self.patch, self.patch, channels, self.width), jnp.float32)
    bias = self.param("bias", torch_conv_bias_init(self.patch * self.patch * channels),
                      (self.width,), jnp.float32)
    patches = patchify(images.astype(self.dtype), self.patch)
    out = patches @ kernel.reshape(-1, self.width).astype(self.dtype)
    return out + bias.astype(self.dtype)


def attend(q, k, v, record: Optional[Callable] = None):
  """softmax(q k^T / sqrt(d)) v over (N, heads, L, d) queries, keys and values.

  Heads-major, so both products are batched matmuls on contiguous tiles, and the softmax's
  normalization is applied after the product with v, to (L, d) instead of (L, L) values (as
  flash attention does): on a CPU twice as fast as jax.nn.dot_product_attention's XLA path,
  forward and backward (README, "Speed"). Logits, exponentials and sums in float32.
  `record` receives the normalized weights (N, heads, queries, keys) for analyses.
  """
  logits = jnp.einsum("nhqd,nhkd->nhqk", q * q.shape[-1] ** -0.5, k,
                      preferred_element_type=jnp.float32)
  weights = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
  total = weights.sum(axis=-1, keepdims=True)
  if record is not None:
    record(weights / total)
  out = jnp.einsum("nhqk,nhkd->nhqd", weights.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return (out / total).astype(v.dtype)


class Attention(nn.Module):
  """Multi-head self-attention with one fused qkv projection, like the reference (D -> 3D).

  `attention_impl='cudnn'` takes jax.nn.dot_product_attention's fused GPU kernel; otherwise
  XLA computes `attend`.
  """
  heads: int
  dtype: jnp.dtype = jnp.float32
  attention_impl: Optional[str] = None

  @nn.compact
  def __call__(self, x):
    n, length, width = x.shape
    dense = lambda features, name: nn.Dense(
        features, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name=name)
    qkv = dense(3 * width, "qkv")(x).reshape(n, length, 3, self.heads, width // self.heads)
    if self.attention_impl == "cudnn":
      out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2],
                                         implementation="cudnn")
    else:
      # Analyses apply with mutable=["intermediates"] to get the weights; training does not.
      record = None
      if self.is_mutable_collection("intermediates"):
        record = lambda weights: self.sow("intermediates", "attention", weights)
      q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # (N, heads, L, d) each
      out = attend(q, k, v, record).transpose(0, 2, 1, 3)
    return dense(width, "out")(out.reshape(n, length, width))


def drop_path_rates(rate: float, depth: int) -> list[float]:
  """Per-block stochastic-depth rates, rising linearly from 0 to `rate` (timm's linspace)."""
  return [float(r) for r in np.linspace(0.0, rate, depth)]


class DropPath(nn.Module):
  """Stochastic depth: zeroes a residual branch per sample with probability `rate`, scaling the
  kept ones by 1 / (1 - rate) so that the expectation is unchanged (timm's DropPath).

  Draws from the 'dropout' rng stream; `deterministic` (evaluation) is the identity.
  """
  rate: float = 0.0
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Block(nn.Module):
  """Pre-norm transformer block: x += Attn(LN(x)); x += MLP(LN(x)), exact GELU.

  `drop_path` > 0 (fine-tuning only) drops each residual branch per sample when not deterministic.
  """
  heads: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32
  attention_impl: Optional[str] = None
  drop_path: float = 0.0
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    norm = lambda name: nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name=name)
    dense = lambda features, name: nn.Dense(
        features, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name=name)
    drop = lambda y: DropPath(self.drop_path, self.deterministic)(y)
    x = x + drop(Attention(self.heads, self.dtype, self.attention_impl, name="attn")(
        norm("norm1")(x)))
    y = norm("norm2")(x)
    y = dense(self.mlp_dim, "fc1")(y)
    y = nn.gelu(y, approximate=False)
    x = x + drop(dense(x.shape[-1], "fc2")(y))
    self.sow("intermediates", "tokens", x)  # a no-op unless "intermediates" is mutable
    return x


class Transformer(nn.Module):
  """A stack of blocks followed by a final LayerNorm; `remat` trades compute for memory."""
  depth: int
  heads: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32
  attention_impl: Optional[str] = None
  remat: bool = False
  final_norm: bool = True  # False: no final LayerNorm (a global-pool classifier's fc_norm replaces it)
  drop_path: float = 0.0  # the last block's rate; block i gets drop_path * i / (depth - 1)
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    block = nn.remat(Block) if self.remat else Block
    rates = drop_path_rates(self.drop_path, self.depth)
    for i in range(self.depth):
      x = block(self.heads, self.mlp_dim, self.dtype, self.attention_impl, rates[i],
                self.deterministic, name=f"block{i}")(x)
    if not self.final_norm:
      return x
    return nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm")(x)


class Encoder(nn.Module):
  """The MAE encoder: patch embed -> + pos embed -> keep `ids_keep` -> prepend cls -> blocks -> LN.

  Returns (N, 1 + kept, width) tokens, cls first. `ids_keep=None` encodes every patch.
  `final_norm=False` leaves out the final LayerNorm (the fine-tuning classifier's layout).
  `num_registers` learned register tokens (Darcet et al. 2023, no position embedding) follow the
  cls token through the blocks and are dropped from the output.
  `learned_pos` makes the position embedding a parameter `pos_embed` (1, 1 + L, width), cls row
  first, initialized to the fixed table: MAE's fine-tuning trains the table it loads.
  """
  variant: str = "B/16"
  dtype: jnp.dtype = jnp.float32
  attention_impl: Optional[str] = None
  remat: bool = False
  final_norm: bool = True
  drop_path: float = 0.0
  deterministic: bool = True
  num_registers: int = 0
  learned_pos: bool = False

  @property
  def spec(self) -> VitSpec:
    return decode_variant(self.variant)

  @nn.compact
  def __call__(self, images, ids_keep=None):
    spec = self.spec
    n, rows, cols = images.shape[0], images.shape[1] // spec.patch, images.shape[2] // spec.patch
    x = PatchEmbed(spec.width, spec.patch, self.dtype, name="patch_embed")(images)
    table = sincos_2d(spec.width, (rows, cols))
    if self.learned_pos:
      table = self.param("pos_embed", lambda _, shape: jnp.asarray(table).reshape(shape),
                         (1, *table.shape))[0]
    pos = jnp.asarray(table, dtype=x.dtype)
    x = x + pos[None, 1:]
    if ids_keep is not None:
      x = gather_tokens(x, ids_keep)
    cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, spec.width), jnp.float32)
    cls = jnp.broadcast_to(cls.astype(x.dtype) + pos[None, :1], (n, 1, spec.width))
    prefix = [cls]
    if self.num_registers:
      registers = self.param("registers", nn.initializers.normal(0.02),
                             (1, self.num_registers, spec.width), jnp.float32)
      prefix.append(jnp.broadcast_to(registers.astype(x.dtype), (n, self.num_registers, spec.width)))
    x = jnp.concatenate([*prefix, x], axis=1)
    x = Transformer(spec.depth, spec.heads, spec.mlp_dim, self.dtype, self.attention_impl,
                    self.remat, self.final_norm, self.drop_path, self.deterministic,
                    name="transformer")(x)
    if self.num_registers:
      x = jnp.concatenate([x[:, :1], x[:, 1 + self.num_registers:]], axis=1)
    return x
