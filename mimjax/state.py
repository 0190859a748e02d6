"""The model and train state built from a config: construction, abstract-first init, restore.

The train state is a plain dict pytree:
  step          int32, optimizer steps taken (the batch at step k is a function of (seed, k))
  nonfinite_at  int32, -1, or the first step whose loss or gradient was not finite (no
                update after it)
  params        the student's parameters (float32)
  opt_state     optax state
  ...           what the method adds (`Method.extra_state`); LUT: `batch_stats`, the student
                heads' BatchNorm statistics, and `teacher`, the EMA of the encoder and projector
"""
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mimjax import checkpoint
from mimjax import errors
from mimjax import methods
from mimjax import optim


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
  """The model's architecture arguments (what exporters and `load_pretrained` need)."""
  return methods.get(config.method).model_kwargs(config)


def build_model(config: ml_collections.ConfigDict):
  return methods.get(config.method).build_model(config)


def init_fn(config, model, tx: optax.GradientTransformation):
  """rng -> a fresh train state; traced under eval_shape first, then jitted with shardings."""
  method = methods.get(config.method)

  def init(rng):
    variables = method.init_variables(config, model, rng, config.input.image_size)
    params = variables["params"]
    state = dict(step=jnp.zeros((), jnp.int32), nonfinite_at=jnp.full((), -1, jnp.int32),
                 params=params, opt_state=tx.init(params))
    state.update(method.extra_state(config, variables))
    return state

  return init


def shape_only_optimizer(config) -> optax.GradientTransformation:
  """The optimizer with a constant schedule: the same state shapes, for restoring."""
  return optim.make(config, optax.constant_schedule(0.0))


def restore_state(workdir: str, step: int | None = None):
  """(config, step, state) of a workdir's checkpoint (latest by default), on one local device."""
  if not epath.Path(workdir).is_dir():
    raise errors.PathNotFoundError(f"{workdir!r} is not a directory: give a training workdir "
                                   "(the --workdir of mimjax-train)")
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise checkpoint.CheckpointError(
        f"{checkpoint.checkpoint_dir(workdir)} holds no complete checkpoint: train first, "
        "or point to a training workdir that has one")
  try:
    return _restore_step(ckpt, step)
  except checkpoint.DamagedCheckpointError as e:
    others = [s for s in ckpt.all_steps() if s != step]
    raise checkpoint.DamagedCheckpointError(
        f"{e}. Use another step ({others or 'none is left'}), or resume training in that "
        "workdir, which moves damaged checkpoints aside") from e
  finally:
    ckpt.close()


def _restore_step(ckpt, step: int):
  config = ckpt.config(step)
  model = build_model(config)
  abstract = jax.eval_shape(init_fn(config, model, shape_only_optimizer(config)),
                            jax.random.key(0))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
  state = ckpt.restore(step, target)
  return config, step, state
