"""Checkpoints and exports of earlier versions keep working (tests/fixtures/v*, frozen files)."""
import json
import os
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy

import mimjax
from mimjax import checkpoint
from mimjax import state as state_lib
from mimjax.export import workdir as export_workdir_lib

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
V1 = os.path.join(FIXTURES, "v1")


def test_format_1_checkpoint_restores_and_matches_its_export():
  config, step, state = state_lib.restore_state(os.path.join(V1, "workdir"))
  assert step == 2 and config.model.variant == "W8-D1-H2/4"
  exported = mimjax.load_pretrained(os.path.join(V1, "export_hf"))
  for module in ("encoder", "decoder"):
    ours = jax.tree_util.tree_leaves(state["params"][module])
    theirs = jax.tree_util.tree_leaves(exported.params[module])
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_format_1_checkpoint_exports_to_the_stored_export(tmp_path):
  out = str(tmp_path / "hf")
  export_workdir_lib.export_workdir(os.path.join(V1, "workdir"), None, "hf", out)
  ours = safetensors.numpy.load_file(os.path.join(out, "model.safetensors"))
  stored = safetensors.numpy.load_file(os.path.join(V1, "export_hf", "model.safetensors"))
  assert sorted(ours) == sorted(stored)
  for name, value in stored.items():
    np.testing.assert_array_equal(ours[name], value, err_msg=name)
  with open(os.path.join(out, "config.json")) as a, open(os.path.join(V1, "export_hf", "config.json")) as b:
    assert json.load(a) == json.load(b)

def test_future_format_is_refused_naming_the_version_that_wrote_it(tmp_path):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(os.path.join(V1, "workdir"), workdir)
  path = os.path.join(checkpoint.checkpoint_dir(workdir), "2", "meta", "metadata")
  with open(path) as f:
    meta = json.load(f)
  meta.update(format_version=checkpoint.FORMAT_VERSION + 1, mimjax_version="9.9.0")
  with open(path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(checkpoint.FutureFormatError,
                     match=f"format version {checkpoint.FORMAT_VERSION + 1}, written by mimjax 9.9.0"):
    state_lib.restore_state(workdir)
  # A resume refuses it too rather than moving it aside as damaged.
  with pytest.raises(checkpoint.FutureFormatError):
    checkpoint.restore_newest_intact(checkpoint.Checkpointer(workdir, read_only=True), None)
  assert os.path.isdir(os.path.join(checkpoint.checkpoint_dir(workdir), "2"))
