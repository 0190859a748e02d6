"""Checkpoints: the only module that talks to orbax.

A checkpoint holds the whole train state (step, params, optimizer state, and for LUT the
BatchNorm statistics and the EMA teacher) plus the config as JSON. Saves are asynchronous and
atomic (orbax writes to a temporary directory and renames it when complete), so a run killed at
any moment leaves only complete checkpoints behind; leftovers are cleaned on the next start.
"""
import collections
import json
import logging
import os
import sys
import traceback

from etils import epath
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

import mimjax
from mimjax import errors
from mimjax import storage
from mimjax import workdir_layout

# The layout of what a checkpoint saves; raise it when that changes, and keep reading old ones.
# 1: items `state`, `config` and `meta` (this version, the writer's version, array checksums).
FORMAT_VERSION = 1


class _DropReadOnlyNotice(logging.Filter):
  """orbax warns on every read-only open, which is how restores and exports open a workdir."""

  def filter(self, record):
    return "Given directory is read only" not in record.getMessage()


logging.getLogger("absl").addFilter(_DropReadOnlyNotice())


class _ErrorsAside(logging.Filter):
  """orbax logs a failed background save's traceback from its threads, two or three times over,
  while the trainer reports the failure in one line: its error records are kept here instead, for
  the failed save's log file in the workdir (--verbose shows the error's traceback)."""

  def __init__(self):
    super().__init__()
    self.lines = collections.deque(maxlen=20)
    self._orbax = os.path.dirname(ocp.__file__) + os.sep

  def filter(self, record):
    if record.levelno < logging.ERROR or not record.pathname.startswith(self._orbax):
      return True
    self.lines.append(logging.Formatter("%(asctime)s %(threadName)s %(message)s").format(record))
    return False


_orbax_errors = _ErrorsAside()
logging.getLogger("absl").addFilter(_orbax_errors)


def _is_late_read_callback(value) -> bool:
  """When one array of a restore fails, tensorstore completes the other reads after orbax has
  closed its event loop, and each completion callback raises this: noise under the real error."""
  return isinstance(value, RuntimeError) and str(value) == "Event loop is closed"


def _quiet_unraisable(previous):
  def hook(unraisable):
    if not _is_late_read_callback(unraisable.exc_value):
      previous(unraisable)
  return hook


sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)


class CheckpointError(errors.UserError, ValueError):
  """A checkpoint directory that cannot be used; the message says what and how to fix it."""


class DamagedCheckpointError(CheckpointError):
  """A committed checkpoint whose files no longer restore (truncated, overwritten, missing)."""


class FutureFormatError(CheckpointError):
  """A checkpoint written by a newer mimjax, in a format this version does not know."""


class NoIntactCheckpointError(CheckpointError):
  """Every checkpoint of a workdir is damaged: starting over is the user's decision."""


class SaveFailedError(errors.UserError, OSError):
  """A checkpoint save failed (after the storage clients' own retries); the earlier checkpoints
  are intact."""


def _reason(error: BaseException) -> str:
  return errors.one_line(f"{type(error).__name__}: {error}")[:300]


def _unreachable(where, error: BaseException) -> errors.StorageUnreachableError:
  return errors.StorageUnreachableError(
      f"reading checkpoint {where} failed: the storage did not answer or refused access, after "
      f"retries ({_reason(error)}); nothing was moved or changed: fix the connection or the "
      "credentials and start the same command again")


def checkpoint_dir(workdir: str) -> str:
  return storage.join(workdir, workdir_layout.CHECKPOINTS)


def steps(workdir: str) -> list[int]:
  """The steps of the workdir's complete checkpoints, ascending, by orbax's rule (a save under
  way is not one), read from the folder names alone: no array is read and no device is touched,
  so a sweep's report may call it while the run saves."""
  return sorted(ocp.utils.checkpoint_steps(checkpoint_dir(workdir)))


def latest_step(workdir: str) -> int | None:
  """The step of the workdir's newest complete checkpoint; None when it has none."""
  return max(steps(workdir), default=None)


class Checkpointer:
  """Saves and restores train states under `workdir/checkpoints/`, keeping the last `keep`."""

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    directory = checkpoint_dir(workdir)
    self._workdir = workdir
    self._directory = directory
    self._saving = None  # the step of the latest save started and not yet known to be complete
    self._failed = None  # (step, error) of a save that failed
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
    meta = dict(format_version=FORMAT_VERSION, mimjax_version=mimjax.__version__,
                checksums=fingerprint(state))
    self.wait()  # orbax waits for the previous save anyway: a failure of it is named here
    self._saving = step
    try:
      # force: the trainer decides when to save, not orbax's interval policy.
      self._manager.save(step, force=True, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          config=ocp.args.JsonSave(json.loads(config.to_json())),
          meta=ocp.args.JsonSave(meta)))
    except Exception as e:  # pylint: disable=broad-except
      self._saving, self._failed = None, (step, e)
      self.raise_failed_save(step)

  def failed_save(self) -> int | None:
    """The step of a save that failed, else None (also while a save is under way): never waits,
    so the trainer asks after every step."""
    if self._failed is None and self._saving is not None and (
        not self._manager.is_saving_in_progress()):
      self._collect()  # the save's threads are done: returns at once
    return self._failed[0] if self._failed else None

  def wait(self):
    """Waits for the save under way; raises raise_failed_save's error if it (or one before it)
    failed."""
    if self._manager:
      self._collect()
      if self._failed:
        self.raise_failed_save(self._failed[0])

  def _collect(self):
    step, self._saving = self._saving, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._failed = (step, e)

  def raise_failed_save(self, step: int):
    """Raises the one-line error of the failed save of `step` (found here or, with several
    processes, by another process), naming the newest complete checkpoint; the error's details
    go to a log file in the workdir. Nothing saved before is touched."""
    error = self._failed[1] if self._failed and self._failed[0] == step else None
    try:
      listed = steps(self._workdir)
    except Exception:  # pylint: disable=broad-except  (the storage that failed the save)
      listed = self.all_steps()
    intact = [s for s in listed if s != step]
    kept = (f"the newest complete checkpoint, step {max(intact)}, is intact and the next start "
            "resumes from it" if intact else "no earlier checkpoint exists")
    if error is None:
      raise SaveFailedError(f"saving checkpoint step {step} to {self._directory} failed on "
                            f"another process (its own error says why); {kept}")
    details = self._write_details(step, error)
    if errors.is_out_of_space(error):
      raise errors.StorageFullError(
          f"no space left on the device while saving checkpoint step {step} to "
          f"{self._directory}: free space (or raise the quota) and start again; {kept}{details}"
      ) from error
    raise SaveFailedError(
        f"saving checkpoint step {step} to {self._directory} failed ({_reason(error)}); {kept}: "
        f"fix the storage and start the same command again{details}") from error

  def _write_details(self, step: int, error: BaseException) -> str:
    """Writes orbax's logged errors and `error`'s traceback to the workdir; says where."""
    path = storage.path(self._workdir) / workdir_layout.SAVE_ERRORS / f"{step}.log"
    text = "\n".join([*_orbax_errors.lines, "".join(traceback.format_exception(error))])
    _orbax_errors.lines.clear()
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(text)
    except Exception:  # pylint: disable=broad-except  (the storage that failed the save)
      try:
        path.unlink(missing_ok=True)
      except Exception:  # pylint: disable=broad-except
        pass
      return "; run with --verbose for the traceback"
    return f"; the details are in {path}"

  def restore(self, step: int, abstract_state):
    """Restores into the shardings of `abstract_state` (a pytree of jax.ShapeDtypeStruct)."""
    self._require(step)
    meta = self.meta(step)
    with _damage_as_error(self.step_dir(step)):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))
    if meta.get("checksums") is not None:
      verify(restored.state, meta["checksums"], self.step_dir(step))
    return restored.state

  def config(self, step: int) -> ml_collections.ConfigDict:
    self._require(step)
    self.meta(step)  # refuses a future format before reading anything else
    with _damage_as_error(self.step_dir(step)):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          config=ocp.args.JsonRestore()))
      return ml_collections.ConfigDict(restored.config)

  def _require(self, step: int):
    if step not in self.all_steps():
      raise CheckpointError(
          f"no complete checkpoint for step {step}; available steps: {self.all_steps() or 'none'}")

  def close(self):
    if self._manager:
      try:
        # The manager clears an interrupted save's temporary folders in a thread it starts when
        # made, and its close() does not wait for it: a process that exits soon after (a refused
        # restore) would leave that thread running into the interpreter's shutdown.
        getattr(self._manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()
        self._manager.close()
      except Exception as e:  # pylint: disable=broad-except
        # A failed save is reported by `wait`, `save` or the trainer, a full disk by them or by
        # the error that ended the run.
        if self._failed is None and not errors.is_out_of_space(e):
          raise

  @property
  def directory(self) -> str:
    return self._directory

  # Integrity, format versions and damaged checkpoints (see the section below).
  def step_dir(self, step: int) -> epath.Path:
    return epath.Path(self._directory) / str(step)

  def meta(self, step: int) -> dict:
    return read_meta(self.step_dir(step))

  def reload(self):
    if self._manager:
      self._manager.reload()


def abstract_with_shardings(abstract_state, shardings):
  return jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)


# ---------------------------------------------------------------------------------------------
# Integrity: per-array checksums saved with the state and verified after each restore (orbax
# itself restores overwritten bytes silently), format versions, and damaged checkpoints moved
# aside so that a resume falls back to the newest intact one.
# ---------------------------------------------------------------------------------------------
def _bits(x: jax.Array) -> jax.Array:
  """The raw bits of `x` as uint32 (one per element)."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _checksums(leaves):
  """(sum, position-weighted sum) of every leaf's bits, both modulo 2**32."""
  out = []
  for x in leaves:
    bits = _bits(x).ravel()
    position = jnp.arange(1, bits.size + 1, dtype=jnp.uint32)
    out.append(jnp.stack([bits.sum(dtype=jnp.uint32), (bits * position).sum(dtype=jnp.uint32)]))
  return out


def fingerprint(state) -> dict[str, list[int]]:
  """{array path: [two 32-bit checksums]}: changes when any byte of any array does."""
  paths, leaves = zip(*jax.tree_util.tree_flatten_with_path(state)[0])
  sums = jax.device_get(_checksums(list(leaves)))
  return {jax.tree_util.keystr(p): [int(v) for v in np.asarray(s)] for p, s in zip(paths, sums)}


def verify(state, expected: dict[str, list[int]], where) -> None:
  """Raises DamagedCheckpointError naming the arrays whose contents differ from the saved sums."""
  actual = fingerprint(state)
  bad = sorted(k for k in set(actual) | set(expected) if actual.get(k) != expected.get(k))
  if bad:
    raise DamagedCheckpointError(
        f"checkpoint {where} is damaged: {len(bad)} array(s) do not match the checksums saved "
        f"with them ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")


def read_meta(step_dir: epath.Path) -> dict:
  """The `meta` item of a checkpoint ({} for one written before format versions existed)."""
  path = epath.Path(step_dir) / "meta" / "metadata"
  with _damage_as_error(step_dir, "its meta/metadata does not read: "):
    if not path.exists():
      return {}
    meta = json.loads(path.read_text())
  version = meta.get("format_version")
  if not isinstance(version, int) or version > FORMAT_VERSION:
    raise FutureFormatError(
        f"checkpoint {step_dir} has format version {version}, written by mimjax "
        f"{meta.get('mimjax_version', '(unknown version)')}; this mimjax {mimjax.__version__} "
        f"reads format versions up to {FORMAT_VERSION}: use that mimjax version or newer")
  return meta


class _damage_as_error:
  """Turns a failure to read a committed checkpoint into a DamagedCheckpointError, or into a
  StorageUnreachableError when the storage, not the checkpoint, is what failed."""

  def __init__(self, step_dir, what: str = ""):
    self._where, self._what = step_dir, what

  def __enter__(self):
    return self

  def __exit__(self, kind, error, tb):
    if error is None or isinstance(error, errors.UserError) or not isinstance(error, Exception):
      return False
    if errors.is_storage_unreachable(error):  # the data may be intact: never move it aside
      raise _unreachable(self._where, error) from error
    raise DamagedCheckpointError(
        f"checkpoint {self._where} is damaged: {self._what}{_reason(error)}") from error


def move_aside(ckpt: "Checkpointer", step: int) -> epath.Path:
  """Moves checkpoint `step` to WORKDIR/checkpoints_damaged/ (process 0); returns where."""
  source = ckpt.step_dir(step)
  target_dir = source.parent.parent / workdir_layout.DAMAGED_CHECKPOINTS
  target = target_dir / str(step)
  n = 1
  while target.exists():
    target, n = target_dir / f"{step}.{n}", n + 1
  if jax.process_index() == 0:
    target_dir.mkdir(parents=True, exist_ok=True)
    source.rename(target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"mimjax_move_aside_{step}")
  ckpt.reload()
  return target


def restore_newest_intact(ckpt: "Checkpointer", abstract_state, check_config=None, log=print):
  """(step, config, state) of the newest checkpoint that restores completely, or None when the
  workdir has none.

  Each newer checkpoint that fails is named in one line with the reason and moved aside. When
  none is left that restores (now, or on an earlier start), NoIntactCheckpointError: training
  from step 0 again is not decided here. `check_config(config)` may raise to refuse a checkpoint
  for another reason (a changed model): that error propagates and nothing is moved.
  """
  try:
    return _restore_newest_intact(ckpt, abstract_state, check_config, log)
  except errors.UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if errors.is_storage_unreachable(e):  # listing or moving, not a checkpoint's own read
      raise _unreachable(ckpt.directory, e) from e
    raise


def _restore_newest_intact(ckpt, abstract_state, check_config, log):
  for step in sorted(ckpt.all_steps(), reverse=True):
    try:
      config = ckpt.config(step)
      if check_config is not None:
        check_config(config)
      state = ckpt.restore(step, abstract_state)
      return step, config, state
    except DamagedCheckpointError as e:
      target = move_aside(ckpt, step)
      if jax.process_index() == 0:
        log(f"Skipping checkpoint step {step}: {errors.one_line(e)}; moved it to {target}",
            flush=True)
  damaged = epath.Path(ckpt.directory).parent / workdir_layout.DAMAGED_CHECKPOINTS
  if damaged.exists() and any(damaged.iterdir()):
    raise NoIntactCheckpointError(
        f"no checkpoint in {ckpt.directory} restores: the damaged ones are in {damaged} "
        f"({', '.join(sorted(p.name for p in damaged.iterdir()))}); to train from step 0 again, "
        f"move {damaged} away first; to go on from one of them, repair it and move it back")
  return None
