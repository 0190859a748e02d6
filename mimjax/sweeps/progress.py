"""Where each trial stands, read from its workdir alone (its checkpoints through
mimjax.checkpoint, its metric rows through mimjax.metric_files) plus the launcher's status
marker: safe to call while the trials run, on local or gs:// roots."""
import dataclasses
import json
import socket
import time
from typing import Any

from etils import epath

from mimjax import checkpoint
from mimjax import metric_files
from mimjax import workdir_lock

STATUS_DIR = "status"  # ROOT/status/TRIAL.json: the launcher's marker

DONE, RUNNING, FAILED, STOPPED, PENDING = "done", "running", "failed", "stopped", "pending"


@dataclasses.dataclass
class Progress:
  status: str           # one of DONE, RUNNING, FAILED, STOPPED (started, not running), PENDING
  step: int             # the last logged step (0 before the first log)
  checkpoint_step: int  # the last complete checkpoint (0 when none)
  rows: list[dict[str, Any]]  # the metric rows (metric_files.read), in step order
  returncode: int | None = None
  running_here: bool = False  # RUNNING, as a live process on this host


def _marker(root: str, name: str) -> epath.Path:
  return epath.Path(root) / STATUS_DIR / f"{name}.json"


def mark(root: str, name: str, state: str, returncode: int | None = None,
         pid: int | None = None):
  """Records what the launcher knows: a trial started (RUNNING, with the trainer's pid) or
  ended (DONE, FAILED, with its exit status)."""
  p = _marker(root, name)
  p.parent.mkdir(parents=True, exist_ok=True)
  p.write_text(json.dumps({"state": state, "returncode": returncode, "pid": pid,
                           "host": socket.gethostname(), "time": time.time()}))


def _alive(marker: dict[str, Any]) -> bool:
  """False when the marker's trainer ran on this host and is gone (its launcher was killed)."""
  if marker.get("host") != socket.gethostname() or not marker.get("pid"):
    return True  # another host's process: trust the marker
  return workdir_lock.pid_alive(marker["pid"])


def _read_marker(root: str, name: str) -> dict[str, Any]:
  p = _marker(root, name)
  try:
    return json.loads(p.read_text()) if p.exists() else {}
  except json.JSONDecodeError:
    return {}


def progress(root: str, entry: dict[str, Any]) -> Progress:
  """The status of the manifest entry `entry`: DONE once its final checkpoint is complete."""
  workdir = str(epath.Path(root) / entry["workdir"])
  latest = checkpoint.latest_step(workdir)  # None when it has none
  last_ckpt = latest or 0
  rows = metric_files.read(workdir)
  step = max([r["step"] for r in rows], default=0)
  marker = _read_marker(root, entry["name"])
  if entry.get("total_steps") and last_ckpt >= entry["total_steps"]:
    status = DONE
  elif marker.get("state") == FAILED:
    status = FAILED
  elif marker.get("state") == RUNNING and _alive(marker):
    status = RUNNING
  elif latest is not None or rows:
    status = STOPPED
  else:
    status = PENDING
  here = status == RUNNING and marker.get("host") == socket.gethostname()
  return Progress(status, step, last_ckpt, rows, marker.get("returncode"), here)
