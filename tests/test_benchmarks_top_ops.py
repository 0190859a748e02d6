"""benchmarks/top_ops.py reads a real jax.profiler trace and ranks its XLA ops by time."""
import subprocess
import sys

import jax
import jax.numpy as jnp

from tests import helpers


def test_top_ops_ranks_the_ops_of_a_trace(tmp_path):
  big = jnp.ones((512, 512))
  matmuls = jax.jit(lambda x: jnp.tanh(x @ x @ x @ x))
  matmuls(big).block_until_ready()
  with jax.profiler.trace(str(tmp_path / "trace")):
    for _ in range(3):
      matmuls(big).block_until_ready()
  result = subprocess.run([sys.executable, "benchmarks/top_ops.py", str(tmp_path / "trace"),
                           "--top", "3"], cwd=helpers.ROOT, env=helpers.cli_env(),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  total_ms = float(lines[0].split(" ms of op time")[0].split(", ")[-1])
  table = lines[2:5]
  assert total_ms > 0 and len(table) == 3
  shares = [float(row.split()[1].rstrip("%")) for row in table]
  assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.0
  assert all(int(row.split()[2]) % 3 == 0 for row in table)  # each op ran once per call
  assert "by kind:" in result.stdout


def test_top_ops_says_when_the_folder_has_no_trace(tmp_path):
  result = subprocess.run([sys.executable, "benchmarks/top_ops.py", str(tmp_path)],
                          cwd=helpers.ROOT, env=helpers.cli_env(), capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip() == (f"top_ops: error: no *.xplane.pb under {tmp_path}: pass the "
                                   "folder a jax.profiler trace was written to")
