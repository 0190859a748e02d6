"""A run whose checkpoint save meets a full disk, then a restart once space is free.

Run by tests/test_full_disk.py inside a private mount namespace, on a tmpfs mounted at argv[1]
with room for one checkpoint of the tiny model but not two: the CLI (its steps paced to its
saves, tests/save_failure_run.py) stops at the failed save; the restart first grows the tmpfs
(the space an operator frees). Prints one JSON object with what happened.
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

import jax

from mimjax import checkpoint
from mimjax import state as state_lib
from mimjax import train
from tests import helpers

RUN = {"total_steps": 8, "ckpt_every_steps": 2}
ROOMY = "16m"


def main(mount: str):
  workdir = os.path.join(mount, "workdir")
  # The restart compiles the same step again: keep the executables out of the tmpfs, on disk.
  cache = tempfile.mkdtemp()
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  env = dict(helpers.cli_env(), JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  run = subprocess.run([sys.executable, "-m", "tests.save_failure_run",
                        *helpers.cli_flags("mae", workdir, **RUN)],
                       env=env, cwd=helpers.ROOT, capture_output=True, text=True, timeout=300)
  result = {"returncode": run.returncode, "stderr": run.stderr,
            "steps_run": [int(line.split()[1].split("/")[0]) for line in run.stdout.splitlines()
                          if line.startswith("step ")]}
  result["steps_after_failure"] = checkpoint.Checkpointer(workdir, read_only=True).all_steps()
  _, step, _ = state_lib.restore_state(workdir)  # verifies every array's checksum
  result["intact_step"] = step
  subprocess.run(["mount", "-o", f"remount,size={ROOMY}", mount], check=True)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train.train(helpers.tiny_config("mae", **RUN), workdir)
  result["restart_stdout"] = out.getvalue()
  result["steps_after_restart"] = checkpoint.Checkpointer(workdir, read_only=True).all_steps()
  result["losses"] = helpers.losses(workdir)
  print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
