"""The train step builds and runs where only jax, flax, optax and ml_collections are installed.

An accelerator host that benchmarks or compiles the step has no TensorFlow and no metric writers:
the configs, the models, the step and benchmarks/train_step.py must not need them. Checked in
subprocesses where importing TensorFlow, tensorflow_datasets or clu fails.
"""
import re
import subprocess
import sys

import pytest

from mimjax import step as step_lib
from tests import trainer_utils as tu

# Any import of these raises ImportError in the subprocess, as on a machine without them.
_BLOCK = ("import sys\n"
          "for name in ('tensorflow', 'tensorflow_datasets', 'clu'):\n"
          "  sys.modules[name] = None\n")

_STEP = _BLOCK + """
import jax, jax.numpy as jnp
from mimjax import sharding, step
from tests import trainer_utils as tu

for method in ('mae', 'lut'):
  config = tu.tiny_config(method)
  built = step.build_step(config, sharding.make_mesh(1, 1), lambda s: 1e-3, 4)
  state = jax.jit(built.init, out_shardings=built.shardings)(jax.random.key(0))
  batch = {k: jax.random.randint(jax.random.key(i), s.shape, 0, 256).astype(jnp.uint8)
           for i, (k, s) in enumerate(step.abstract_batch(config, built.batch_sharding).items())}
  state, metrics = built.step_fn(state, batch)
  print(method, float(metrics['loss']), int(state['step']), step.model_flops(config) > 0)
"""


def _run_blocked(code: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code, *args], env=tu.cli_env(), cwd=tu.ROOT,
                        capture_output=True, text=True, timeout=300)


def test_the_step_runs_without_tensorflow():
  result = _run_blocked(_STEP)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
  for method in ("mae", "lut"):
    loss, step_count, counted = lines[method].split()
    assert 0 < float(loss) < 10 and step_count == "1" and counted == "True"


def test_the_benchmark_runs_without_tensorflow():
  config = tu.tiny_config("mae")
  flags = [f"--config={tu.ROOT}/configs/mae.py:demo", "--torch=False", "--steps=1", "--warmup=1",
           "--config.input.image_size=16", "--config.input.batch_size=8",
           "--config.model.variant=mu/4", "--config.model.decoder_width=32",
           "--config.model.decoder_depth=1", "--config.model.decoder_heads=2"]
  code = _BLOCK + ("import runpy\n"
                   "sys.argv = ['train_step.py', *sys.argv[1:]]\n"
                   "runpy.run_path('benchmarks/train_step.py', run_name='__main__')\n")
  result = _run_blocked(code, *flags)
  assert result.returncode == 0, result.stderr[-3000:]
  line = next(l for l in result.stdout.splitlines() if l.strip().startswith("mimjax"))
  rate, gflop = re.search(r"\| ([\d.]+) images/s \| ([\d.]+) GFLOP/image \(model\)", line).groups()
  assert float(rate) > 0
  # The FLOPs it reports are the model's, as the trainer's MFU counts them.
  assert float(gflop) == pytest.approx(step_lib.model_flops(config) / 8 / 1e9, abs=0.006)
