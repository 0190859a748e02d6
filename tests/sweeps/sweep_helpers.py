"""Helpers for sweep tests: the tiny demo's trainer flags, sweep files, the CLI."""
import os
import subprocess
import sys

from tests import trainer_utils as tu

SWEEP_CLI = os.path.join(tu.ROOT, "launch", "sweep.py")
CONFIG = f"{tu.ROOT}/configs/mae.py:demo"


def tiny_flags(**overrides) -> list[str]:
  """The trainer flags after `--` that shrink the demo to tests/trainer_utils.py's tiny config."""
  return [f for f in tu.cli_flags("mae", "unused", **overrides)
          if not f.startswith(("--config=", "--workdir="))]


def write_sweep(path, trials) -> str:
  """A sweep file whose get_sweep() returns `trials` (a list of dicts, as Python source)."""
  path.write_text(f"def get_sweep(arg=None):\n  return {trials!r}\n")
  return str(path)


def sweep_cmd(sweep_file: str, root: str, *flags, trainer_flags=()) -> list[str]:
  return [sys.executable, SWEEP_CLI, f"--config={CONFIG}", f"--sweep={sweep_file}",
          f"--root={root}", *flags, "--", *trainer_flags]


def env() -> dict:
  """The trainer tests' environment, CPU only (the sweep then needs no device probe)."""
  return dict(tu.cli_env(), JAX_PLATFORMS="cpu")


def run(args, timeout=600) -> subprocess.CompletedProcess:
  return subprocess.run(args, env=env(), capture_output=True, text=True,
                        timeout=timeout, cwd=tu.ROOT)
