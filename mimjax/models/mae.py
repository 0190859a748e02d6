"""MAE: the decoder, the reconstruction loss and the masked autoencoder that joins them."""
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mimjax.models import masking
from mimjax.models import vit


def reconstruction_loss(images, pred, mask, patch: int, norm_pix_loss: bool):
  """Per-patch MSE against the patchified normalized image, averaged over removed patches.

  With `norm_pix_loss` each target patch is standardized with its unbiased variance (eps 1e-6).
  """
  target = vit.patchify(images.astype(jnp.float32), patch)
  if norm_pix_loss:
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True, ddof=1)
    target = (target - mean) / jnp.sqrt(var + 1e-6)
  per_patch = jnp.mean((pred.astype(jnp.float32) - target) ** 2, axis=-1)
  return jnp.sum(per_patch * mask) / jnp.sum(mask)


class Decoder(nn.Module):
  """Embeds encoder tokens, fills removed positions with the mask token, un-shuffles, predicts pixels."""
  patch: int
  width: int = 512
  depth: int = 8
  heads: int = 16
  channels: int = 3
  dtype: jnp.dtype = jnp.float32
  attention_impl: Optional[str] = None
  remat: bool = False

  @nn.compact
  def __call__(self, latent, ids_restore, grid: tuple[int, int]):
    dense = lambda features, name: nn.Dense(
        features, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name=name)
    x = dense(self.width, "embed")(latent)
    n, length = ids_restore.shape
    mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width),
                            jnp.float32)
    fill = jnp.broadcast_to(mask_token.astype(x.dtype), (n, length + 1 - x.shape[1], self.width))
    patches = vit.gather_tokens(jnp.concatenate([x[:, 1:], fill], axis=1), ids_restore)
    x = jnp.concatenate([x[:, :1], patches], axis=1)
    x = x + jnp.asarray(vit.sincos_2d(self.width, grid), x.dtype)[None]
    x = vit.Transformer(self.depth, self.heads, 4 * self.width, self.dtype, self.attention_impl,
                        self.remat, name="transformer")(x)
    pred = dense(self.patch * self.patch * self.channels, "pred")(x)
    return pred[:, 1:]


class Reconstruction(NamedTuple):
  loss: jax.Array   # scalar, float32
  pred: jax.Array   # (N, L, p*p*C) predicted (normalized) patches
  mask: jax.Array   # (N, L) 1 = removed


class MAE(nn.Module):
  """Masked autoencoder. `images` are NHWC, already mean/std-normalized."""
  variant: str = "B/16"
  mask_ratio: float = 0.75
  norm_pix_loss: bool = True
  decoder_width: int = 512
  decoder_depth: int = 8
  decoder_heads: int = 16
  dtype: jnp.dtype = jnp.float32
  attention_impl: Optional[str] = None
  remat: bool = False
  num_registers: int = 0  # register tokens in the encoder (dropped at its output)

  def setup(self):
    self.encoder = vit.Encoder(self.variant, self.dtype, self.attention_impl, self.remat,
                               num_registers=self.num_registers)
    self.decoder = Decoder(vit.decode_variant(self.variant).patch, self.decoder_width,
                           self.decoder_depth, self.decoder_heads, dtype=self.dtype,
                           attention_impl=self.attention_impl, remat=self.remat)

  @property
  def patch(self) -> int:
    return vit.decode_variant(self.variant).patch

  def grid(self, images) -> tuple[int, int]:
    return images.shape[1] // self.patch, images.shape[2] // self.patch

  def encode(self, images):
    """All tokens (cls first) after the final LayerNorm, no masking."""
    return self.encoder(images)

  def reconstruct(self, images, view: masking.Masking) -> Reconstruction:
    latent = self.encoder(images, view.ids_keep)
    pred = self.decoder(latent, view.ids_restore, self.grid(images))
    loss = reconstruction_loss(images, pred, view.mask, self.patch, self.norm_pix_loss)
    return Reconstruction(loss, pred, view.mask)

  def __call__(self, images, noise):
    return self.reconstruct(images, masking.random_masking(noise, self.mask_ratio))
