"""input_wait_fraction counts only the fetches the devices wait for, not those they overlap."""
import time

import jax
import jax.numpy as jnp
import numpy as np

from mimjax import input_wait


@jax.jit
def _slow_step(x):
  """Tenths of a second of matmuls on a CPU core, dispatched asynchronously."""
  return jax.lax.fori_loop(0, 40, lambda _, y: jnp.tanh(y @ x), x).sum()


def _batches(delay: float):
  while True:
    time.sleep(delay)
    yield np.zeros(4)


def _run(clock, batches, step, steps: int) -> float:
  """`steps` fetch-then-dispatch rounds, as the trainer's loop, then the interval's fraction."""
  clock.next(batches)  # the first batch: the pipeline's start-up, not counted
  outputs = None
  for _ in range(steps):
    outputs = step()
    clock.dispatched(outputs)
    clock.next(batches)
  jax.block_until_ready(outputs)
  return clock.fraction()


def test_fetches_overlapped_by_running_steps_are_not_waits():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(512, 512)) / 30, jnp.float32)
  _slow_step(x).block_until_ready()  # compiled
  start = time.monotonic()
  _slow_step(x).block_until_ready()
  step_seconds = time.monotonic() - start
  # Each fetch takes a third of a step: the host spends a quarter of its time in the iterator,
  # while the devices always have the step dispatched before it to run.
  clock = input_wait.InputWaitClock()
  try:
    fraction = _run(clock, _batches(step_seconds / 3), lambda: _slow_step(x), 4)
  finally:
    clock.close()
  assert fraction < 0.1, (fraction, step_seconds)


def test_fetches_after_the_steps_finished_are_waits():
  quick_step = jax.jit(lambda: jnp.ones(()))
  quick_step().block_until_ready()  # compiled
  clock = input_wait.InputWaitClock()
  try:
    fraction = _run(clock, _batches(0.2), quick_step, 3)
  finally:
    clock.close()
  assert fraction > 0.5  # about 1: a step of microseconds per fetch of 0.2 s


def test_an_interval_without_fetches_waited_nothing():
  clock = input_wait.InputWaitClock()
  try:
    assert clock.fraction() == 0.0
  finally:
    clock.close()
