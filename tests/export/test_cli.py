"""The export CLI on a trained workdir: the files load into timm and Hugging Face and agree with
`mimjax.load_pretrained` on the same workdir."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mimjax
from mimjax import train
from tests import helpers
from tests.export import parity


@pytest.fixture(scope="module")
def lut_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("lut"))
  train.train(helpers.tiny_config("lut", total_steps=2), workdir)
  return workdir


def export(workdir, fmt, out, *extra):
  result = subprocess.run([sys.executable, "-m", "mimjax.export.cli", f"--workdir={workdir}",
                           f"--format={fmt}", f"--out={out}", *extra], env=helpers.cli_env(),
                          capture_output=True, text=True, timeout=300, cwd=helpers.ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  return out


def test_hf_export_matches_load_pretrained(lut_workdir, tmp_path):
  import torch
  from transformers import ViTMAEForPreTraining
  out = export(lut_workdir, "hf", str(tmp_path / "hf"))
  ours = mimjax.load_pretrained(lut_workdir)
  hf = ViTMAEForPreTraining.from_pretrained(out, attn_implementation="eager").eval()
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  noise = rng.random((2, 16), dtype=np.float32)
  with torch.no_grad():
    theirs = hf(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
                noise=torch.from_numpy(noise))
  got = ours.reconstruct(images, noise)
  np.testing.assert_array_equal(np.asarray(got.mask), theirs.mask.numpy())
  assert parity.relative_error(np.asarray(got.pred), theirs.logits.numpy()) < 1e-5
  assert float(got.loss) == pytest.approx(float(theirs.loss), rel=1e-5)


@pytest.mark.parametrize("num_classes", [0, 10])
def test_timm_export_loads_strictly_and_matches(lut_workdir, tmp_path, num_classes):
  import torch
  timm = parity.import_timm()
  out = export(lut_workdir, "timm", str(tmp_path / "timm"), f"--num_classes={num_classes}")
  config = json.load(open(os.path.join(out, "config.json")))
  model = timm.models.vision_transformer.VisionTransformer(**config["model_args"]).eval()
  from safetensors.torch import load_file
  model.load_state_dict(load_file(os.path.join(out, "model.safetensors")), strict=True)
  images = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
  with torch.no_grad():
    theirs = model.forward_features(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  ours = np.asarray(mimjax.load_pretrained(lut_workdir).encode(images))
  assert parity.relative_error(ours, theirs) < 1e-5
  assert (model.head.out_features if num_classes else 0) == num_classes


def test_export_of_a_workdir_without_checkpoints_fails_clearly(tmp_path):
  result = subprocess.run([sys.executable, "-m", "mimjax.export.cli", f"--workdir={tmp_path}",
                           "--format=hf", f"--out={tmp_path / 'out'}"], env=helpers.cli_env(),
                          capture_output=True, text=True, timeout=300, cwd=helpers.ROOT)
  assert result.returncode == 2 and "no complete checkpoint" in result.stderr
  assert not os.path.exists(tmp_path / "out")


def test_init_from_an_export_dir(lut_workdir, tmp_path):
  hf_dir = export(lut_workdir, "hf", str(tmp_path / "hf"))
  c = helpers.tiny_config("mae", total_steps=1, init_from=hf_dir, **{"optim.base_lr": 0.0})
  state = train.train(c, str(tmp_path / "mae"))
  loaded = mimjax.load_pretrained(hf_dir).params
  np.testing.assert_array_equal(np.asarray(state["params"]["encoder"]["cls"]),
                                np.asarray(loaded["encoder"]["cls"]))
