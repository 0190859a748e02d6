"""A `jax.profiler` trace of chosen training steps, in `WORKDIR/profile` (gs:// included).

`config.profile.num_steps > 0` traces the steps numbered `start_step` ... `start_step +
num_steps - 1` (as in metrics.jsonl: step 1 is the first update, compilation included) on
process 0. The trace is TensorBoard's profile plugin layout, `profile/plugins/profile/<run>/`
(`<host>.xplane.pb`), as `jax.profiler.start_trace(WORKDIR/profile)` would write it: open it
with `tensorboard --logdir WORKDIR/profile` (the `tensorboard-plugin-profile` package).

jax's profiler writes through TensorFlow's file systems, whose Cloud Storage client cannot be
pointed elsewhere (nor at the storage emulator the tests use): the trace is written to a local
temporary folder and copied into the workdir through epath once it is complete.
"""
import contextlib
import os
import shutil
import tempfile

import jax
import ml_collections

from mimjax import storage
from mimjax import workdir_layout


class StepProfiler:
  """Starts the trace before the first chosen step, stops it once the last one has run.

  A context manager: leaving it normally with a trace under way (the run ended or was stopped
  inside the window) keeps what was traced; leaving it on an error discards the trace.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, is_main: bool):
    self._first = config.profile.start_step
    self._end = self._first + config.profile.num_steps  # one past the last traced step
    self._enabled = is_main and config.profile.num_steps > 0
    self._target = storage.path(workdir) / workdir_layout.PROFILE
    self._local = None  # the local folder of the trace under way
    self._traced = []  # the steps traced so far

  def __enter__(self):
    return self

  def step(self, step: int):
    """A context around fetching `step`'s batch (1-based) and dispatching it: starts the trace
    at the first chosen step, and marks each traced step for TensorBoard's step-time view."""
    if self._enabled and self._local is None and self._first <= step < self._end:
      self._local = tempfile.mkdtemp(prefix="mimjax_profile_")
      jax.profiler.start_trace(self._local)
    if self._local is None:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def after_step(self, step: int, outputs):
    """Called once `step` is dispatched; ends the trace after the last chosen step."""
    if self._local is None:
      return
    self._traced.append(step)
    if step + 1 >= self._end:
      jax.block_until_ready(outputs)  # the trace must hold the device's work, not the dispatch
      self._finish(keep=True)

  def _finish(self, keep: bool):
    jax.profiler.stop_trace()
    local, self._local, self._enabled = self._local, None, False  # one trace per run
    try:
      if keep and self._traced:
        self._copy(local)
        first, last = self._traced[0], self._traced[-1]
        steps = f"steps {first}-{last}" if last > first else f"step {first}"
        print(f"Profile of {steps}: {self._target} (tensorboard --logdir {self._target})",
              flush=True)
    finally:
      shutil.rmtree(local, ignore_errors=True)

  def _copy(self, local: str):
    """Every file of the finished trace into the workdir, each written once."""
    for folder, _, names in os.walk(local):
      for name in names:
        file = os.path.join(folder, name)
        storage.upload(file, self._target.joinpath(*os.path.relpath(file, local).split(os.sep)))

  def __exit__(self, exc_type, exc, tb):
    if self._local is not None:
      self._finish(keep=exc_type is None)
    return False
