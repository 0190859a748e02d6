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


def reconstruction_picture(x, out: mae_model.Reconstruction, patch: int, norm_pix_loss: bool):
  """Normalized images and their reconstruction -> a uint8 (1, 3H, NW, 3) grid, one image per
  column, the rows input / masked / reconstruction (the visible patches are the input's)."""
  grid = (x.shape[1] // patch, x.shape[2] // patch)
  target = vit.patchify(x, patch)
  pred = out.pred
  if norm_pix_loss:  # predictions are per-patch standardized: undo with the target's
    mean = target.mean(-1, keepdims=True)
    std = jnp.sqrt(target.var(-1, keepdims=True, ddof=1) + 1e-6)
    pred = pred * std + mean
  mask = out.mask[..., None]
  masked = vit.unpatchify(target * (1 - mask), patch, grid)
  recon = vit.unpatchify(target * (1 - mask) + pred * mask, patch, grid)
  rows = [data.denormalize(t) for t in (x, masked, recon)]
  return jnp.concatenate([jnp.concatenate(list(r), axis=1) for r in rows], axis=0)[None]


class MAE(base.Method):
  name = "mae"
  batch_keys = ("image",)
  image_key = "image"  # the batch entry its pictures show
  num_pictures = 8  # the first images of a batch in them
  shape_keys = ("model.decoder_width", "model.decoder_depth", "model.decoder_heads")

  def add_config(self, c):
    add_mim_config(c)

  def augment(self, data_cfg):
    size, antialias = data_cfg.image_size, not data_cfg.fast_resize
    return lambda encoded, seed: {"image": data.augment.mae_train(encoded, seed, size, antialias)}

  def reconstruct(self, model, params, x, rng):
    """The model's reconstruction of normalized images `x` under a random mask drawn from `rng`:
    what the pictures show and the reconstruction evaluator scores."""
    length = (x.shape[1] // model.patch) * (x.shape[2] // model.patch)
    view = masking.random_masking(masking.sample_noise(rng, x.shape[0], length), model.mask_ratio)
    return model.apply({"params": params}, x, view, method="reconstruct")

  def visualize(self, c, model):
    def pictures(params, batch, rng):
      x = data.normalize(batch[self.image_key][:self.num_pictures])
      out = self.reconstruct(model, params, x, rng)
      return {"input_masked_reconstruction":
              reconstruction_picture(x, out, model.patch, model.norm_pix_loss)}
    return pictures

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
