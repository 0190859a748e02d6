"""Expected errors of mimjax-train, mimjax-export and mimjax-analyze: one line, exit status 2, no
traceback (`--verbose` adds it); unexpected ones keep their traceback. The launchers' are in
tests/launch/test_launch.py, mimjax-eval's in tests/evals/test_train.py."""
import os
import shutil
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from mimjax import checkpoint
from mimjax import errors
from mimjax.export import workdir as export_workdir_lib
from tests import helpers

V1 = os.path.join(helpers.ROOT, "tests", "fixtures", "v1", "workdir")


def _error_lines(stderr, prog):
  return [l for l in stderr.splitlines() if l.startswith(f"{prog}: error:")]


def _damaged_workdir(tmp_path):
  workdir = str(tmp_path / "damaged")
  shutil.copytree(V1, workdir)
  state = os.path.join(checkpoint.checkpoint_dir(workdir), "2", "state")
  for root, _, names in os.walk(state):  # every array data file, wherever orbax put the arrays
    for name in names if os.path.basename(root) == "d" else ():
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\xa5" * 16)
  return workdir


# --- Through the real command line (a separate process is the point). ------------------------
def test_nonexistent_config_file_is_one_line(tmp_path):
  result = helpers.run_cli([sys.executable, "-m", "mimjax.main", "--config",
                            "configs/nonexistent_config.py", "--workdir", str(tmp_path)])
  assert result.returncode == 2
  lines = _error_lines(result.stderr, "mimjax-train")
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert "'configs/nonexistent_config.py' does not exist" in lines[0]
  assert "mae.py" in lines[0]  # lists what the directory holds


def test_verbose_adds_the_traceback_of_an_expected_error(tmp_path):
  bad = tmp_path / "bad_config.py"
  bad.write_text("def get_config(arg=None):\n  return {'lr': 1 / 0}\n")
  result = helpers.run_cli([sys.executable, "-m", "mimjax.main", f"--config={bad}",
                            "--workdir", str(tmp_path / "w"), "--verbose"])
  assert result.returncode == 2
  assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr
  lines = _error_lines(result.stderr, "mimjax-train")
  assert len(lines) == 1 and f"{bad} raised ZeroDivisionError" in lines[0] and "line 2" in lines[0]


def test_export_of_a_damaged_checkpoint_is_one_line(tmp_path):
  workdir = _damaged_workdir(tmp_path)
  result = helpers.run_cli([sys.executable, "-m", "mimjax.export.cli", f"--workdir={workdir}",
                            "--format=hf", f"--out={tmp_path / 'out'}"])
  assert result.returncode == 2
  lines = _error_lines(result.stderr, "mimjax-export")
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert "checkpoints/2 is damaged" in lines[0] and "Use another step" in lines[0]
  assert not os.path.exists(tmp_path / "out")


def test_analyze_of_a_missing_model_is_one_line(tmp_path):
  result = helpers.run_cli([sys.executable, "-m", "mimjax.evals.analysis_cli", "--model",
                            str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = _error_lines(result.stderr, "mimjax-analyze")
  assert len(lines) == 1 and f"cannot load a pre-trained model from '{tmp_path / 'nothing'}'" in (
      lines[0]) and "found: no such directory" in lines[0]
  assert not os.path.exists(tmp_path / "out")


def test_training_on_a_folder_of_undecodable_images_is_one_line(tmp_path):
  folder = tmp_path / "images"
  for i in range(8):  # one batch of the tiny config, in two classes (the demo's kNN wants labels)
    (folder / f"class_{i % 2}").mkdir(parents=True, exist_ok=True)
    (folder / f"class_{i % 2}" / f"garbage_{i}.jpg").write_bytes(b"not an image %d" % i)
  result = helpers.run_cli(helpers.train_cmd("mae", str(tmp_path / "w"), **{
      "input.dataset": "folder", "input.folder": str(folder)}))
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  # Nothing else on stderr either (TensorFlow's warnings about the failed batch stay off it).
  assert result.stderr.count("\n") == 1, result.stderr[-2000:]
  line = _error_lines(result.stderr, "mimjax-train")[0]
  assert "Cannot decode 8 image(s) of the batch at step 0" in line and "garbage_3.jpg" in line
  assert 'set config.on_corrupt="skip"' in line


# --- The same seam in-process (cheap). --------------------------------------------------------
def _parse(argv, monkeypatch):
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values)
  monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads overrides from sys.argv
  return errors.flags_parser("prog", values)(argv)


@pytest.mark.parametrize("config_arg,message", [
    ("configs/mae.py:bogus", "unknown config argument(s) ['bogus']: use demo, variant=, dataset="),
    ("configs/mae.py:variant=B/17", "variant='B/17' is not a published recipe"),
    ("RAISES", "raised RuntimeError: no dataset here (line 2); run with --verbose"),
    ("configs/", "the config file 'configs/' does not exist"),
])
def test_config_file_problems_are_one_line(config_arg, message, tmp_path, monkeypatch, capsys):
  if config_arg == "RAISES":
    path = tmp_path / "raises.py"
    path.write_text("def get_config():\n  raise RuntimeError('no dataset here')\n")
    config_arg = str(path)
  monkeypatch.chdir(helpers.ROOT)
  with pytest.raises(SystemExit) as exit_info:
    _parse(["prog", f"--config={config_arg}"], monkeypatch)
  assert exit_info.value.code == errors.EXIT_USER_ERROR
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("prog: error:") and message in err, err


def test_a_misspelt_key_reads_alike_in_the_trainer_the_sweep_and_the_launchers(monkeypatch,
                                                                             capsys):
  from mimjax.launch import common as launch_common  # pylint: disable=g-import-not-at-top
  from mimjax.sweeps import trials  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(helpers.ROOT)
  args = ["--config=configs/mae.py:demo", "--config.optim.bse_lr=1"]
  with pytest.raises(SystemExit):
    _parse(["prog", *args], monkeypatch)
  trainer = capsys.readouterr().err.removeprefix("prog: error: ").strip()
  assert 'Did you mean "base_lr" instead of "bse_lr"?' in trainer
  with pytest.raises(trials.SweepError) as sweep:
    trials.parse_config("configs/mae.py:demo", args[1:])
  assert errors.one_line(str(sweep.value)) == trainer
  with pytest.raises(launch_common.LaunchError) as launch:
    launch_common.load_config(args)
  assert errors.one_line(str(launch.value)) == f"the config after `--`: {trainer}"


def test_unexpected_errors_keep_their_traceback():
  def bug():
    raise KeyError("a bug, not a user error")
  with pytest.raises(KeyError):
    errors.exit_on_user_error("prog", bug)


def test_user_error_exits_with_one_line(capsys):
  def bad():
    raise errors.PathNotFoundError("--workdir: nothing at /x\nsecond line")
  with pytest.raises(SystemExit) as exit_info:
    errors.exit_on_user_error("prog", bad, verbose=False)
  assert exit_info.value.code == errors.EXIT_USER_ERROR
  assert capsys.readouterr().err == "prog: error: --workdir: nothing at /x second line\n"


def test_export_from_a_directory_that_is_no_workdir(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match="holds no complete checkpoint"):
    export_workdir_lib.export_workdir(str(tmp_path), None, "hf", str(tmp_path / "out"))


def test_export_to_an_output_that_cannot_be_created(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(errors.UserError, match="--out: cannot create"):
    export_workdir_lib.export_workdir(V1, None, "hf", str(blocker / "out"))


def test_export_from_a_path_that_does_not_exist(tmp_path):
  with pytest.raises(errors.PathNotFoundError, match="is not a directory: give a training workdir"):
    export_workdir_lib.export_workdir(str(tmp_path / "nothing"), None, "hf", str(tmp_path / "out"))


def test_analyze_refuses_a_negative_number_of_map_images_in_one_line(tmp_path):
  result = helpers.run_cli([sys.executable, "-m", "mimjax.evals.analysis_cli", "--model",
                            str(tmp_path / "nothing"), "--out", str(tmp_path / "out"),
                            "--num_map_images=-1"])
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = _error_lines(result.stderr, "mimjax-analyze")
  assert lines == ["mimjax-analyze: error: flag --num_map_images=-1: -1 is not a non-negative integer"], lines
