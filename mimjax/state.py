"""The model and train state built from a config: construction, abstract-first init, restore.

The train state is a plain dict pytree:
  step          int32, optimizer steps taken (the batch at step k is a function of (seed, k))
  nonfinite_at  int32, -1, or the first step whose loss or gradient was not finite (no
                update after it)
  params        the student's parameters (float32)
  opt_state     optax state
  batch_stats   LUT only: the student heads' BatchNorm statistics
  teacher       LUT only: EMA of the encoder and projector ({'params', 'batch_stats'})
"""
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mimjax import checkpoint
from mimjax import optim
from mimjax.models import lut
from mimjax.models import mae
from mimjax.models import masking
from mimjax.models import vit


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
  """The MAE constructor arguments (what exporters and `load_pretrained` need)."""
  m = config.model
  return dict(variant=m.variant, mask_ratio=m.mask_ratio, norm_pix_loss=m.norm_pix_loss,
              decoder_width=m.decoder_width, decoder_depth=m.decoder_depth,
              decoder_heads=m.decoder_heads, num_registers=m.get("num_registers", 0))


def build_model(config: ml_collections.ConfigDict) -> mae.MAE:
  m = config.model
  kwargs = dict(model_kwargs(config), dtype=jnp.dtype(m.dtype), attention_impl=m.attention_impl,
                remat=m.remat)
  if config.method == "lut":
    return lut.LUT(**kwargs, head_hidden=m.head_hidden)
  return mae.MAE(**kwargs)


def num_patches(config) -> int:
  return (config.input.image_size // vit.decode_variant(config.model.variant).patch) ** 2


def init_fn(config, model, tx: optax.GradientTransformation):
  """rng -> a fresh train state; traced under eval_shape first, then jitted with shardings."""
  size = config.input.image_size

  def init(rng):
    images = jnp.zeros((2, size, size, 3), jnp.float32)
    noise = masking.sample_noise(jax.random.key(0), 2, num_patches(config))
    inputs = (images, images, noise) if config.method == "lut" else (images, noise)
    variables = model.init(rng, *inputs)
    params = variables["params"]
    state = dict(step=jnp.zeros((), jnp.int32), nonfinite_at=jnp.full((), -1, jnp.int32),
                 params=params, opt_state=tx.init(params))
    if config.method == "lut":
      state["batch_stats"] = variables["batch_stats"]
      state["teacher"] = lut.teacher_subset(variables)  # starts as a copy of the student
    return state

  return init


def shape_only_optimizer(config) -> optax.GradientTransformation:
  """The optimizer with a constant schedule: the same state shapes, for restoring."""
  return optim.make(config, optax.constant_schedule(0.0))


def restore_state(workdir: str, step: int | None = None):
  """(config, step, state) of a workdir's checkpoint (latest by default), on one local device."""
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise checkpoint.CheckpointError(
        f"{checkpoint.checkpoint_dir(workdir)} holds no complete checkpoint: train first, "
        "or point to a workdir that has one")
  config = ckpt.config(step)
  model = build_model(config)
  abstract = jax.eval_shape(init_fn(config, model, shape_only_optimizer(config)),
                            jax.random.key(0))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
  state = ckpt.restore(step, target)
  ckpt.close()
  return config, step, state
