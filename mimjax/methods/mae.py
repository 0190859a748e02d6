"""MAE: mask 75% of the patches, encode the visible ones, reconstruct the removed pixels."""
import jax
import jax.numpy as jnp
import ml_collections

from mimjax import data
from mimjax.methods import base
from mimjax.models import mae as mae_model
from mimjax.models import masking
from mimjax.models import vit


def add_mim_config(c: ml_collections.ConfigDict) -> None:
  """The masking and decoder keys MAE and LUT share (neutral: the recipes are configs/*.py)."""
  c.model.mask_ratio = 0.5  # LUT's two disjoint masks need >= 0.5
  c.model.norm_pix_loss = False  # plain pixels
  c.model.decoder_width = 128  # one small block
  c.model.decoder_depth = 1
  c.model.decoder_heads = 4


def validate_mim(c, check) -> None:
  ratio = c.model.mask_ratio
  check(0 < ratio < 1, "model.mask_ratio", f"{ratio} must lie in (0, 1), e.g. 0.75")
  for key in ("decoder_width", "decoder_depth", "decoder_heads"):
    check(c.model[key] >= 1, f"model.{key}", f"{c.model[key]} must be >= 1")
  check(c.model.decoder_width % c.model.decoder_heads == 0 and c.model.decoder_width % 4 == 0,
        "model.decoder_width", "must be divisible by model.decoder_heads and by 4")
  spec = vit.decode_variant(c.model.variant)
  kept = int((c.input.image_size // spec.patch) ** 2 * (1 - ratio))
  check(kept >= 1, "model.mask_ratio", f"{ratio} keeps no patch of a {c.input.image_size}px image")


def num_patches(c, image_size: int) -> int:
  return (image_size // vit.decode_variant(c.model.variant).patch) ** 2


class MAE(base.Method):
  name = "mae"
  data_kind = "mae"
  batch_keys = ("image",)
  image_key = "image"
  shape_keys = ("model.decoder_width", "model.decoder_depth", "model.decoder_heads")

  def add_config(self, c):
    add_mim_config(c)

  def validate(self, c, check):
    validate_mim(c, check)

  def model_kwargs(self, c):
    m = c.model
    return dict(variant=m.variant, mask_ratio=m.mask_ratio, norm_pix_loss=m.norm_pix_loss,
                decoder_width=m.decoder_width, decoder_depth=m.decoder_depth,
                decoder_heads=m.decoder_heads, num_registers=m.get("num_registers", 0))

  def compute_kwargs(self, c):
    m = c.model
    return dict(dtype=jnp.dtype(m.dtype), attention_impl=m.attention_impl, remat=m.remat)

  def build_model(self, c):
    return mae_model.MAE(**self.model_kwargs(c), **self.compute_kwargs(c))

  def dummy_inputs(self, c, image_size: int):
    images = jnp.zeros((2, image_size, image_size, 3), jnp.float32)
    return images, masking.sample_noise(jax.random.key(0), 2, num_patches(c, image_size))

  def init_variables(self, c, model, rng, image_size):
    return model.init(rng, *self.dummy_inputs(c, image_size))

  def example_randomness(self, c, key, batch_size, image_size):
    # The masking noise of the whole batch from the step's key, split with the batch.
    return masking.sample_noise(key, batch_size, num_patches(c, image_size))

  def loss(self, c, model, params, state, inputs, noise, rng):
    out = model.apply({"params": params}, data.normalize(inputs["image"]), noise)
    return out.loss, ({}, {})


base.register(MAE())
