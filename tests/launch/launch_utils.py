"""Helpers for the launch and storage tests: the shared run length, subprocesses, losses."""
import os
import subprocess
import sys

from mimjax import metric_files
from tests import trainer_utils as tu

# Every run in these tests: the tiny MAE demo, 12 steps, a checkpoint every 2 (long enough that a
# signal sent on an early step's log line lands while the run is still going, on a fast machine).
STEPS = dict(total_steps=12, ckpt_every_steps=2)
HERE = os.path.dirname(os.path.abspath(__file__))


def use_fake_cloud(monkeypatch, state) -> None:
  """The stand-ins (tests/launch/bin/) first on PATH, their state and log of calls in `state`."""
  monkeypatch.setenv("PATH", os.path.join(HERE, "bin") + os.pathsep + os.environ["PATH"])
  monkeypatch.setenv("MIMJAX_FAKE_CLOUD", str(state))
  monkeypatch.setenv("MIMJAX_TEST_PYTHON", sys.executable)


def losses(workdir) -> dict[int, float]:
  """step -> loss of a workdir, local or gs://."""
  return {r["step"]: r["loss"] for r in metric_files.read(workdir)}


def start(args, env=None) -> subprocess.Popen:
  return subprocess.Popen(args, env=env or tu.cli_env(), cwd=tu.ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def read_until(process: subprocess.Popen, marker: str) -> str:
  """Reads `process`'s output up to the first line holding `marker`."""
  seen = []
  for line in process.stdout:
    seen.append(line)
    if marker in line:
      return "".join(seen)
  raise AssertionError(f"{marker!r} never printed:\n{''.join(seen)}")


def launcher(target: str) -> list[str]:
  return [sys.executable, os.path.join(tu.ROOT, "launch", f"{target}.py")]
