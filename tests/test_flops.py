"""MFU arithmetic, checked by hand; the model FLOPs MFU counts; the trainer logs
tflops_per_device."""
import json
import os

import jax
import jax.numpy as jnp
import pytest

from mimjax import checkpoint
from mimjax import flops
from mimjax import optim
from mimjax import sharding
from mimjax import step as step_lib
from mimjax import train
from tests import helpers


@pytest.fixture(scope="module")
def matmul():
  """A compiled (64 x 128) @ (128 x 32) matmul: 2 * 64 * 128 * 32 = 524,288 FLOPs."""
  return jax.jit(jnp.matmul).lower(jnp.ones((64, 128)), jnp.ones((128, 32))).compile()


def test_step_flops_from_xla(matmul):
  assert flops.step_flops(matmul) == 2 * 64 * 128 * 32


def test_mfu_by_hand():
  # A step of 2,097,152 FLOPs on 4 devices is 524,288 per device; at 1e6 steps/s that is
  # 0.524288 TFLOP/s per device, of a v5e's 197 TFLOP/s 0.266%.
  said = []
  util = flops.StepUtilization(4 * 524288, 4, "TPU v5 lite", "bfloat16", log=said.append)
  assert not said
  out = util.scalars(steps_per_sec=1e6)
  assert out["tflops_per_device"] == pytest.approx(0.524288)
  assert out["mfu"] == pytest.approx(0.524288 / 197)
  assert flops.mfu(98.5e12, 1.0, 197e12) == pytest.approx(0.5)
  # ViT-B/16 MAE at 58.7 GFLOP per image, 4096 images on 16 H100s at 55% MFU: 27.6 ms a step.
  per_device = 58.7e9 * 4096 / 16
  assert flops.step_seconds_at(per_device, 989e12, 0.55) == pytest.approx(0.027626, rel=1e-4)
  assert flops.mfu(per_device, 0.027626, 989e12) == pytest.approx(0.55, rel=1e-4)


def test_unknown_peak_logs_tflops_only_and_says_so_once():
  said = []
  util = flops.StepUtilization(524288, 1, "cpu", "float32", log=said.append)
  assert len(said) == 1 and "'cpu'" in said[0] and "not mfu" in said[0]
  assert util.scalars(2.0) == {"tflops_per_device": pytest.approx(2 * 524288 / 1e12)}
  assert len(said) == 1


def test_no_count_logs_nothing_and_says_why():
  said = []
  util = flops.StepUtilization(None, 8, "TPU v4", "bfloat16", log=said.append)
  assert len(said) == 1 and "JAX_PLATFORMS" in said[0]
  assert util.scalars(2.0) == {}


def _lowered(config):
  """The step of `config` lowered for this process's one device, as the trainer does."""
  built = step_lib.build_step(config, sharding.make_mesh(1, 1), optim.schedule(1.0, 1, 4), 4)
  return built.step_fn.lower(checkpoint.abstract_with_shardings(built.abstract, built.shardings),
                             step_lib.abstract_batch(config, built.batch_sharding))


def _xla_step_flops(config):
  """XLA's count for the compiled step on one device (its micro-batch loop scaled by its trips)."""
  compiled = _lowered(config).compile()
  return flops.step_flops(compiled, config.optim.accum_steps)


# Width 192 on 64 px: matmuls dominate the FLOPs, as in a real model.
MATMUL_BOUND = {"model.variant": "W192-D2-H3/8", "input.image_size": 64,
                "model.decoder_width": 128, "model.decoder_depth": 1, "model.decoder_heads": 4}


@pytest.fixture(scope="module")
def model_flops():
  return step_lib.model_flops(helpers.tiny_config("mae", **MATMUL_BOUND))


def test_model_flops_are_xlas_count_of_the_plain_step(model_flops):
  # On one device, with one micro-batch and no remat, the compiled program does the model's
  # arithmetic: XLA's count of it agrees (fusion changes a few element-wise ops).
  assert model_flops == pytest.approx(_xla_step_flops(helpers.tiny_config("mae", **MATMUL_BOUND)),
                                      rel=0.03)


@pytest.mark.parametrize("override", [
    {"optim.accum_steps": 4}, {"model.remat": True}, {"model.attention_impl": "cudnn"}])
def test_model_flops_do_not_depend_on_how_the_step_runs(model_flops, override):
  config = helpers.tiny_config("mae", **MATMUL_BOUND, **override)
  assert step_lib.model_flops(config) == model_flops


@pytest.mark.parametrize("override", [{}, {"model.remat": True}, {"optim.accum_steps": 2}])
def test_the_callers_lowering_counts_the_same(model_flops, override):
  # The trainer passes its own lowering; on a CPU the plain step is counted as it is (saving a
  # second trace), any other is counted anew.
  config = helpers.tiny_config("mae", **MATMUL_BOUND, **override)
  assert step_lib.model_flops(config, _lowered(config)) == model_flops


def test_remat_is_hardware_work_not_model_work(model_flops):
  # Recomputing each block's forward pass costs XLA's program about a third more (forward
  # 2 of the 6 FLOPs per parameter and token); MFU does not count it.
  remat = _xla_step_flops(helpers.tiny_config("mae", **MATMUL_BOUND, **{"model.remat": True}))
  assert 1.15 * model_flops < remat < 1.4 * model_flops


def test_trainer_logs_tflops_per_device(tmp_path):
  config = helpers.tiny_config("mae", total_steps=2)
  train.train(config, str(tmp_path))
  rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
  per_step = step_lib.model_flops(config)
  assert per_step > 0
  for r in rows:
    assert "mfu" not in r  # no peak known for a CPU
    steps_per_sec = r["images_per_sec"] / config.input.batch_size
    assert r["tflops_per_device"] == pytest.approx(per_step * steps_per_sec / 1e12, rel=1e-3)
