"""The train step builds and runs where only jax, flax, optax and ml_collections are installed.

An accelerator host that benchmarks or compiles the step has no TensorFlow and no metric writers:
the configs, the models, the step and benchmarks/train_step.py must not need them. Checked in
subprocesses where importing TensorFlow, tensorflow_datasets or clu fails.
"""
import re
import subprocess
import sys

import pytest

from mimjax import sharding
from mimjax import step as step_lib
from tests import helpers

# Any import of these raises ImportError in the subprocess, as on a machine without them.
_BLOCK = ("import sys\n"
          "for name in ('tensorflow', 'tensorflow_datasets', 'clu'):\n"
          "  sys.modules[name] = None\n")

_STEP = """
import jax, jax.numpy as jnp
from mimjax import sharding, step
from tests import helpers

for method in ('mae', 'lut'):
  config = helpers.tiny_config(method)
  built = step.build_step(config, sharding.make_mesh(1, 1), lambda s: 1e-3, 4)
  state = jax.jit(built.init, out_shardings=built.shardings)(jax.random.key(0))
  batch = {k: jax.random.randint(jax.random.key(i), s.shape, 0, 256).astype(jnp.uint8)
           for i, (k, s) in enumerate(step.abstract_batch(config, built.batch_sharding).items())}
  state, metrics = built.step_fn(state, batch)
  print('STEP', method, float(metrics['loss']), int(state['step']))
"""

_BENCHMARK = """
import runpy
sys.argv = ['train_step.py', *sys.argv[1:]]
runpy.run_path('benchmarks/train_step.py', run_name='__main__')
"""

# The benchmark on the tiny MAE of tests/helpers.py.
_BENCHMARK_FLAGS = [
    f"--config={helpers.ROOT}/configs/mae.py:demo", "--torch=False", "--steps=1", "--warmup=1",
    "--config.input.image_size=16", "--config.input.batch_size=8", "--config.model.variant=mu/4",
    "--config.model.decoder_width=32", "--config.model.decoder_depth=1",
    "--config.model.decoder_heads=2"]


@pytest.fixture(scope="module")
def without_tensorflow():
  """The output of the step (MAE, LUT) and of the benchmark, in one process without TensorFlow."""
  result = subprocess.run([sys.executable, "-c", _BLOCK + _STEP + _BENCHMARK, *_BENCHMARK_FLAGS],
                          env=helpers.cli_env(), cwd=helpers.ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_the_step_runs_without_tensorflow(without_tensorflow):
  steps = [line.split()[1:] for line in without_tensorflow.splitlines() if line.startswith("STEP ")]
  assert [method for method, _, _ in steps] == ["mae", "lut"]
  for _, loss, step_count in steps:
    assert 0 < float(loss) < 10 and step_count == "1"


def test_the_benchmark_runs_without_tensorflow(without_tensorflow):
  line = next(l for l in without_tensorflow.splitlines() if l.strip().startswith("mimjax"))
  rate, gflop = re.search(r"\| ([\d.]+) images/s \| ([\d.e-]+) GFLOP/image \(model\)",
                          line).groups()
  assert float(rate) > 0
  # The FLOPs it reports are the model's, as the trainer's MFU counts them.
  model_flops = step_lib.model_flops(helpers.tiny_config("mae"))
  assert float(gflop) == pytest.approx(model_flops / 8 / 1e9, rel=1e-3)


@pytest.mark.parametrize("method", ["mae", "lut"])
def test_the_compiled_cpu_step_has_no_convolution(method):
  """The patch embedding is a matmul: its gradient is no dilated convolution (slow on CPUs)."""
  config = helpers.tiny_config(method)
  built = step_lib.build_step(config, sharding.make_mesh(1, 1), lambda s: 1e-3, 4)
  lowered = built.step_fn.lower(built.abstract, step_lib.abstract_batch(config, built.batch_sharding))
  hlo = lowered.compile().as_text()
  assert re.search(r"\bdot\(", hlo)  # the matmuls are there, named as this test expects
  assert not re.search(r"\bconvolution\(", hlo)
