"""Paths that may be URLs (gs://...): one place that knows object stores from local disks.

Every user path goes through `etils.epath` (local files, and gs:// through gcsfs), arrays through
orbax/tensorstore. This module adds what an object store needs on top:

- `path(p)`: an `epath.Path`, local paths made absolute (every process must name the same place);
- `check_bucket(p)`: a missing bucket is refused in seconds (creating a directory in one can hang);
- `check_shared(workdir)`: every process of a multi-process run must see the same workdir (a
  per-host /tmp on a pod does not), checked by process 0 writing a marker the others must read;
- `upload(local, remote)`: an immutable object, written once (object stores rewrite on append).
"""
import contextlib
import logging
import os
import threading
import uuid

from etils import epath

from mimjax import errors

# Cloud Storage through gcsfs, not TensorFlow's client: the same code then runs against the
# storage emulator in the tests, and TF's fixed endpoint stays out of the path handling.
os.environ.setdefault("EPATH_USE_TF", "false")

BUCKET_CHECK_SECONDS = 30


class StorageError(errors.UserError, OSError):
  """A path that cannot be read or written: no such bucket, no access, not shared by all hosts."""


class _DropBucketTypeNotice(logging.Filter):
  """gcsfs warns on every open when it cannot query a bucket's type (emulators, some IAM roles)."""

  def filter(self, record):
    return "Could not determine bucket type" not in record.getMessage()


logging.getLogger("gcsfs").addFilter(_DropBucketTypeNotice())


def is_remote(p) -> bool:
  """True for URLs (gs://, s3://, ...): paths the other hosts of a pod can reach."""
  return "://" in os.fspath(p)


def path(p) -> epath.Path:
  """`p` as an epath.Path; local paths are expanded and made absolute."""
  p = os.fspath(p)
  return epath.Path(p) if is_remote(p) else epath.Path(os.path.abspath(os.path.expanduser(p)))


def join(p, *parts) -> str:
  """`p/part/...` as a string, URL or local."""
  return os.fspath(path(p).joinpath(*parts))


def bucket(p) -> str | None:
  """The bucket URL (gs://NAME) of a gs:// path, else None."""
  p = os.fspath(p)
  if not p.startswith("gs://"):
    return None
  return "gs://" + p[len("gs://"):].split("/", 1)[0]


def _run_with_timeout(fn, seconds: float, what: str):
  # A daemon thread: a call that never answers must not hold the process at exit (a pool's
  # worker is joined then, and the storage client goes on logging its retries meanwhile).
  result, done = {}, threading.Event()

  def call():
    try:
      result["value"] = fn()
    except BaseException as e:  # pylint: disable=broad-except
      result["error"] = e
    done.set()

  threading.Thread(target=call, daemon=True, name=f"storage: {what}").start()
  if not done.wait(seconds):
    raise StorageError(f"{what}: no answer from the storage service within {seconds:.0f} s: "
                       "check the network and the credentials (gcloud auth "
                       "application-default login)")
  if "error" in result:
    raise result["error"]
  return result["value"]


def check_bucket(p, seconds: float = BUCKET_CHECK_SECONDS):
  """Raises StorageError unless the bucket of a gs:// path exists (a no-op for other paths)."""
  name = bucket(p)
  if name is None:
    return

  def exists():
    try:
      return epath.Path(name).exists()
    except Exception as e:  # pylint: disable=broad-except
      raise StorageError(f"cannot reach {name} (for {os.fspath(p)}): {type(e).__name__}: {e}") from None

  if not _run_with_timeout(exists, seconds, f"checking {name}"):
    raise StorageError(
        f"bucket {name} does not exist (or these credentials cannot see it), so {os.fspath(p)} "
        f"cannot be written: create it in the region of the machines, e.g. gcloud storage "
        f"buckets create {name} --location=us-central1")


def make_dirs(p) -> epath.Path:
  """Creates directory `p` (and parents) after checking its bucket; returns it as a Path."""
  check_bucket(p)
  directory = path(p)
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise StorageError(f"cannot create {directory}: {e}") from None
  return directory


def check_writable(p):
  """Raises StorageError unless a file can be written and deleted in directory `p`."""
  directory = make_dirs(p)
  probe = directory / f".write_check_{uuid.uuid4().hex}"
  try:
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise StorageError(f"{directory} is not writable: {e}") from None


def check_shared(workdir, process_index: int, process_count: int, broadcast, barrier):
  """Raises StorageError on every process unless all of them see the same `workdir`.

  Process 0 writes a marker named by a token it broadcasts; each other process must read it.
  `broadcast(token) -> process 0's token` and `barrier(name)` are the collectives to use.
  """
  if process_count == 1:
    return
  directory = path(workdir)
  token = broadcast(uuid.uuid4().int % (1 << 62))
  marker = directory / f".shared_check_{token}"
  if process_index == 0:
    marker.write_text("written by process 0")
  barrier("mimjax_shared_check_written")
  seen = marker.exists()
  barrier("mimjax_shared_check_read")
  if process_index == 0:
    marker.unlink(missing_ok=True)
  if not seen:
    hint = (" (a local path is private to each host: use gs://BUCKET/... on a pod)"
            if not is_remote(workdir) else "")
    raise StorageError(f"process {process_index} does not see the workdir {directory} that "
                       f"process 0 writes: all processes need one shared workdir{hint}")


def upload(local, remote):
  """Copies the local file `local` to `remote` as one object (written once, never appended)."""
  target = path(remote)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_bytes(epath.Path(local).read_bytes())


def prepare_workdir(workdir):
  """Before a run: the bucket exists, process 0 creates the workdir, and all processes share it."""
  import jax  # local: the launchers use this module without jax
  from jax.experimental import multihost_utils

  check_bucket(workdir)
  if jax.process_index() == 0:
    make_dirs(workdir)
  if jax.process_count() > 1:
    broadcast = lambda token: int(multihost_utils.broadcast_one_to_all(token))
    check_shared(workdir, jax.process_index(), jax.process_count(), broadcast,
                 multihost_utils.sync_global_devices)


@contextlib.contextmanager
def saving(directory, step: int):
  """Turns a failed write of step `step`'s checkpoint (or the one before it) into one line.

  Transient errors never get here: tensorstore and gcsfs retry them with backoff. What does is
  an error that outlasted those retries; the checkpoints before it stay complete and usable.
  """
  try:
    yield
  except errors.UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise StorageError(
        f"writing checkpoints to {directory} failed (the save of step {step} or the one before "
        f"it), after retries: {type(e).__name__}: {e}. The run stopped; the earlier checkpoints "
        "there are complete: fix the storage and start the same command again to resume") from e
