"""mimjax-compile: the real train step compiled for TPU slices that are not here.

FLOPs and memory are checked against a count made here from the model's shapes alone; the CLI's
exit-status contract (0 fits, 1 does not fit, 2 user error) is checked in subprocesses.
"""
import json
import re
import subprocess
import sys
import warnings

import pytest

from mimjax import compile as compile_lib
from mimjax import config_lib
from mimjax import errors
from mimjax import hardware
from mimjax import topology
from mimjax.models import vit
from tests import helpers

if not topology.has_libtpu():
  warnings.warn("libtpu is not installed (pip install 'mimjax[tpu]'): the TPU-compile tests of "
                "tests/test_compile.py are SKIPPED")
needs_libtpu = pytest.mark.skipif(
    not topology.has_libtpu(),
    reason="SKIPPED: libtpu is not installed; pip install 'mimjax[tpu]' to compile for TPU slices")

# A small MAE whose FLOPs are dominated by matmuls, as a real model's are.
SMALL = {"model.variant": "W192-D2-H3/8", "input.image_size": 64, "input.batch_size": 8,
         "model.decoder_width": 128, "model.decoder_depth": 1, "model.decoder_heads": 4}


def analytic_train_flops(config) -> float:
  """6 x params x tokens per image (forward 2, backward 4) plus attention, for the whole batch."""
  spec = vit.decode_variant(config.model.variant)
  patches = (config.input.image_size // spec.patch) ** 2
  enc_tokens = int(patches * (1 - config.model.mask_ratio)) + 1
  dec_tokens = patches + 1
  d, dd, pixels = spec.width, config.model.decoder_width, spec.patch ** 2 * 3
  matmul_params_tokens = (pixels * d * patches  # patch embedding, every patch
                          + 12 * d * d * spec.depth * enc_tokens  # qkv, proj, 2 MLP layers
                          + d * dd * enc_tokens  # decoder embedding
                          + 12 * dd * dd * config.model.decoder_depth * dec_tokens
                          + dd * pixels * dec_tokens)  # prediction
  attention = 2 * 2 * (enc_tokens ** 2 * d * spec.depth  # QK^T and AV, forward
                       + dec_tokens ** 2 * dd * config.model.decoder_depth)
  return config.input.batch_size * (6 * matmul_params_tokens + 3 * attention)


def analytic_params(config) -> int:
  spec = vit.decode_variant(config.model.variant)
  d, dd, pixels = spec.width, config.model.decoder_width, spec.patch ** 2 * 3
  block = lambda w: 12 * w * w + 13 * w  # weights, qkv/proj/MLP biases, two LayerNorms
  return (pixels * d + d + d  # patch embedding + bias, cls token
          + block(d) * spec.depth + 2 * d  # blocks, final LayerNorm
          + d * dd + dd + dd  # decoder embedding + bias, mask token
          + block(dd) * config.model.decoder_depth + 2 * dd + dd * pixels + pixels)


def _compile_cli(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "mimjax.compile", *args], env=helpers.cli_env(),
                        capture_output=True, text=True, timeout=timeout, cwd=helpers.ROOT)


@pytest.fixture(scope="session")
def compared(tmp_path_factory):
  """The CLI on v5e-4 with --compare_meshes: (the process, its JSON report)."""
  report = tmp_path_factory.mktemp("compare") / "report.json"
  flags = [f"--config.{k}={v}" for k, v in SMALL.items()]
  result = _compile_cli(f"--config={helpers.ROOT}/configs/mae.py:demo", "--topology=v5litepod-4",
                        "--compare_meshes", f"--report={report}", *flags)
  assert result.returncode == 0, result.stderr[-3000:]
  return result, json.loads(report.read_text())


@pytest.fixture(scope="session")
def reports(compared):
  config = helpers.tiny_config("mae", **SMALL)
  return {"v5e:2x2": compared[1]["meshes"]["data=4"],
          "v4:2x2x1": compile_lib.analyze(config, compile_lib.tpu_target("v4:2x2x1"), 0.4)}


@needs_libtpu
@pytest.mark.parametrize("name,kind", [("v5e:2x2", "TPU v5 lite"), ("v4:2x2x1", "TPU v4")])
def test_flops_match_the_analytic_count(reports, name, kind):
  r = reports[name]
  config = helpers.tiny_config("mae", **SMALL)
  assert r["device_kind"] == kind and r["num_devices"] == 4 and r["compiled"]
  expected = analytic_train_flops(config)
  # The model FLOPs (the step's program before partitioning) are the matmuls plus a few percent
  # of element-wise work; XLA's program for one chip does a quarter of them.
  assert r["flops_per_step"] == pytest.approx(expected, rel=0.05)
  assert r["flops_per_device_step"] == pytest.approx(expected / 4, rel=0.05)
  assert r["flops_per_example"] == pytest.approx(expected / 8, rel=0.05)
  assert r["xla_flops_per_device_step"] == pytest.approx(expected / 4, rel=0.2)
  # The step-time estimate is the FLOPs at the assumed MFU of the chip's peak.
  peak = hardware.chip(kind).peak_flops(r["dtype"])
  assert r["peak_flops_per_device"] == peak and r["step_seconds_at_mfu"] == pytest.approx(r["flops_per_device_step"] / (0.4 * peak))


@needs_libtpu
@pytest.mark.parametrize("name,hbm", [("v5e:2x2", 16), ("v4:2x2x1", 32)])
def test_memory_matches_the_state(reports, name, hbm):
  r = reports[name]
  mem = r["memory_bytes_per_device"]
  n_params = analytic_params(helpers.tiny_config("mae", **SMALL))
  assert r["n_params"] == n_params
  assert mem["params"] == 4 * n_params  # float32, replicated (fsdp=1)
  assert 2 * mem["params"] <= mem["optimizer_state"] <= 2 * mem["params"] + 64  # AdamW mu, nu
  assert mem["batch"] == 8 * 64 * 64 * 3 // 4  # uint8 images, a quarter per device
  # XLA's arguments are the state and the batch (small arrays padded to the TPU's tiles); its
  # peak adds the temporaries.
  state = mem["params"] + mem["optimizer_state"] + mem["other_state"]
  assert state + mem["batch"] <= mem["arguments"] <= 1.15 * (state + mem["batch"])
  assert r["peak_memory_bytes_per_device"] >= mem["arguments"] + mem["temporaries"]
  assert r["hbm_bytes_per_device"] == hbm * 2 ** 30
  assert r["fits"] and r["verdict"].startswith("fits: ") and f" of {hbm} GiB; " in r["verdict"]


@needs_libtpu
@pytest.mark.parametrize("name,steps", [("v5e:2x2", 1200), ("v4:2x2x1", 4)])
def test_the_verdict_gives_the_runs_length_and_cost(reports, compared, name, steps):
  """The bill: the run's steps (total_steps set: the demo's 1200, the tiny config's 4) at the
  estimated step time, in hours on the slice's 4 chips and in chip-hours."""
  r = reports[name]
  assert (r["total_steps"], r["epochs"]) == (steps, None)
  assert r["run_hours_at_mfu"] == pytest.approx(steps * r["step_seconds_at_mfu"] / 3600)
  assert r["chip_hours_at_mfu"] == pytest.approx(4 * r["run_hours_at_mfu"])
  assert re.fullmatch(rf"fits: [\d.]+ GiB of \d+ GiB; {steps:,} steps x (< )?[\d.]+ m?s = "
                      r"(< )?[\d.]+ h on 4 chips = (< )?[\d.]+ chip-hours at 40% MFU",
                      r["verdict"]), r["verdict"]
  if name == "v5e:2x2":  # the CLI prints it
    assert r["verdict"] in compared[0].stdout


def _imagenet_recipe(**overrides):
  """MAE's published length: 1600 epochs of ImageNet at batch 4096."""
  overrides = {"total_steps": None, "epochs": 1600, "optim.warmup_epochs": 40,
               "input.batch_size": 4096, "input.dataset": "imagenet2012", **overrides}
  return helpers.tiny_config("mae", **overrides)


def test_the_runs_steps_are_the_trainers(monkeypatch):
  """Epochs: the steps come from the dataset's size as the trainer derives them."""
  from mimjax import data

  monkeypatch.setattr(data, "num_examples", lambda cfg: 1_281_167)  # tfds imagenet2012's train
  config = _imagenet_recipe()
  assert compile_lib.run_steps(config) == (1600 * 312, None)
  assert compile_lib.run_steps(config)[0] == config_lib.steps(config, 1_281_167)[0]
  r = dict(epochs=1600, total_steps=499_200, step_seconds_at_mfu=0.19, assumed_mfu=0.4,
           num_devices=16, run_hours_at_mfu=499_200 * 0.19 / 3600,
           chip_hours_at_mfu=16 * 499_200 * 0.19 / 3600)
  assert compile_lib.format_bill(r) == ("1600 epochs = 499,200 steps x 0.19 s = 26 h on 16 chips "
                                        "= 422 chip-hours at 40% MFU")


def test_a_dataset_size_not_known_here_is_said_not_guessed(tmp_path):
  steps, why = compile_lib.run_steps(_imagenet_recipe(**{"input.data_dir": str(tmp_path)}))
  assert steps is None and why.startswith("tfds dataset 'imagenet2012' is not prepared in")
  steps, why = compile_lib.run_steps(_imagenet_recipe(**{"input.dataset": "folder",
                                                         "input.folder": str(tmp_path)}))
  assert steps is None and "known only by listing its images" in why
  r = dict(epochs=1600, total_steps=None, total_steps_unknown=why, dataset="folder",
           step_seconds_at_mfu=0.19, assumed_mfu=0.4)
  assert compile_lib.format_bill(r) == (f"1600 epochs of folder: steps unknown here ({why}); "
                                        "0.19 s per step at 40% MFU")


@needs_libtpu
def test_xla_out_of_memory_is_the_verdict():
  # Attention over 3137 tokens for 1024 images per chip: the block inputs (the early check)
  # fit, the attention probabilities do not; XLA's own out-of-memory error decides.
  config = helpers.tiny_config("mae", **{"model.variant": "mu/4", "input.image_size": 224,
                                         "input.batch_size": 4096})
  r = compile_lib.analyze(config, compile_lib.tpu_target("v5e:2x2"), 0.4)
  assert not r["fits"] and not r["compiled"]
  assert r["verdict"].startswith("does not fit: XLA ran out of memory")
  assert "--config.mesh.fsdp=4" in r["verdict"] and "--config.model.remat=True" in r["verdict"]
  assert r["peak_memory_bytes_per_device"] > 16 * 2 ** 30


@needs_libtpu
def test_cli_compares_data_and_fsdp_meshes(compared):
  result, out = compared
  data, fsdp = out["meshes"]["data=4"], out["meshes"]["fsdp=4"]
  assert data["mesh"] == {"data": 4, "fsdp": 1} and fsdp["mesh"] == {"data": 1, "fsdp": 4}
  # The same work per device whichever way the batch is split: the model's by construction,
  # and XLA's programs for either mesh ...
  assert fsdp["flops_per_device_step"] == data["flops_per_device_step"]
  assert fsdp["xla_flops_per_device_step"] == pytest.approx(data["xla_flops_per_device_step"],
                                                            rel=0.05)
  # ... while fsdp keeps about a quarter of the (large) parameters on each chip.
  assert fsdp["memory_bytes_per_device"]["params"] < 0.3 * data["memory_bytes_per_device"]["params"]
  assert out["recommended"] in out["meshes"] and out["fits"]
  assert f"recommended: {out['recommended']}" in result.stdout
  assert "fits: " in result.stdout and "model FLOPs: " in result.stdout
  assert "GFLOP per image" in result.stdout and "XLA's program for one device" in result.stdout
  # Each compile (minutes for a large model) is announced before it starts, and timed.
  announced = [l for l in result.stderr.splitlines() if l.startswith("mimjax-compile: compiling")]
  assert len(announced) == 2 and "v5e:2x2" in announced[0], result.stderr[-2000:]
  timed = re.findall(r"compiled in (\d+) s", result.stdout)
  assert [int(t) for t in timed] == [round(out["meshes"][m]["compile_seconds"]) for m in out["meshes"]]


@needs_libtpu
def test_cli_refuses_an_impossible_config_with_the_verdict(tmp_path):
  report = tmp_path / "report.json"
  result = _compile_cli(f"--config={helpers.ROOT}/configs/mae.py:variant=H/14",
                        "--topology=v5e:2x2", f"--report={report}")
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert "compiling" not in result.stderr  # refused from the state's size, before compiling
  verdict = result.stdout.strip().splitlines()[-1]
  assert verdict.startswith("does not fit: ") and "> 16 GiB" in verdict
  assert "--config.mesh.fsdp=4" in verdict
  out = json.loads(report.read_text())
  assert out["fits"] is False and out["batch_size"] == 4096 and out["mesh"]["fsdp"] == 1
  assert out["peak_memory_bytes_per_device"] > out["hbm_bytes_per_device"] == 16 * 2 ** 30


def test_cli_user_error_is_one_line():
  result = _compile_cli(f"--config={helpers.ROOT}/configs/mae.py:demo", "--topology=v5e-16")
  assert result.returncode == 2, result.stdout + result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("mimjax-compile: error:")]
  assert len(errors) == 1 and "is not a TPU slice" in errors[0] and "v5litepod-16" in errors[0]
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name,message", [("v4-7", "two per chip"), ("v5e:2x2x2", "have 2 axes"),
                                          ("v6e-12", "powers of two"), ("tpu", "not a TPU slice")])
def test_bad_topology_names_say_what_to_use(name, message):
  with pytest.raises(topology.TopologyError, match=message):
    topology.parse(name)


@needs_libtpu
def test_config_is_validated_for_the_slice_before_compiling():
  config = helpers.tiny_config("mae", **{"input.batch_size": 6})
  with pytest.raises(config_lib.ConfigError, match="config.input.batch_size: 6 is not divisible"):
    compile_lib.main_fn(config, "v5e:2x2", None, 0.4, False)
  with pytest.raises(errors.UserError, match="--mfu=40"):
    compile_lib.main_fn(config, "v5e:2x2", None, 40, False)


@pytest.mark.parametrize("name,jax_name,chips", [
    ("v5litepod-16", "v5e:4x4", 16), ("v5litepod-8", "v5e:2x4", 8), ("v6e-16", "v6e:4x4", 16),
    ("v4-8", "v4:2x2x1", 4), ("v4-32", "v4:2x2x4", 16), ("v5p-32", "v5p:2x2x4", 16),
    ("v5p-128", "v5p:4x4x4", 64), ("v5p-256", "v5p:4x4x8", 128), ("v5e:2x2", "v5e:2x2", 4),
    ("v4:2x2x1", "v4:2x2x1", 4),
])
def test_topology_names(name, jax_name, chips):
  s = topology.parse(name)
  assert (s.jax_name, s.num_chips) == (jax_name, chips)
  assert topology.parse(s.gcloud_name) == s  # and back


@needs_libtpu
def test_gcloud_names_count_v4_cores():
  # v4-8 is 4 chips: one JAX device per chip (the two TensorCores work as one).
  assert len(topology.devices(topology.parse("v4-8"))) == 4
  assert len(topology.devices(topology.parse("v5litepod-16"))) == 16
