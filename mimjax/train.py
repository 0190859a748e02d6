"""The trainer: mesh -> data -> abstract init -> shardings -> jitted step -> loop.

`train(config, workdir)` pre-trains MAE or LUT per `config` (see configs/). It resumes from the
workdir's latest checkpoint when there is one, else starts from `config.init_from`, else from
scratch; a resumed run continues exactly where the interrupted one was.
"""
import signal

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mimjax import checkpoint
from mimjax import config_lib
from mimjax import data
from mimjax import errors
from mimjax import evals
from mimjax import metrics as metrics_lib
from mimjax import optim
from mimjax import sharding
from mimjax import state as state_lib
from mimjax.models import lut
from mimjax.models import masking
from mimjax.models import vit


class NonFiniteLossError(errors.UserError, RuntimeError):
  """The loss became NaN or infinite; the state before that step is what was last saved."""


# ---------------------------------------------------------------------------------------------
# The loss of one micro-batch.
# ---------------------------------------------------------------------------------------------
def _loss_fn(config, model):
  """(params, batch_stats, teacher, inputs, noise) -> (loss, (aux metrics, new batch_stats))."""

  def mae_loss(params, batch_stats, teacher, inputs, noise):
    out = model.apply({"params": params}, data.normalize(inputs["image"]), noise)
    return out.loss, ({}, batch_stats)

  def lut_loss(params, batch_stats, teacher, inputs, noise):
    view1, view2 = data.normalize(inputs["view1"]), data.normalize(inputs["view2"])
    student, new_vars = model.apply({"params": params, "batch_stats": batch_stats}, view1, view2,
                                    noise, method="student", mutable=["batch_stats"])
    z1, z2 = model.apply(teacher, view1, view2, method="teacher")
    bc = lut.cross_view_bc_loss(student.q1, student.q2, z1, z2)
    mae_value = student.reconstruction.loss
    total = mae_value + config.lut.bc_weight * bc
    return total, ({"mae_loss": mae_value, "bc_loss": bc}, new_vars["batch_stats"])

  return lut_loss if config.method == "lut" else mae_loss


# ---------------------------------------------------------------------------------------------
# The train step: pure, all randomness from fold_in(seed, step).
# ---------------------------------------------------------------------------------------------
def make_train_step(config, model, tx, lr_schedule, total_steps: int):
  loss_fn = _loss_fn(config, model)
  accum = config.optim.accum_steps
  seed_key = jax.random.key(config.seed)
  length = state_lib.num_patches(config)

  def split(x):
    # Micro-batch a takes rows a, a+accum, ...: every device holds a share of every micro-batch.
    return x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)

  def step_fn(state, batch):
    step = state["step"]
    batch_size = next(iter(batch.values())).shape[0]
    noise = masking.sample_noise(jax.random.fold_in(seed_key, step), batch_size, length)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    teacher = state.get("teacher")

    def micro_step(carry, micro):
      grads_sum, loss_sum, aux_sum, batch_stats = carry
      inputs, micro_noise = micro
      (loss, (aux, batch_stats)), grads = grad_fn(state["params"], batch_stats, teacher, inputs,
                                                  micro_noise)
      add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)
      return (add(grads_sum, grads), loss_sum + loss, add(aux_sum, aux), batch_stats), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state["params"])
    aux_zeros = {"mae_loss": 0.0, "bc_loss": 0.0} if config.method == "lut" else {}
    carry = (zeros, 0.0, aux_zeros, state.get("batch_stats"))
    (grads, loss, aux, batch_stats), _ = jax.lax.scan(
        micro_step, carry, (jax.tree_util.tree_map(split, batch), split(noise)))
    grads = jax.tree_util.tree_map(lambda g: g / accum, grads)
    loss, aux = loss / accum, {k: v / accum for k, v in aux.items()}

    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new = dict(state, params=params, opt_state=opt_state)
    grad_norm = optax.global_norm(grads)
    metrics = dict(loss=loss, lr=lr_schedule(step), grad_norm=grad_norm, **aux)
    if config.method == "lut":
      momentum = lut.ema_momentum(step, total_steps, config.lut.ema_base)
      new["batch_stats"] = batch_stats
      new["teacher"] = lut.ema_update(
          state["teacher"], {"params": params, "batch_stats": batch_stats}, momentum)
      metrics["ema_momentum"] = momentum

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
# Reconstruction grids for TensorBoard.
# ---------------------------------------------------------------------------------------------
def make_visualize(config, model):
  """(params, uint8 images, rng) -> uint8 grid: rows input / masked / reconstruction."""
  patch = vit.decode_variant(config.model.variant).patch

  def visualize(params, images, rng):
    x = data.normalize(images)
    grid = (x.shape[1] // patch, x.shape[2] // patch)
    noise = masking.sample_noise(rng, x.shape[0], grid[0] * grid[1])
    view = masking.random_masking(noise, config.model.mask_ratio)
    out = model.apply({"params": params}, x, view, method="reconstruct")
    target = vit.patchify(x, patch)
    pred = out.pred
    if config.model.norm_pix_loss:  # predictions are per-patch standardized: undo with the target's
      mean = target.mean(-1, keepdims=True)
      std = jnp.sqrt(target.var(-1, keepdims=True, ddof=1) + 1e-6)
      pred = pred * std + mean
    mask = out.mask[..., None]
    masked = vit.unpatchify(target * (1 - mask), patch, grid)
    recon = vit.unpatchify(target * (1 - mask) + pred * mask, patch, grid)
    rows = [data.denormalize(t) for t in (x, masked, recon)]
    return jnp.concatenate([jnp.concatenate(list(r), axis=1) for r in rows], axis=0)[None]

  return visualize


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------
def _initial_state(config, workdir, ckpt, init, abstract, shardings):
  """Resume order: the workdir's latest checkpoint -> `config.init_from` -> scratch."""
  latest = ckpt.latest_step()
  if latest is not None:
    config_lib.check_resumable(ckpt.config(latest), config, checkpoint.checkpoint_dir(workdir))
    print(f"Resuming from {checkpoint.checkpoint_dir(workdir)} at step {latest}", flush=True)
    return ckpt.restore(latest, checkpoint.abstract_with_shardings(abstract, shardings))
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed))
  if config.init_from:
    from mimjax import api  # local: only this path needs the exporters
    params = api.load_params(config.init_from)
    state["params"] = _graft(state["params"], params, shardings["params"], config.init_from)
    if "teacher" in state:
      # A copy: the teacher's buffers must not alias the student's (the step donates both).
      state["teacher"]["params"] = jax.tree_util.tree_map(
          jnp.copy, {k: state["params"][k] for k in lut.TEACHER_MODULES})
    print(f"Initialized from {config.init_from}", flush=True)
  return state


def _graft(params, loaded, shardings, source: str):
  """`params` with each top-level module that `loaded` also has replaced by the loaded one."""
  common = sorted(set(params) & set(loaded))
  if not common:
    raise config_lib.ConfigError(
        f"config.init_from: {source} shares no module with this model "
        f"(it has {sorted(loaded)}, this model {sorted(params)})")
  params = dict(params)
  for name in common:
    ours = jax.tree_util.tree_map(lambda x: x.shape, params[name])
    theirs = jax.tree_util.tree_map(lambda x: x.shape, loaded[name])
    if ours != theirs:
      raise config_lib.ConfigError(
          f"config.init_from: the {name!r} of {source} has other shapes than this model's: "
          "check config.model against the model that was saved there")
    params[name] = jax.device_put(loaded[name], shardings[name])
  return params


def _sum_over_processes(count: int) -> int:
  if jax.process_count() == 1:
    return count
  return int(np.sum(multihost_utils.process_allgather(np.int64(count))))


class _Termination:
  """SIGTERM (preemption, scancel) asks the loop to save and exit cleanly.

  With several processes, JAX's preemption service (started by jax.distributed.initialize)
  catches the signal and makes every process stop at the same step, so that they all reach the
  collective save together; on a single process a plain signal handler does the same.
  """

  def __init__(self):
    self._requested = False
    self._multi_process = jax.process_count() > 1
    if not self._multi_process:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    self._requested = True

  def requested(self, step: int) -> bool:
    if self._multi_process:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested

  def close(self):
    if not self._multi_process:
      signal.signal(signal.SIGTERM, self._previous)


def train(config: ml_collections.ConfigDict, workdir: str):
  """Pre-trains per `config` in `workdir`; returns the final state."""
  config_lib.validate(config, jax.process_count(), jax.device_count())
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  is_main = jax.process_index() == 0

  # Data (the number of examples fixes the step counts).
  total_steps, warmup_steps = config_lib.steps(config, data.num_examples(config.input))
  batch_size = config.input.batch_size
  rule = config.optim.lr_rule
  lr_schedule = optim.schedule(optim.peak_learning_rate(config.optim.base_lr, batch_size, rule),
                               warmup_steps, total_steps)

  # Model and state, abstract first: nothing is materialized unsharded.
  model = state_lib.build_model(config)
  tx = optim.make(config, lr_schedule)
  init = state_lib.init_fn(config, model, tx)
  abstract = jax.eval_shape(init, jax.random.key(config.seed))
  shardings = sharding.state_shardings(mesh, abstract, config.mesh.fsdp_min_size)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
  state = _initial_state(config, workdir, ckpt, init, abstract, shardings)
  start_step = int(state["step"])
  if is_main:
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(abstract["params"]))
    print(f"{config.method.upper()} {config.model.variant}: {n_params / 1e6:.2f}M parameters, "
          f"{total_steps} steps (warm-up {warmup_steps}), batch {batch_size}, "
          f"mesh {dict(mesh.shape)}, workdir {workdir}", flush=True)

  batch_shardings = sharding.batch_sharding(mesh)
  step_fn = jax.jit(make_train_step(config, model, tx, lr_schedule, total_steps),
                    in_shardings=(shardings, batch_shardings),
                    out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  visualize = jax.jit(make_visualize(config, model), out_shardings=sharding.replicated(mesh))
  batches = data.make_train_iterator(config.input, method=config.method, seed=config.seed,
                                     start_step=start_step, mesh=mesh,
                                     batch_axes=sharding.BATCH_AXES)
  writer = metrics_lib.MetricsLogger(workdir, total_steps, start_step, is_main)
  evaluators = evals.Evaluators(config, model, mesh)
  termination = _Termination()

  def check_finite(state):
    bad = int(state["nonfinite_at"])
    if bad >= 0:
      raise NonFiniteLossError(
          f"the loss or its gradient was not finite at step {bad}; stopped before updating "
          f"with it. The last good checkpoint in {checkpoint.checkpoint_dir(workdir)} is "
          "untouched: lower config.optim.base_lr, set config.optim.grad_clip_norm, or use "
          "float32 (config.model.dtype)")

  def save(step):
    check_finite(state)
    ckpt.save(step, state, config)

  try:
    for step in range(start_step, total_steps):
      batch = next(batches)
      state, step_metrics = step_fn(state, batch)
      done = step + 1
      if done % config.log_every_steps == 0 or done == total_steps:
        check_finite(state)
        scalars = jax.device_get(step_metrics)
        images_per_sec, eta = writer.throughput(done, batch_size)
        writer.write_scalars(done, dict(scalars, images_per_sec=images_per_sec, eta_seconds=eta,
                                        corrupt_images_skipped=_sum_over_processes(batches.num_corrupt)))
      if config.image_every_steps and done % config.image_every_steps == 0:
        first = batch["image" if config.method == "mae" else "view1"]
        grid = visualize(state["params"], first[:8], jax.random.key(done))
        writer.write_images(done, {"input_masked_reconstruction": np.asarray(grid)})
      writer.write_eval_scalars(done, evaluators.maybe_run(state["params"], done, total_steps))
      stop = termination.requested(done)  # read once: the signal may land in the middle of a save
      if stop:
        print(f"SIGTERM: saving step {done} and exiting", flush=True)
      if done % config.ckpt_every_steps == 0 or done == total_steps or stop:
        save(done)
      if stop:
        break
    ckpt.wait()
  finally:
    termination.close()
    writer.close()
    ckpt.close()
  if is_main:
    print(f"Done. Checkpoints: {checkpoint.checkpoint_dir(workdir)}; TensorBoard: "
          f"{workdir}/tensorboard; metrics: {workdir}/{metrics_lib.JSONL}", flush=True)
  return state

