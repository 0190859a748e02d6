"""The trainer: mesh -> data -> abstract init -> shardings -> jitted step -> loop.

`train(config, workdir)` trains per `config` (see configs/) with the method `config.method`
names (mimjax/methods: the model, its extra state, the loss of a micro-batch, the hooks). It resumes from the
workdir's latest checkpoint when there is one, else starts from `config.init_from`, else from
scratch; a resumed run continues exactly where the interrupted one was.
"""
import contextlib
import signal

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from mimjax import checkpoint
from mimjax import config_lib
from mimjax import data
from mimjax import errors
from mimjax import evals
from mimjax import flops
from mimjax import input_wait
from mimjax import methods
from mimjax import metric_files
from mimjax import metrics as metrics_lib
from mimjax import optim
from mimjax import profiling
from mimjax import sharding
from mimjax import step as step_lib
from mimjax import storage
from mimjax import workdir_lock


class NonFiniteLossError(errors.UserError, RuntimeError):
  """The loss became NaN or infinite; the state before that step is what was last saved."""


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------
def _initial_state(config, workdir, ckpt, init, abstract, shardings):
  """Resume order: the workdir's latest checkpoint -> `config.init_from` -> scratch."""
  where = checkpoint.checkpoint_dir(workdir)
  resumed = checkpoint.restore_newest_intact(
      ckpt, checkpoint.abstract_with_shardings(abstract, shardings),
      check_config=lambda saved: config_lib.check_resumable(saved, config, where))
  if resumed is not None:
    print(f"Resuming from {where} at step {resumed[0]}", flush=True)
    return resumed[2]
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed))
  if config.init_from:
    from mimjax import api  # local: only this path needs the exporters
    params = api.load_params(config.init_from)
    put = lambda name, tree: jax.device_put(tree, shardings["params"][name])
    state = methods.get(config.method).graft(state, params, put, config.init_from)
    print(f"Initialized from {config.init_from}", flush=True)
  return state


def _over_processes(corrupt: int, waiting: float, failed_save: int) -> tuple[int, float, int]:
  """(corrupt images skipped by every process, the slowest host's input wait: the others'
  devices wait for it in the step's collectives, the step of a checkpoint save that failed on
  any process or 0), in one exchange."""
  if jax.process_count() == 1:
    return corrupt, waiting, failed_save
  gathered = multihost_utils.process_allgather(
      np.array([corrupt, waiting, failed_save], np.float64))
  return int(gathered[:, 0].sum()), float(gathered[:, 1].max()), int(gathered[:, 2].max())


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


def _utilization(config, lowered, is_main: bool) -> flops.StepUtilization:
  """MFU's terms for the logs, from the step's model FLOPs (printed once, per image)."""
  log = print if is_main else (lambda message: None)
  step_flops = step_lib.model_flops(config, lowered)
  if step_flops:
    log(f"Model FLOPs: {step_flops / config.input.batch_size / 1e9:.2f} GFLOP per image, "
        f"{step_flops / 1e12:.3f} TFLOP per step")
  return flops.StepUtilization(step_flops, jax.device_count(), jax.devices()[0].device_kind,
                               config.model.dtype, log=log)


def train(config: ml_collections.ConfigDict, workdir: str):
  """Pre-trains per `config` in `workdir`; returns the final state."""
  config_lib.validate(config, jax.process_count(), jax.device_count())
  storage.prepare_workdir(workdir)
  with workdir_lock.hold(workdir):  # one run per workdir
    try:
      return _train(config, workdir)
    except Exception as e:  # pylint: disable=broad-except
      if isinstance(e, errors.UserError) or not errors.is_out_of_space(e):
        raise
      # A metrics or TensorBoard write met the full disk (checkpoint saves say so themselves).
      raise errors.StorageFullError(
          f"no space left on the device under {workdir} ({errors.one_line(e)[:200]}): free "
          "space and start again; the run resumes from its newest complete checkpoint") from e


def _train(config: ml_collections.ConfigDict, workdir: str):
  method = methods.get(config.method)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  is_main = jax.process_index() == 0

  # Data (the number of examples fixes the step counts).
  total_steps, warmup_steps = config_lib.steps(config, data.num_examples(config.input))
  batch_size = config.input.batch_size
  rule = config.optim.lr_rule
  lr_schedule = optim.schedule(optim.peak_learning_rate(config.optim.base_lr, batch_size, rule),
                               warmup_steps, total_steps, config.optim.min_lr)

  # Model and state, abstract first: nothing is materialized unsharded.
  built = step_lib.build_step(config, mesh, lr_schedule, total_steps)
  model, abstract, shardings = built.model, built.abstract, built.shardings
  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
  # Whatever raises from here on (a refused restore, the input pipeline, an evaluator, the loop)
  # closes what was opened, newest first: orbax's threads would otherwise race the exit.
  with contextlib.ExitStack() as cleanup:
    cleanup.callback(ckpt.close)
    state = _initial_state(config, workdir, ckpt, built.init, abstract, shardings)
    start_step = int(state["step"])
    if is_main:
      n_params = sum(x.size for x in jax.tree_util.tree_leaves(abstract["params"]))
      print(f"{config.method.upper()} {config.model.variant}: {n_params / 1e6:.2f}M parameters, "
            f"{total_steps} steps (warm-up {warmup_steps}), batch {batch_size}, "
            f"mesh {dict(mesh.shape)}, workdir {workdir}", flush=True)

    compiled_step, utilization = None, None  # compiled on the first batch
    pictures = method.visualize(config, model)
    visualize = jax.jit(pictures, out_shardings=sharding.replicated(mesh)) if pictures else None
    batches = data.make_train_iterator(config.input, method, seed=config.seed,
                                       start_step=start_step, mesh=mesh,
                                       batch_axes=sharding.BATCH_AXES)
    writer = cleanup.enter_context(contextlib.closing(
        metrics_lib.MetricsLogger(workdir, total_steps, start_step, is_main)))
    evaluators = evals.Evaluators(config, model, mesh)
    if start_step == 0:  # the random (or init_from) encoder's scores: each run's own baseline
      writer.write_eval_scalars(0, evaluators.run_at_start(state["params"]))
    elif is_main:  # a resumed run's gains are against the step-0 row it logged (process 0's)
      evaluators.remember_start(metric_files.read(workdir))
    termination = cleanup.enter_context(contextlib.closing(_Termination()))
    input_clock = cleanup.enter_context(contextlib.closing(input_wait.InputWaitClock()))
    warn_if_input_bound = input_wait.InputBoundWarning(is_main)
    profiler = cleanup.enter_context(profiling.StepProfiler(config, workdir, is_main))

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
      with storage.saving(checkpoint.checkpoint_dir(workdir), step):
        writer.flush()  # the metrics up to a checkpoint survive a kill, wherever the workdir is
        ckpt.save(step, state, config)

    # A failed asynchronous save stops the run at the next step (with several processes, at the
    # next logged step, where they exchange what they know and so stop together).
    alone = jax.process_count() == 1
    for step in range(start_step, total_steps):
      done = step + 1
      with profiler.step(done):
        batch = input_clock.next(batches)
        if compiled_step is None:
          lowered = built.step_fn.lower(state, batch)
          compiled_step = lowered.compile()
          utilization = _utilization(config, lowered, is_main)
        state, step_metrics = compiled_step(state, batch)
      input_clock.dispatched(step_metrics)  # the state is donated to the next step: not it
      profiler.after_step(done, step_metrics)
      failed_save = ckpt.failed_save() or 0  # never waits
      if failed_save and alone:
        ckpt.raise_failed_save(failed_save)
      if done % config.log_every_steps == 0 or done == total_steps:
        check_finite(state)
        scalars = jax.device_get(step_metrics)
        images_per_sec, eta = writer.throughput(done, batch_size)
        corrupt, waiting, failed_save = _over_processes(batches.num_corrupt,
                                                        input_clock.fraction(), failed_save)
        if failed_save:
          ckpt.raise_failed_save(failed_save)
        writer.write_scalars(done, dict(scalars, images_per_sec=images_per_sec, eta_seconds=eta,
                                        corrupt_images_skipped=corrupt,
                                        input_wait_fraction=waiting,
                                        **utilization.scalars(images_per_sec / batch_size)))
        warn_if_input_bound(waiting)
      if visualize and config.image_every_steps and done % config.image_every_steps == 0:
        writer.write_images(done, jax.device_get(visualize(state["params"], batch,
                                                           jax.random.key(done))))
      writer.write_eval_scalars(done, evaluators.maybe_run(state["params"], done, total_steps))
      stop = termination.requested(done)  # read once: the signal may land in the middle of a save
      if stop:
        print(f"SIGTERM: saving step {done} and exiting", flush=True)
      if done % config.ckpt_every_steps == 0 or done == total_steps or stop:
        save(done)
      if stop:
        break
    with storage.saving(checkpoint.checkpoint_dir(workdir), int(state["step"])):
      ckpt.wait()
  if is_main:
    print(f"Done. Checkpoints: {checkpoint.checkpoint_dir(workdir)}; TensorBoard: "
          f"{metric_files.tensorboard_location(workdir)}; "
          f"metrics: {metric_files.location(workdir)}", flush=True)
  return state

