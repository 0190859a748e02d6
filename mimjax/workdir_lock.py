"""One run per workdir: a lock file that a second trainer respects and a killed one does not leave.

Process 0 writes `WORKDIR/run.lock` (JSON: host, pid, start time, heartbeat, a random token)
and refreshes the heartbeat every `HEARTBEAT_SECONDS` from a background thread. A trainer that
finds a lock refuses to start while its owner is alive: on the same host while that pid runs,
on another host while the heartbeat is younger than `STALE_SECONDS`. Otherwise the lock was left
by a killed run and is taken over. So is a lock written by an earlier attempt of the same job
(the same `run_id()`: a SLURM job requeued onto another node, a TPU slice recreated after a
preemption), whose heartbeat is still fresh when the next attempt starts elsewhere. Written
through etils.epath, so it works on gs:// too (object stores have no exclusive create: of two
runs started within the same second the lock's read-back refuses the one whose write lost, but
both may pass when their writes and reads do not interleave).
"""
import contextlib
import json
import os
import secrets
import socket
import threading
import time

from etils import epath

from mimjax import errors
from mimjax import workdir_layout

HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 10 * 60.0


class WorkdirBusyError(errors.UserError, RuntimeError):
  """Another live run holds the workdir."""


def pid_alive(pid: int) -> bool:
  """Whether process `pid` of this host still runs (a killed, unreaped zombie does not)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # alive, owned by someone else
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rpartition(")")[2].split()[0] != "Z"
  except OSError:
    return True  # no /proc (macOS): kill(0) is all we know


def _read(path: epath.Path) -> dict | None:
  try:
    return json.loads(path.read_text())
  except (FileNotFoundError, ValueError):
    return None  # gone, or half written by a run killed mid-write: not a live owner


RUN_ID_ENV = "MIMJAX_RUN_ID"


def run_id() -> str | None:
  """What names this run across its restarts: $MIMJAX_RUN_ID (launch/tpu.py sets it), else
  SLURM's job id (a requeued job keeps it, and SLURM never runs two attempts of one job)."""
  return os.environ.get(RUN_ID_ENV) or os.environ.get("SLURM_JOB_ID") or None


def owner_is_alive(lock: dict, now: float | None = None, stale_seconds: float = STALE_SECONDS,
                   host: str | None = None, run: str | None = None) -> bool:
  """Whether the run that wrote `lock` may still be running, as seen by run `run` (`run_id()`).

  On this host: while its pid runs. On another host: not when it is an earlier attempt of `run`
  (its scheduler ended it before starting this one), else while its heartbeat is fresh.
  """
  if lock.get("host") == (host or socket.gethostname()):
    return pid_alive(int(lock.get("pid", -1)))
  if run is not None and lock.get("run_id") == run:
    return False
  return (now or time.time()) - float(lock.get("heartbeat", 0)) < stale_seconds


class WorkdirLock:
  """Held by process 0 for the life of a run; `release()` removes the file."""

  def __init__(self, workdir, heartbeat_seconds: float = HEARTBEAT_SECONDS,
               stale_seconds: float = STALE_SECONDS):
    self.path = epath.Path(workdir) / workdir_layout.LOCK
    self._heartbeat_seconds = heartbeat_seconds
    self._stale_seconds = stale_seconds
    self._stop = threading.Event()
    self._thread = None
    self.record = None

  def acquire(self) -> "WorkdirLock":
    """Takes the lock or raises WorkdirBusyError naming the live run's host and pid."""
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise errors.UserError(
          f"--workdir: cannot create {os.fspath(self.path.parent)!r} ({e.strerror or e}): "
          "choose a writable location") from e
    held = _read(self.path)
    ours = run_id()
    if held is not None and owner_is_alive(held, stale_seconds=self._stale_seconds, run=ours):
      started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(held.get("started", 0)))
      raise WorkdirBusyError(
          f"{os.fspath(self.path.parent)} is in use by another run (host {held.get('host')}, "
          f"pid {held.get('pid')}, started {started}): wait for it to finish, stop it, or use "
          f"another --workdir (if that run is gone for sure, delete {os.fspath(self.path)})")
    if held is not None and ours is not None and held.get("run_id") == ours:
      print(f"Taking over the lock of an earlier attempt of this run ({ours}: host "
            f"{held.get('host')}, pid {held.get('pid')})", flush=True)
    now = time.time()
    self.record = dict(host=socket.gethostname(), pid=os.getpid(), started=now, heartbeat=now,
                       token=secrets.token_hex(8), run_id=ours)
    self._write()
    if (_read(self.path) or {}).get("token") != self.record["token"]:
      raise WorkdirBusyError(f"{os.fspath(self.path.parent)}: another run took the lock at the "
                             "same moment: use another --workdir")
    self._thread = threading.Thread(target=self._beat, daemon=True, name="workdir-heartbeat")
    self._thread.start()
    return self

  def _write(self):
    try:
      self.path.write_text(json.dumps(self.record))
    except OSError as e:
      if errors.is_out_of_space(e):
        raise errors.StorageFullError(
            f"no space left on the device for {os.fspath(self.path)}: free space and start "
            "again") from e
      raise

  def _beat(self):
    while not self._stop.wait(self._heartbeat_seconds):
      self.record["heartbeat"] = time.time()
      try:
        self._write()
      except OSError:
        pass  # a missed heartbeat only makes the lock look older; the next one may succeed

  def release(self):
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self.record is not None and (_read(self.path) or {}).get("token") == self.record["token"]:
      self.path.unlink(missing_ok=True)
    self.record = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False


@contextlib.contextmanager
def hold(workdir):
  """Process 0 holds the workdir's lock for the block; every process fails if it cannot."""
  import jax  # local: the lock itself needs no JAX
  from jax.experimental import multihost_utils
  import numpy as np

  lock = WorkdirLock(workdir)
  error = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except errors.UserError as e:
      error = e
  if jax.process_count() > 1:  # all processes must stop together, or the others would hang
    failed = bool(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
    if failed and error is None:
      error = WorkdirBusyError(f"process 0 could not lock {workdir}: see its log")
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    lock.release()
