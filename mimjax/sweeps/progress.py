"""Where each trial stands, read from its workdir alone (checkpoints, metrics.jsonl) plus the
launcher's status marker: safe to call while the trials run, on local or gs:// roots."""
import dataclasses
import json
import os
import socket
import time
from typing import Any

from etils import epath

from mimjax import workdir_lock

# mimjax.CHECKPOINT_SUBDIR and mimjax.metrics.JSONL, not imported: they pull in orbax and
# TensorFlow, and a report should not wait for them (tests/sweep checks that they agree).
CHECKPOINT_SUBDIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
METRICS_CHUNKS = "metrics"  # mimjax.metric_files.CHUNKS
STATUS_DIR = "status"
# Orbax marks a finished checkpoint on object stores with this file (it renames a temporary
# directory elsewhere, so there a bare step directory is already complete).
COMMIT_FILE = "commit_success.txt"

DONE, RUNNING, FAILED, STOPPED, PENDING = "done", "running", "failed", "stopped", "pending"


@dataclasses.dataclass
class Progress:
  status: str           # one of DONE, RUNNING, FAILED, STOPPED (started, not running), PENDING
  step: int             # the last logged step (0 before the first log)
  checkpoint_step: int  # the last complete checkpoint (0 when none)
  rows: list[dict[str, Any]]  # metrics.jsonl, one dict per logged step
  returncode: int | None = None
  running_here: bool = False  # RUNNING, as a live process on this host


def _is_object_store(path: epath.Path) -> bool:
  return "://" in str(path)


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of the workdir's complete checkpoints, ascending."""
  directory = epath.Path(workdir) / CHECKPOINT_SUBDIR
  if not directory.exists():
    return []
  steps = []
  for child in directory.iterdir():
    if child.name.isdigit() and child.is_dir():
      if not _is_object_store(child) or (child / COMMIT_FILE).exists():
        steps.append(int(child.name))
  return sorted(steps)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The run's metric rows in step order, from metrics.jsonl (local workdirs) or the chunks
  under metrics/ (buckets, see mimjax/metric_files.py); a line being written is left out."""
  root = epath.Path(workdir)
  files = sorted((root / METRICS_CHUNKS).glob("*.jsonl")) if (root / METRICS_CHUNKS).exists() else []
  if (root / METRICS_FILE).exists():
    files.append(root / METRICS_FILE)
  rows = []
  for f in files:
    for line in f.read_text().splitlines():
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict) and "step" in row:
        rows.append(row)
  return sorted(rows, key=lambda r: r["step"])


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
  ckpts = checkpoint_steps(workdir)
  rows = read_metrics(workdir)
  last_ckpt = ckpts[-1] if ckpts else 0
  step = max([r["step"] for r in rows], default=0)
  marker = _read_marker(root, entry["name"])
  if entry.get("total_steps") and last_ckpt >= entry["total_steps"]:
    status = DONE
  elif marker.get("state") == FAILED:
    status = FAILED
  elif marker.get("state") == RUNNING and _alive(marker):
    status = RUNNING
  elif ckpts or rows:
    status = STOPPED
  else:
    status = PENDING
  here = status == RUNNING and marker.get("host") == socket.gethostname()
  return Progress(status, step, last_ckpt, rows, marker.get("returncode"), here)
