"""Checkpoints: the only module that talks to orbax.

A checkpoint holds the whole train state (step, params, optimizer state, and for LUT the
BatchNorm statistics and the EMA teacher) plus the config as JSON. Saves are asynchronous and
atomic (orbax writes to a temporary directory and renames it when complete), so a run killed at
any moment leaves only complete checkpoints behind; leftovers are cleaned on the next start.
"""
import json
import logging

import jax
import ml_collections
import orbax.checkpoint as ocp

from mimjax import errors
from mimjax import storage

SUBDIR = "checkpoints"


class _DropReadOnlyNotice(logging.Filter):
  """orbax warns on every read-only open, which is how restores and exports open a workdir."""

  def filter(self, record):
    return "Given directory is read only" not in record.getMessage()


logging.getLogger("absl").addFilter(_DropReadOnlyNotice())


class CheckpointError(errors.UserError, ValueError):
  """A checkpoint directory that cannot be used; the message says what and how to fix it."""


def checkpoint_dir(workdir: str) -> str:
  return storage.join(workdir, SUBDIR)


class Checkpointer:
  """Saves and restores train states under `workdir/checkpoints/`, keeping the last `keep`."""

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    directory = checkpoint_dir(workdir)
    if read_only and not storage.path(directory).is_dir():
      self._manager = None
      return
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, max_to_keep=None,
                                             save_interval_steps=0, create=False)
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             cleanup_tmp_directories=True,
                                             enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step() if self._manager else None

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps()) if self._manager else []

  def save(self, step: int, state, config: ml_collections.ConfigDict):
    """Starts an asynchronous save; returns at once (the device arrays are copied first)."""
    # force: the trainer decides when to save, not orbax's interval policy.
    self._manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(json.loads(config.to_json()))))

  def restore(self, step: int, abstract_state):
    """Restores into the shardings of `abstract_state` (a pytree of jax.ShapeDtypeStruct)."""
    self._require(step)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored.state

  def config(self, step: int) -> ml_collections.ConfigDict:
    self._require(step)
    restored = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ml_collections.ConfigDict(restored.config)

  def _require(self, step: int):
    if step not in self.all_steps():
      raise CheckpointError(
          f"no complete checkpoint for step {step}; available steps: {self.all_steps() or 'none'}")

  def wait(self):
    if self._manager:
      self._manager.wait_until_finished()

  def close(self):
    if self._manager:
      self._manager.close()


def abstract_with_shardings(abstract_state, shardings):
  return jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)
