"""How much of the training time the devices wait for the input pipeline (`input_wait_fraction`).

The trainer dispatches steps asynchronously: while the devices run step k, the host already
fetches the batch of step k + 1, and time spent in the input iterator costs nothing as long as
the devices still have a step queued. So the wait counted is the part of each fetch after the
devices finished every step dispatched before it, when they had nothing to do but wait for the
batch (a watcher thread notes when each step's outputs are ready). `input_wait_fraction` is that
wait over the wall time of the logging interval; it starts after the first batch (the pipeline's
start-up) and the first interval holds the compilation too.
"""
import math
import queue
import threading
import time

import jax

INPUT_BOUND = 0.10  # above this share of an interval, the run is input-bound


class InputWaitClock:
  """Times the fetches of training batches against the completion of the steps before them."""

  def __init__(self):
    self._dispatched = 0  # steps dispatched so far
    self._ready_at = {}  # step count -> when that step's outputs were ready (the watcher's)
    self._fetches = []  # (start, end, steps dispatched before the fetch) in this interval
    self._interval_start = None
    self._steps = queue.Queue()
    threading.Thread(target=self._watch, daemon=True, name="mimjax: step completion").start()

  def _watch(self):
    while (item := self._steps.get()) is not None:
      count, output = item
      try:
        jax.block_until_ready(output)
      except Exception:  # pylint: disable=broad-except
        pass  # a failed step raises in the trainer's own thread
      self._ready_at[count] = time.monotonic()
      self._steps.task_done()

  def next(self, batches):
    """`next(batches)`, timed."""
    start = time.monotonic()
    batch = next(batches)
    end = time.monotonic()
    if self._interval_start is None:
      self._interval_start = end  # the first fetch is the pipeline's start-up
    else:
      self._fetches.append((start, end, self._dispatched))
    return batch

  def dispatched(self, outputs):
    """Called after each step's dispatch with (some of) its outputs: never donated ones."""
    self._dispatched += 1
    self._steps.put((self._dispatched, jax.tree_util.tree_leaves(outputs)[0]))

  def fraction(self) -> float:
    """The share of the interval since the last call spent waiting for input; starts the next.

    Called once the last step's outputs were read, so every step dispatched has finished.
    """
    self._steps.join()
    now = time.monotonic()
    waited = 0.0
    for start, end, before in self._fetches:
      devices_idle_from = max(start, self._ready_at.get(before, -math.inf))
      waited += max(0.0, end - devices_idle_from)
    wall = now - (self._interval_start or now)
    self._interval_start, self._fetches = now, []
    self._ready_at = {self._dispatched: self._ready_at.get(self._dispatched, now)}
    return min(waited / wall, 1.0) if wall > 0 else 0.0

  def close(self):
    self._steps.put(None)


def advice(fraction: float) -> str:
  """The console warning for an input-bound run: what it costs and what to change."""
  return (f"warning: the devices waited for the input pipeline {fraction:.0%} of the last "
          "logging interval: the run is input-bound. The pipeline needs more CPU per device: "
          "more hosts or hosts with more cores (input.num_threads=0 uses all of them), "
          "input.fast_resize=True (plain bicubic instead of the PIL-exact antialiased resize), "
          "a smaller input.shuffle_buffer (tfds datasets)")


class InputBoundWarning:
  """Prints `advice` the first time an interval is input-bound; the progress lines then show
  the share (metrics.py), so a long input-bound run is not one warning per interval."""

  def __init__(self, is_main: bool):
    self._due = is_main

  def __call__(self, fraction: float):
    if self._due and fraction > INPUT_BOUND:
      self._due = False
      print(advice(fraction), flush=True)
