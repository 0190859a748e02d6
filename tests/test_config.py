"""Configs: the published recipes, the demo, and one clear error per bad value."""
import glob
import math
import os
import re
import subprocess
import sys

import pytest

from mimjax import config_lib
from mimjax import optim
from mimjax.sweeps import trials
from tests import helpers
from tests.helpers import load_config as load


@pytest.mark.parametrize("method", ["mae", "lut"])
@pytest.mark.parametrize("variant", ["S/16", "B/16", "L/16", "H/14"])
def test_published_recipe(method, variant):
  c = load(method, f"variant={variant},dataset=imagenet2012")
  assert c.model.variant == variant and c.input.dataset == "imagenet2012"
  assert c.input.batch_size == 4096 and c.input.image_size == 224
  assert c.model.mask_ratio == 0.75 and c.model.norm_pix_loss
  assert (c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads) == (512, 8, 16)
  assert (c.optim.b1, c.optim.b2, c.optim.eps, c.optim.weight_decay) == (0.9, 0.95, 1e-8, 0.05)
  assert c.optim.warmup_epochs == 40 and not c.optim.grad_clip_norm
  assert c.epochs == 1600 and not c.input.fast_resize  # PIL-exact antialiased resizes
  assert c.model.dtype == "bfloat16"  # the official runs' mixed precision
  peak = optim.peak_learning_rate(c.optim.base_lr, 4096, c.optim.lr_rule)
  assert peak == pytest.approx(1.5e-4 * 16)  # both rules give 2.4e-3 at batch 4096
  if method == "lut":
    assert c.epochs == 1600 and c.lut.bc_weight == 0.25 and c.lut.ema_base == 0.996
    assert c.model.head_hidden == 4096
    # BatchNorm over micro-batches of 1024, as the official 8 GPUs x 128 x 4 accumulation steps.
    assert c.input.batch_size // c.optim.accum_steps == 1024
    assert optim.peak_learning_rate(1.5e-4, 1024, "sqrt") == pytest.approx(1.5e-4 * 32 / 4)
  else:
    assert c.optim.accum_steps == 1
    assert optim.peak_learning_rate(1.5e-4, 1024, "linear") == pytest.approx(1.5e-4 * 4)


def test_steps_from_epochs_or_total_steps():
  c = load("mae", "variant=B/16")
  assert config_lib.steps(c, 1_281_167) == (1600 * 312, 40 * 312)
  c.total_steps = 1000
  assert config_lib.steps(c, 1_281_167) == (1000, 25)


def test_schedule_warmup_then_cosine_to_zero():
  sched = optim.schedule(1.0, 10, 110)
  assert float(sched(0)) == 0 and float(sched(5)) == pytest.approx(0.5)
  assert float(sched(10)) == pytest.approx(1.0)
  assert float(sched(60)) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
  assert float(sched(110)) == pytest.approx(0.0, abs=1e-7)


def test_weight_decay_mask():
  import numpy as np
  params = {"encoder": {"cls": np.zeros((1, 1, 4)), "patch_embed": {"kernel": np.zeros((2, 2, 3, 4)),
                                                                    "bias": np.zeros(4)},
                        "norm": {"scale": np.zeros(4), "bias": np.zeros(4)}},
            "decoder": {"mask_token": np.zeros((1, 1, 4))}, "projector": {"fc1": {"kernel": np.zeros((4, 8))}}}
  mask = optim.decay_mask(params)
  assert mask["encoder"]["cls"] and mask["decoder"]["mask_token"]
  assert mask["encoder"]["patch_embed"]["kernel"] and mask["projector"]["fc1"]["kernel"]
  assert not mask["encoder"]["patch_embed"]["bias"] and not mask["encoder"]["norm"]["scale"]


@pytest.mark.parametrize("method", ["mae", "lut"])
def test_demo_is_valid_and_small(method):
  c = load(method, "demo")
  config_lib.validate(c, num_processes=1, num_devices=1)
  # Bundled data, and minutes on 2 CPU cores: at most 80k images of 32 px.
  assert c.input.dataset == "digits" and c.input.image_size == 32
  assert c.total_steps * c.input.batch_size <= 80_000


BAD = [
    ("model.mask_ratio", "mae", lambda c: setattr(c.model, "mask_ratio", 1.0)),
    ("model.mask_ratio", "mae", lambda c: setattr(c.model, "mask_ratio", 0.0)),
    ("model.mask_ratio", "lut", lambda c: setattr(c.model, "mask_ratio", 0.4)),
    ("input.image_size", "mae", lambda c: setattr(c.input, "image_size", 60)),
    ("input.batch_size", "mae", lambda c: setattr(c.input, "batch_size", 30)),
    ("model.variant", "mae", lambda c: setattr(c.model, "variant", "Q/16")),
    ("input", "mae", lambda c: setattr(c.input, "dataset", "")),
    ("model.dtype", "mae", lambda c: setattr(c.model, "dtype", "float16x")),
    ("mesh.fsdp", "mae", lambda c: setattr(c.mesh, "fsdp", 3)),
    ("optim.lr_rule", "mae", lambda c: setattr(c.optim, "lr_rule", "cubic")),
    ("optim.warmup_epochs", "mae", lambda c: setattr(c.optim, "warmup_epochs", -1)),
    ("optim.b2", "lut", lambda c: setattr(c.optim, "b2", 1.0)),
    ("lut.bc_weight", "lut", lambda c: setattr(c.lut, "bc_weight", -0.25)),
    ("init_from", "mae", lambda c: setattr(c, "init_from", "/no/such/dir")),
]


@pytest.mark.parametrize("key,method,breaks", BAD, ids=[f"{k}-{m}-{i}" for i, (k, m, _) in enumerate(BAD)])
def test_bad_values_name_the_key(key, method, breaks):
  c = load(method, "demo")
  breaks(c)
  with pytest.raises(config_lib.ConfigError, match=f"config.{key}"):
    config_lib.validate(c, num_processes=1, num_devices=8)


def test_config_is_locked_and_arguments_checked():
  c = load("mae", "demo")
  with pytest.raises(AttributeError):
    c.model.varaint = "B/16"
  with pytest.raises(config_lib.ConfigError, match="variant"):
    load("mae", "variant=X/16")
  with pytest.raises(config_lib.ConfigError, match="unknown config argument"):
    load("mae", "dataset=imagenet2012,epochz=3")


def test_resuming_under_a_changed_architecture_names_the_keys():
  saved = load("mae", "demo")
  config_lib.check_resumable(saved, load("mae", "demo"), "here")  # same: fine
  changed = load("mae", "demo")
  changed.model.variant = "mu/8"
  changed.optim.grad_clip_norm = 1.0
  with pytest.raises(config_lib.ConfigError, match="model.variant.*grad_clip_norm.*new --workdir"):
    config_lib.check_resumable(saved, changed, "here")
  with pytest.raises(config_lib.ConfigError, match="config.method"):
    config_lib.check_resumable(saved, load("lut", "demo"), "here")


def test_finetuning_checkpoint_from_before_the_learned_position_embedding():
  """Its config has no model.learn_pos_embed: it was the fixed table. Resuming it under the
  learned one is refused in one line; under learn_pos_embed=False it resumes (and restores)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mimjax import state as state_lib  # pylint: disable=g-import-not-at-top
  saved = load("finetune", "demo").to_dict()
  del saved["model"]["learn_pos_embed"]
  saved = ml_collections.ConfigDict(saved)
  current = load("finetune", "demo")
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.check_resumable(saved, current, "here")
  assert "config.model.learn_pos_embed: False in the checkpoint, True now" in str(e.value)
  assert "\n" not in str(e.value)
  current.model.learn_pos_embed = False
  config_lib.check_resumable(saved, current, "here")
  assert not state_lib.build_model(saved).learned_pos and state_lib.build_model(
      load("finetune", "demo")).learned_pos


def test_a_config_file_loads_by_its_absolute_path_from_another_directory(tmp_path):
  """`--config /abs/configs/lut.py:demo` from elsewhere: the file's `from configs import common`
  resolves through the installed `configs` package, not the working directory. The config loads
  and is validated (an epochs of 0 is refused in one line): nothing trains."""
  trainer = os.path.join(os.path.dirname(sys.executable), "mimjax-train")
  env = {k: v for k, v in helpers.cli_env().items() if k != "PYTHONPATH"}
  for name in ("lut", "finetune"):
    result = subprocess.run(
        [trainer, f"--config={helpers.ROOT}/configs/{name}.py:demo", f"--workdir={tmp_path}/w",
         "--config.epochs=0"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "mimjax-train: error: config.epochs: must be positive"], result.stderr[-2000:]


@pytest.mark.parametrize(
    "sweep_file", sorted(glob.glob(os.path.join(helpers.ROOT, "configs", "sweeps", "*.py"))),
    ids=os.path.basename)
def test_sweep_files_load_and_give_valid_configs(sweep_file):
  """Each sweep file's documented command: its trials over its base config all validate."""
  with open(sweep_file) as f:
    config, sweep = re.search(r"--config (\S+) --sweep (\S+)", f.read()).groups()
  assert os.path.samefile(os.path.join(helpers.ROOT, sweep), sweep_file)
  config = trials.absolute_config_spec(os.path.join(helpers.ROOT, config))
  for trial in trials.load_sweep(sweep_file):
    c = trials.parse_config(config)
    for key, value in trial.items():
      trials.set_override(c, key, value)
    config_lib.validate(c, num_processes=1, num_devices=1)
