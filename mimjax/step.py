"""The train step, one definition for all that run or compile it (the trainer, mimjax-compile,
the benchmarks).

  make_train_step  the pure step: (state, batch) -> (state, metrics), randomness from (seed, step)
  build_step       the model, abstract state, shardings and the jitted step on a mesh
  abstract_batch   the global batch the step takes, as ShapeDtypeStructs
  model_flops      the FLOPs of one step over the global batch, the numerator of MFU

Nothing here reads data or writes files: the step builds and runs where only jax, flax, optax and
ml_collections are installed (no TensorFlow, no metric writers).
"""
import functools
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mimjax import methods
from mimjax import optim
from mimjax import sharding
from mimjax import state as state_lib


# ---------------------------------------------------------------------------------------------
# The train step: pure, all randomness from fold_in(seed, step).
# ---------------------------------------------------------------------------------------------
def make_train_step(config, model, tx, lr_schedule, total_steps: int):
  method = methods.get(config.method)
  accum = config.optim.accum_steps
  seed_key = jax.random.key(config.seed)
  image_size = config.input.image_size

  def split(x):
    # Micro-batch a takes rows a, a+accum, ...: every device holds a share of every micro-batch.
    return x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)

  def step_fn(state, batch):
    step = state["step"]
    step_key = jax.random.fold_in(seed_key, step)
    batch_size = next(iter(batch.values())).shape[0]
    per_example = method.example_randomness(config, step_key, batch_size, image_size)
    grad_fn = jax.value_and_grad(functools.partial(method.loss, config, model), has_aux=True)

    def micro_step(carry, micro):
      grads_sum, loss_sum, carried = carry
      inputs, micro_randomness, index = micro
      # The method's own draws (dropout, mixup) from a key of this step and micro-batch.
      rng = jax.random.fold_in(jax.random.fold_in(step_key, 1 << 20), index)
      (loss, (aux, carried)), grads = grad_fn(state["params"], dict(state, **carried), inputs,
                                              micro_randomness, rng)
      grads_sum = jax.tree_util.tree_map(jnp.add, grads_sum, grads)
      return (grads_sum, loss_sum + loss, carried), aux

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state["params"])
    carry = (zeros, 0.0, {k: state[k] for k in method.carried_state})
    micro_batches = (jax.tree_util.tree_map(split, batch),
                     jax.tree_util.tree_map(split, per_example), jnp.arange(accum))
    (grads, loss, carried), aux = jax.lax.scan(micro_step, carry, micro_batches)
    grads = jax.tree_util.tree_map(lambda g: g / accum, grads)
    loss, aux = loss / accum, {k: jnp.mean(v) for k, v in aux.items()}

    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new = dict(state, params=params, opt_state=opt_state, **carried)
    new, method_metrics = method.after_update(config, new, step, total_steps)
    grad_norm = optax.global_norm(grads)
    metrics = dict(loss=loss, lr=lr_schedule(step), grad_norm=grad_norm, **aux, **method_metrics)

    # A non-finite loss or gradient freezes the state (no update from then on) and records the
    # step; the host stops the run before it could save such a state.
    healthy = (state["nonfinite_at"] < 0) & jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = jax.tree_util.tree_map(lambda n, o: jnp.where(healthy, n, o), new, state)
    new["step"] = step + 1
    first_bad = jnp.where(state["nonfinite_at"] < 0, step, state["nonfinite_at"])
    new["nonfinite_at"] = jnp.where(healthy, state["nonfinite_at"], first_bad)
    return new, metrics

  return step_fn


# ---------------------------------------------------------------------------------------------
# The model, abstract state, shardings and jitted step on a mesh: what the trainer runs and what
# mimjax-compile compiles ahead of time, built in one place so that the two cannot drift apart.
# ---------------------------------------------------------------------------------------------
class StepSetup(NamedTuple):
  model: nn.Module
  tx: optax.GradientTransformation
  init: Callable  # rng -> train state
  abstract: dict  # the train state as ShapeDtypeStructs
  shardings: dict  # a NamedSharding per leaf of the state
  batch_sharding: jax.sharding.NamedSharding
  step_fn: Callable  # jitted (state, batch) -> (state, metrics); donates the state


def build_step(config, mesh, lr_schedule, total_steps: int) -> StepSetup:
  """The train step of `config` jitted for `mesh`, with the state's abstract shape and shardings."""
  model = state_lib.build_model(config)
  tx = optim.make(config, lr_schedule)
  init = state_lib.init_fn(config, model, tx)
  abstract = jax.eval_shape(init, jax.random.key(config.seed))
  shardings = sharding.state_shardings(mesh, abstract, config.mesh.fsdp_min_size)
  batch_sharding = sharding.batch_sharding(mesh)
  step_fn = jax.jit(make_train_step(config, model, tx, lr_schedule, total_steps),
                    in_shardings=(shardings, batch_sharding),
                    out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  return StepSetup(model, tx, init, abstract, shardings, batch_sharding, step_fn)


def abstract_batch(config, batch_sharding) -> dict:
  """The global batch the step takes, as ShapeDtypeStructs: uint8 images (one per view), int32
  labels."""
  size, batch = config.input.image_size, config.input.batch_size
  image = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8, sharding=batch_sharding)
  label = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=batch_sharding)
  return {k: label if k == "label" else image for k in methods.get(config.method).batch_keys}


# ---------------------------------------------------------------------------------------------
# The FLOPs of a step, as MFU counts them.
# ---------------------------------------------------------------------------------------------
# A schedule length for building a step that will not train (compiling, counting, timing): the
# length changes the schedules' values, not shapes or cost.
NOMINAL_STEPS = 1000


def model_flops(config, lowered=None) -> float | None:
  """FLOPs of one optimizer step of `config` over its global batch: the model's arithmetic.

  XLA counts them on the step's program before partitioning, lowered for one CPU device with
  one micro-batch, no remat and XLA's own attention, so the count does not depend on the mesh
  (one device, whatever the config's), `optim.accum_steps`, `model.remat` or
  `model.attention_impl`. The cost analysis of a compiled
  program does: it counts one device's share, a loop's body once (fsdp's collective matmuls
  at large sizes are such loops), remat's recomputation (hardware FLOPs, not model FLOPs) and
  nothing inside a fused attention kernel. Only lowers (seconds, nothing is compiled or
  allocated). None when this process has no CPU backend (JAX_PLATFORMS without cpu).

  `lowered`: the step of `config` as the caller lowered it for its devices. When they are CPUs
  and the step is already the plain one (one micro-batch, no remat), that program is counted
  (before partitioning its shapes are global): the step is not traced a second time.
  """
  plain = config.optim.accum_steps == 1 and not config.model.remat
  if lowered is not None and plain and jax.default_backend() == "cpu":
    return _counted(lowered)
  try:
    cpu = jax.devices("cpu")[0]
  except RuntimeError:
    return None
  counted = config.copy_and_resolve_references()
  counted.optim.accum_steps = 1
  counted.model.remat = False
  counted.model.attention_impl = "xla"
  built = build_step(counted, sharding.make_mesh(1, 1, [cpu]), optax.constant_schedule(0.0),
                     NOMINAL_STEPS)
  return _counted(built.step_fn.lower(built.abstract, abstract_batch(counted, built.batch_sharding)))


def _counted(lowered) -> float | None:
  flops = float((lowered.cost_analysis() or {}).get("flops", 0.0))
  return flops if flops > 0 else None
