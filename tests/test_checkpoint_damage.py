"""Damaged checkpoints, built for real: resume falls back to the newest intact one and moves the
damaged ones aside; exports and load_pretrained say which checkpoint is damaged."""
import os
import re
import shutil

import jax
import numpy as np
import pytest

import mimjax
from mimjax import checkpoint
from mimjax import state as state_lib
from mimjax import train
from mimjax import workdir_layout
from tests import helpers

RUN = {"total_steps": 4, "ckpt_every_steps": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny MAE run with checkpoints at steps 2 and 4, and its losses."""
  workdir = str(tmp_path_factory.mktemp("trained"))
  train.train(helpers.tiny_config("mae", **RUN), workdir)
  return workdir, helpers.losses(workdir)


def _array_files(step_dir):
  """The data files of a checkpoint's arrays, largest first."""
  files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(step_dir, "state"))
           for f in names if os.sep + "d" in root]
  return sorted(files, key=os.path.getsize, reverse=True)


def _overwrite(step_dir):
  path = _array_files(step_dir)[0]
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    f.write(b"\x5a" * 64)


def _truncate(step_dir):
  path = _array_files(step_dir)[0]
  os.truncate(path, os.path.getsize(path) // 3)


def _remove_manifest(step_dir):
  os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))


def _remove_metadata(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


DAMAGE = {"overwritten": _overwrite, "truncated": _truncate, "manifest_removed": _remove_manifest,
          "metadata_removed": _remove_metadata}


def _damaged_copy(trained, tmp_path, how):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(trained[0], workdir)
  DAMAGE[how](os.path.join(checkpoint.checkpoint_dir(workdir), "4"))
  return workdir


def _snapshot(directory):
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = f.read()
  return out


def _abstract(workdir, step):
  """The single-device restore target of a workdir's checkpoint, as restore_state builds it."""
  config = checkpoint.Checkpointer(workdir, read_only=True).config(step)
  model = state_lib.build_model(config)
  abstract = jax.eval_shape(state_lib.init_fn(config, model, state_lib.shape_only_optimizer(config)),
                            jax.random.key(0))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                                abstract)


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_checkpoint_is_named_and_the_previous_one_restores(how, trained, tmp_path):
  workdir = _damaged_copy(trained, tmp_path, how)
  damaged_dir = os.path.join(checkpoint.checkpoint_dir(workdir), "4")
  files = _snapshot(damaged_dir)

  # Export and load_pretrained refuse the damaged checkpoint, naming it and the way out.
  with pytest.raises(checkpoint.DamagedCheckpointError, match=r"checkpoints/4 is damaged.*\[2\]"):
    state_lib.restore_state(workdir)
  with pytest.raises(checkpoint.DamagedCheckpointError, match="checkpoints/4 is damaged"):
    mimjax.load_pretrained(workdir)

  # Resume: the newest intact checkpoint is used, the damaged one moved aside intact.
  lines = []
  ckpt = checkpoint.Checkpointer(workdir, keep=3)
  step, _, state = checkpoint.restore_newest_intact(ckpt, _abstract(workdir, 2),
                                                    log=lambda m, **_: lines.append(m))
  ckpt.close()
  assert step == 2 and int(state["step"]) == 2
  moved = os.path.join(workdir, workdir_layout.DAMAGED_CHECKPOINTS, "4")
  assert len(lines) == 1 and "step 4" in lines[0] and moved in lines[0] and "\n" not in lines[0]
  assert not os.path.exists(damaged_dir)
  assert _snapshot(moved) == files  # moved, not altered or deleted
  _, _, reference = state_lib.restore_state(trained[0], 2)
  for a, b in zip(jax.tree_util.tree_leaves(reference), jax.tree_util.tree_leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_training_resumes_past_a_damaged_checkpoint_exactly(trained, tmp_path, capsys):
  workdir = _damaged_copy(trained, tmp_path, "overwritten")
  train.train(helpers.tiny_config("mae", **RUN), workdir)
  out = capsys.readouterr().out
  assert "Skipping checkpoint step 4" in out and "at step 2" in out
  # Steps 3 and 4 were trained again from step 2 and match the original run bit for bit.
  assert helpers.losses(workdir) == trained[1]
  assert sorted(checkpoint.Checkpointer(workdir, read_only=True).all_steps()) == [2, 4]
  assert os.listdir(os.path.join(workdir, workdir_layout.DAMAGED_CHECKPOINTS)) == ["4"]


def test_every_checkpoint_damaged_stops_instead_of_training_from_scratch(trained, tmp_path,
                                                                          capsys):
  """A workdir whose checkpoints are all damaged is not silently trained again from step 0:
  the trainer stops in one line (now, and on the next start) until the user moves them away."""
  workdir = _damaged_copy(trained, tmp_path, "overwritten")
  _truncate(os.path.join(checkpoint.checkpoint_dir(workdir), "2"))
  metrics = open(os.path.join(workdir, "metrics.jsonl")).read()
  with pytest.raises(checkpoint.NoIntactCheckpointError, match=r"\(2, 4\); to train from step 0"):
    train.train(helpers.tiny_config("mae", **RUN), workdir)
  out = capsys.readouterr().out
  assert "Skipping checkpoint step 4" in out and "Skipping checkpoint step 2" in out
  # The next start, as the user sees it.
  result = helpers.run_cli(helpers.train_cmd("mae", workdir, **RUN))
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
  assert re.fullmatch(r"mimjax-train: error: no checkpoint in \S+ restores: the damaged ones are "
                      r"in \S+ \(2, 4\); to train from step 0 again, move \S+ away first; .*\n",
                      result.stderr), result.stderr
  assert "Skipping" not in result.stdout  # already moved aside by the first start
  assert sorted(os.listdir(os.path.join(workdir, workdir_layout.DAMAGED_CHECKPOINTS))) == ["2", "4"]
  assert open(os.path.join(workdir, "metrics.jsonl")).read() == metrics  # nothing rewritten
