"""Peak FLOP/s table and MFU arithmetic, checked by hand; the trainer logs tflops_per_device."""
import json
import os

import jax
import jax.numpy as jnp
import pytest

from mimjax import checkpoint
from mimjax import flops
from mimjax import optim
from mimjax import sharding
from mimjax import train
from tests import trainer_utils as tu


@pytest.fixture(scope="module")
def matmul():
  """A compiled (64 x 128) @ (128 x 32) matmul: 2 * 64 * 128 * 32 = 524,288 FLOPs."""
  return jax.jit(jnp.matmul).lower(jnp.ones((64, 128)), jnp.ones((128, 32))).compile()


def test_step_flops_from_xla(matmul):
  assert flops.step_flops(matmul) == 2 * 64 * 128 * 32


@pytest.mark.parametrize("kind,name,bf16,fp32,hbm", [
    ("TPU v4", "TPU v4", 275e12, 275e12, 32 * 2 ** 30),
    ("TPU v5 lite", "TPU v5e", 197e12, 197e12, 16 * 2 ** 30),
    ("TPU v5", "TPU v5p", 459e12, 459e12, 95 * 2 ** 30),
    ("TPU v6 lite", "TPU v6e", 918e12, 918e12, 32 * 2 ** 30),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB", 312e12, 156e12, 40e9),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB", 312e12, 156e12, 80e9),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989e12, 494.7e12, 80e9),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756e12, 378e12, 80e9),
    ("NVIDIA H200", "H200", 989e12, 494.7e12, 141e9),
])
def test_chip_table(kind, name, bf16, fp32, hbm):
  spec = flops.chip_spec(kind)
  assert (spec.name, spec.hbm_bytes) == (name, hbm)
  assert spec.peak_flops("bfloat16") == pytest.approx(bf16)
  assert spec.peak_flops("float32") == pytest.approx(fp32)


def test_unknown_kinds_have_no_peak():
  assert flops.chip_spec("cpu") is None and flops.chip_spec("NVIDIA GeForce GTX 1080") is None


def test_mfu_by_hand(matmul):
  # 524,288 FLOPs a step at 1e6 steps/s is 0.524288 TFLOP/s; of a v5e's 197 TFLOP/s, 0.266%.
  said = []
  util = flops.StepUtilization(matmul, "TPU v5 lite", "bfloat16", log=said.append)
  assert not said
  out = util.scalars(steps_per_sec=1e6)
  assert out["tflops_per_device"] == pytest.approx(0.524288)
  assert out["mfu"] == pytest.approx(0.524288 / 197)
  assert flops.mfu(98.5e12, 1.0, 197e12) == pytest.approx(0.5)
  # ViT-B/16 MAE at 58.7 GFLOP per image, 4096 images on 16 H100s at 55% MFU: 27.6 ms a step.
  per_device = 58.7e9 * 4096 / 16
  assert flops.step_seconds_at(per_device, 989e12, 0.55) == pytest.approx(0.027626, rel=1e-4)
  assert flops.mfu(per_device, 0.027626, 989e12) == pytest.approx(0.55, rel=1e-4)


def test_unknown_peak_logs_tflops_only_and_says_so_once(matmul):
  said = []
  util = flops.StepUtilization(matmul, "cpu", "float32", log=said.append)
  assert len(said) == 1 and "'cpu'" in said[0] and "not mfu" in said[0]
  assert util.scalars(2.0) == {"tflops_per_device": pytest.approx(2 * 524288 / 1e12)}
  assert len(said) == 1


def _step_flops(config):
  built = train.build_step(config, sharding.make_mesh(1, 1), optim.schedule(1.0, 1, 4), 4)
  compiled = built.step_fn.lower(checkpoint.abstract_with_shardings(built.abstract, built.shardings),
                                 train.abstract_batch(config, built.batch_sharding)).compile()
  return flops.step_flops(compiled, config.optim.accum_steps)


@pytest.fixture(scope="module")
def tiny_step_flops():
  return _step_flops(tu.tiny_config("mae"))


def test_trainer_logs_tflops_per_device(tmp_path, tiny_step_flops):
  config = tu.tiny_config("mae", total_steps=2)
  train.train(config, str(tmp_path))
  rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
  # The same step compiled here (only the schedule's length differs) has the FLOPs the trainer
  # multiplies by its steps/s.
  per_step = tiny_step_flops
  assert per_step > 0
  for r in rows:
    assert "mfu" not in r  # no peak known for a CPU
    steps_per_sec = r["images_per_sec"] / config.input.batch_size
    assert r["tflops_per_device"] == pytest.approx(per_step * steps_per_sec / 1e12, rel=1e-3)


def test_micro_batches_do_not_change_the_step_flops(tiny_step_flops):
  # XLA counts the micro-batch loop's body once; scaled by its trips, 4 micro-batches of 2 are
  # the work of one batch of 8 (plus the optimizer update counted 4 times: 8% of this tiny model).
  one = tiny_step_flops
  four = _step_flops(tu.tiny_config("mae", **{"optim.accum_steps": 4}))
  assert one <= four <= 1.3 * one
