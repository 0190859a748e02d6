"""Sweep files, trial names and validation: every bad input is one clear line, before any run."""
import os

import pytest

from mimjax import checkpoint
from mimjax import errors
from mimjax import metric_files
from mimjax import sweeps
from mimjax.launch import common
from mimjax.launch import local
from mimjax import workdir_layout
from mimjax.sweeps import launch
from mimjax.sweeps import manifest
from mimjax.sweeps import progress
from mimjax.sweeps import trials
from tests import helpers


def test_product_and_zip_build_trials():
  grid = sweeps.product(sweeps.sweep("a.x", [1, 2]), sweeps.sweep("b", ["p", "q"]))
  assert grid == [{"a.x": 1, "b": "p"}, {"a.x": 1, "b": "q"},
                  {"a.x": 2, "b": "p"}, {"a.x": 2, "b": "q"}]
  paired = sweeps.zip(sweeps.sweep("a", [1, 2]), sweeps.sweep("b", [3, 4]))
  assert paired == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
  assert sweeps.product(paired, sweeps.sweep("c", [0])) == [{"a": 1, "b": 3, "c": 0},
                                                            {"a": 2, "b": 4, "c": 0}]
  with pytest.raises(ValueError, match="one length"):
    sweeps.zip(sweeps.sweep("a", [1, 2]), sweeps.sweep("b", [3]))
  with pytest.raises(ValueError, match="set twice"):
    sweeps.product(sweeps.sweep("a", [1]), sweeps.sweep("a", [2]))


def test_trial_names_are_readable_safe_and_unique():
  names = trials.name_trials([{"model.mask_ratio": 0.6, "optim.base_lr": 0.001},
                              {"model.mask_ratio": 0.9, "optim.base_lr": 0.001}])
  assert names == ["mask_ratio_0.6-base_lr_0.001", "mask_ratio_0.9-base_lr_0.001"]
  assert trials.name_trials([{"model.variant": "B/16"}]) == ["variant_B_16"]
  assert trials.name_trials([{}]) == ["base"]
  # Two keys with one last part keep their sections apart.
  assert trials.name_trials([{"model.dtype": "bfloat16", "input.dtype": "uint8"}]) == [
      "model.dtype_bfloat16-input.dtype_uint8"]
  # Values that sanitize alike get a hash of their overrides.
  clash = trials.name_trials([{"model.variant": "a/b"}, {"model.variant": "a_b"}])
  assert len(set(clash)) == 2 and all(n.startswith("variant_a_b-") for n in clash)
  long = trials.name_trials([{"init_from": "/x" * 200}])[0]
  assert len(long) <= trials.MAX_NAME_LENGTH
  # A trial already in the manifest keeps its recorded name; a new one may not take it.
  existing = {"trials": [{"name": "mine", "overrides": {"model.mask_ratio": 0.6}}]}
  assert manifest.assign_names(existing, [{"model.mask_ratio": 0.6}]) == ["mine"]
  taken = {"trials": [{"name": "mask_ratio_0.6", "overrides": {"model.mask_ratio": 0.5}}]}
  assert manifest.assign_names(taken, [{"model.mask_ratio": 0.6}])[0].startswith("mask_ratio_0.6-")


def test_progress_reads_a_workdir_as_the_trainer_writes_it(tmp_path):
  workdir = tmp_path / "trial"
  workdir.mkdir()
  rows = metric_files.JsonLines(str(workdir), start_step=0)
  for step in (1, 2, 3):
    rows.write({"step": step, "loss": 1.0 / step})
  rows.close()
  with open(workdir / workdir_layout.METRICS, "a") as f:
    f.write('{"step": 4, "lo')  # a row being written
  ckpts = checkpoint.checkpoint_dir(str(workdir))
  os.makedirs(os.path.join(ckpts, "2"))
  os.makedirs(os.path.join(ckpts, "4.orbax-checkpoint-tmp-1234"))  # a save under way
  entry = {"name": "trial", "workdir": "trial", "total_steps": 4}
  got = progress.progress(str(tmp_path), entry)
  assert (got.status, got.step, got.checkpoint_step) == (progress.STOPPED, 3, 2)
  assert [r["step"] for r in got.rows] == [1, 2, 3]
  os.rename(os.path.join(ckpts, "4.orbax-checkpoint-tmp-1234"), os.path.join(ckpts, "4"))
  assert progress.progress(str(tmp_path), entry).status == progress.DONE


def test_devices_are_split_into_disjoint_sets(monkeypatch):
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,4,5")
  gpus = local.Devices("gpu", 4)
  assert local.slot_envs(gpus, 2) == [{"CUDA_VISIBLE_DEVICES": "2,3"},
                                       {"CUDA_VISIBLE_DEVICES": "4,5"}]
  assert local.share(gpus, 4) == 1
  with pytest.raises(common.LaunchError, match="does not divide the 4 gpu devices"):
    local.share(gpus, 3)
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_foo=1")
  cpu = local.slot_envs(local.Devices("cpu", 8), 4)
  assert cpu == [{"XLA_FLAGS": "--xla_foo=1 --xla_force_host_platform_device_count=2"}] * 4
  with pytest.raises(common.LaunchError, match="TPU"):
    local.share(local.Devices("tpu", 4), 2)


def test_cpu_only_environments_need_no_probe(monkeypatch):
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  assert local.cpu_only() is None
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
  assert local.cpu_only() == local.Devices("cpu", 3)
  monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "2")
  assert local.cpu_only() == local.Devices("cpu", 2)


def _build(overrides, flags=()):
  base = trials.Base(trials.absolute_config_spec(helpers.CONFIG),
                     tuple(helpers.tiny_flags()) + flags)
  return launch.build_trials(base, overrides, None, num_processes=1, num_devices=1)


def test_trials_get_typed_validated_configs():
  built = _build([{"model.mask_ratio": 0.6, "optim.base_lr": 1}, {"model.mask_ratio": 0.9}])
  assert built[0].config.model.mask_ratio == 0.6 and built[0].config.optim.base_lr == 1.0
  assert built[0].overrides == {"model.mask_ratio": 0.6, "optim.base_lr": 1.0}
  assert isinstance(built[0].overrides["optim.base_lr"], float)  # read back from the config
  assert built[1].config.input.image_size == 16  # the flags after -- apply to every trial
  assert [t.total_steps for t in built] == [4, 4]
  command = built[0].trainer_args(trials.Base("cfg.py:demo"), "/root/x")
  assert command[-2:] == ["--config.model.mask_ratio=0.6", "--config.optim.base_lr=1.0"]


@pytest.mark.parametrize("overrides, message", [
    ([{"model.mask_ratio": 0.6}, {"model.mask_rato": 0.6}],
     "trial #1 (model.mask_rato=0.6): config.model.mask_rato does not exist (did you mean mask_ratio?)"),
    ([{"modle.mask_ratio": 0.6}], "config.modle does not exist"),
    ([{"keep_checkpoints": 2.5}], "config.keep_checkpoints=2.5: float given where the config holds int (3)"),
    ([{"model.mask_ratio": "high"}], "config.model.mask_ratio='high': str given where the config holds float (0.75)"),
    ([{"model.norm_pix_loss": 1}], "config.model.norm_pix_loss=1: int given where the config holds bool (False)"),
    ([{"model": 1}], "config.model is a section, not a value"),
    ([{"optim.base_lr": None}], "config.optim.base_lr=None: the key holds a float"),
    ([{"model.mask_ratio": 0.6}, {"model.mask_ratio": 0.6}],
     "trial mask_ratio_0.6-"),
    ([{}, {"model.mask_ratio": 0.75}], "give the same config: the sweep lists one run twice"),
    ([{"model.mask_ratio": 0.6}, {"model.mask_ratio": 1.5}],
     "trial mask_ratio_1.5 (model.mask_ratio=1.5): config.model.mask_ratio: 1.5 must lie in (0, 1)"),
    ([{"total_steps": 8}], "config.total_steps is swept and also set after --"),
])
def test_bad_trials_are_refused_with_one_line(overrides, message):
  with pytest.raises(trials.SweepError) as info:
    _build(overrides)
  text = str(info.value)
  assert message in text and "\n" not in text, text


def test_identical_trials_name_both():
  with pytest.raises(trials.SweepError, match="mask_ratio_0.6-.* and trial mask_ratio_0.6-.* give "
                     "the same config"):
    _build([{"model.mask_ratio": 0.6}, {"model.mask_ratio": 0.6}])


def test_empty_or_malformed_sweep_files_are_refused(tmp_path):
  with pytest.raises(trials.SweepError, match="returned an empty sweep"):
    trials.load_sweep(helpers.write_sweep(tmp_path / "empty.py", []))
  with pytest.raises(trials.SweepError, match="must return a list of"):
    trials.load_sweep(helpers.write_sweep(tmp_path / "dict.py", {"a": 1}))
  (tmp_path / "none.py").write_text("X = 1\n")
  with pytest.raises(trials.SweepError, match="defines no get_sweep"):
    trials.load_sweep(str(tmp_path / "none.py"))
  with pytest.raises(errors.PathNotFoundError, match="no sweep file"):
    trials.load_sweep(str(tmp_path / "missing.py"))
  (tmp_path / "arg.py").write_text("def get_sweep(arg=None):\n  return [{'seed': int(arg)}]\n")
  assert trials.load_sweep(f"{tmp_path}/arg.py:3") == [{"seed": 3}]


def test_cli_reports_a_bad_trial_in_one_line_and_starts_nothing(tmp_path):
  sweep = helpers.write_sweep(tmp_path / "bad.py",
                              [{"model.mask_ratio": 0.6}, {"keep_checkpoints": "4"}])
  root = tmp_path / "root"
  result = helpers.run_sweep(
      helpers.sweep_cmd(sweep, str(root), trainer_flags=helpers.tiny_flags()))
  assert result.returncode == errors.EXIT_USER_ERROR, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("mimjax-sweep")]
  assert lines == ["mimjax-sweep: error: trial #1 (keep_checkpoints=4): config.keep_checkpoints='4': str "
                   "given where the config holds int (3)"], result.stderr[-2000:]
  assert "===" not in result.stdout and not root.exists()
