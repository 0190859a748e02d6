"""The sweep's TPU target end to end: 2 trials in turn on one stand-in v4-8 slice, a gs:// root.

The stand-in gcloud (tests/launch/bin/) makes the slice of local folders and processes; the
trainers are the real ones, writing to the storage emulator. One module fixture runs the sweep
twice (the second run finds both trials done); the report tests read its root.
"""
import contextlib
import csv
import io
import sys

from etils import epath
import pytest

from mimjax import errors
from mimjax import topology
from mimjax.launch import tpu
from mimjax.sweeps import launch
from mimjax.sweeps import report
from tests import gcs_emulator
from tests import helpers

ROOT = f"gs://{gcs_emulator.BUCKET}/tpu_sweep"
RUN = {"total_steps": 2, "ckpt_every_steps": 2, "log_every_steps": 1}
GRID = [{"model.mask_ratio": 0.5}, {"model.mask_ratio": 0.9}]
NAMES = ["mask_ratio_0.5", "mask_ratio_0.9"]
SLICE = ["--name=sweep", "--zone=us-central1-a", "--accelerator_type=v4-8"]
OPTIONS = dict(name="sweep", zone="us-central1-a", accelerator_type="v4-8",
               skip_compile_check=True)


def _launch(sweep_file, root, flags, options=OPTIONS, **kwargs) -> tuple[int, str]:
  """The sweep in this process, which has the configs loaded already: (exit status, output)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    code = launch.launch(helpers.CONFIG, sweep_file, root, flags, target=tpu.TpuTarget(**options),
                         **kwargs)
  return code, out.getvalue()


@pytest.fixture(scope="module")
def tpu_sweep(gcs, tmp_path_factory):
  """The dry run, the sweep (its CLI), and the same sweep again; the fake cloud's state."""
  tmp = tmp_path_factory.mktemp("tpu_sweep")
  state = tmp / "cloud"
  state.mkdir()
  sweep_file = helpers.write_sweep(tmp / "grid.py", GRID)
  with pytest.MonkeyPatch.context() as mp:
    helpers.use_fake_cloud(mp, state)
    dry_code, dry = _launch(sweep_file, ROOT, helpers.tiny_flags(**RUN), dry_run=True)
    dry_calls = (state / "calls.log").exists()
    command = helpers.sweep_cmd(sweep_file, ROOT, "--target=tpu", *SLICE, "--skip_compile_check",
                                trainer_flags=helpers.tiny_flags(**RUN))
    first = helpers.run_sweep(command, timeout=600)
    calls = (state / "calls.log").read_text() if (state / "calls.log").exists() else ""
    again_code, again = _launch(sweep_file, ROOT, helpers.tiny_flags(**RUN))
  return dict(dry=dry, dry_code=dry_code, dry_calls=dry_calls, first=first, calls=calls,
              again=again, again_code=again_code, state=state)


def test_dry_run_lists_the_trials_and_the_gcloud_commands(tpu_sweep):
  out = tpu_sweep["dry"]
  assert tpu_sweep["dry_code"] == 0 and not tpu_sweep["dry_calls"]  # no gcloud call
  assert out.count(" start ") == 2 and "2 trials under gs://" in out
  commands = [l for l in out.splitlines() if l.startswith("gcloud ")]
  assert commands[0] == ("gcloud compute tpus tpu-vm create sweep --accelerator-type=v4-8 "
                         "--version=tpu-ubuntu2204-base --zone=us-central1-a")
  runs = [c for c in commands if "--process_id=0" in c]
  assert len(runs) == 2 and len(commands) == 6  # create, scp, install, 2 trials, delete
  for name, line in zip(NAMES, runs):
    assert f"--workdir={ROOT}/{name}" in line and "--config=configs/mae.py:demo" in line
  assert commands[-1] == "gcloud compute tpus tpu-vm delete sweep --quiet --zone=us-central1-a"


def test_trials_run_in_turn_on_one_slice_and_a_rerun_skips_them(tpu_sweep):
  first, calls = tpu_sweep["first"], tpu_sweep["calls"]
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  assert "All 2 trials done" in first.stdout
  assert calls.count("tpu-vm create sweep") == 1 and calls.count("tpu-vm delete sweep") == 1
  assert calls.count("uv pip install") == 1  # installed once, for both trials
  assert [l.split()[4] for l in calls.splitlines() if "--process_id=0" in l] == ["sweep"] * 2
  assert not (tpu_sweep["state"] / "tpus" / "sweep").exists()
  losses = [helpers.losses(f"{ROOT}/{name}") for name in NAMES]
  assert [sorted(l) for l in losses] == [[1, 2], [1, 2]]
  assert losses[0] != losses[1]  # each trial trained with its own mask ratio

  again = tpu_sweep["again"]
  assert tpu_sweep["again_code"] == 0, again
  assert again.count("skip (done)") == 2 and "Every trial is done" in again
  assert (tpu_sweep["state"] / "calls.log").read_text() == calls  # no gcloud call at all


def test_report_on_the_gs_root_equals_the_trials_metrics(tpu_sweep):
  result = helpers.run_sweep([sys.executable, helpers.SWEEP_CLI, f"--report={ROOT}"])
  assert result.returncode == 0, result.stderr[-3000:]
  table = result.stdout.splitlines()
  assert table[0].split() == ["trial", "overrides", "status", "step", "final_loss", "best_loss"]
  rows = list(csv.DictReader(io.StringIO((epath.Path(ROOT) / report.CSV_NAME).read_text())))
  assert [r["trial"] for r in rows] == NAMES
  for row, line, overrides in zip(rows, table[1:], GRID):
    losses = helpers.losses(f"{ROOT}/{row['trial']}")
    assert float(row["final_loss"]) == losses[2] and float(row["best_loss"]) == min(losses.values())
    assert float(row["model.mask_ratio"]) == overrides["model.mask_ratio"]
    assert line.split()[2:6] == ["done", "2/2", f"{losses[2]:.6g}", f"{min(losses.values()):.6g}"]
  png = (epath.Path(ROOT) / report.PNG_NAME).read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_local_root_is_refused_in_one_line(tmp_path, monkeypatch):
  helpers.use_fake_cloud(monkeypatch, tmp_path)
  sweep_file = helpers.write_sweep(tmp_path / "grid.py", GRID)
  with pytest.raises(errors.UserError,
                     match=r"--root \S+ is a local path, but the hosts of a TPU slice share no "
                           r"filesystem: use a bucket .* --root gs://BUCKET/"):
    _launch(sweep_file, str(tmp_path / "root"), [])
  with pytest.raises(errors.UserError, match="--target=tpu needs --zone"):
    _launch(sweep_file, ROOT, [], dict(name="s", accelerator_type="v4-8"))
  with pytest.raises(errors.UserError, match="--parallel=2 with --target=tpu: the trials run in "
                                             "turn on one slice"):
    _launch(sweep_file, ROOT, [], parallel=2)
  assert not (tmp_path / "root").exists() and not (tmp_path / "calls.log").exists()


@pytest.mark.skipif(not topology.has_libtpu(),
                    reason="SKIPPED: libtpu is not installed; pip install 'mimjax[tpu]' for the "
                           "memory check")
def test_a_trial_that_does_not_fit_is_refused_before_the_slice_exists(gcs, tmp_path,
                                                                       monkeypatch):
  helpers.use_fake_cloud(monkeypatch, tmp_path)
  # H/14 on 1120 px images, 32 per chip: every block's input alone outgrows a v4 chip's 32 GiB.
  huge = {"model.variant": "H/14", "input.image_size": 1120, "input.batch_size": 128,
          "model.mask_ratio": 0.1}
  sweep_file = helpers.write_sweep(tmp_path / "grid.py", [huge, GRID[0]])
  root = f"{ROOT}_too_big"
  checked = dict(OPTIONS, skip_compile_check=False)
  _, dry = _launch(sweep_file, root, ["--config.total_steps=2"], checked, dry_run=True)
  checks = [l for l in dry.splitlines() if " -m mimjax.compile " in l]
  assert len(checks) == 2 and all(l.endswith(" --topology=v4-8") for l in checks)
  assert "--config.model.variant=H/14" in checks[0] and "H/14" not in checks[1]
  with pytest.raises(errors.UserError, match=(
      r"the config does not fit in the memory of v4-8 \(1 hosts x 4 chips\) for trial "
      r"variant_H_14-image_size_1120\S* \(model.variant=H/14,.*\): at least [\d.]+ GiB > 32 GiB")):
    _launch(sweep_file, root, ["--config.total_steps=2"], checked)
  assert not (tmp_path / "calls.log").exists() and not epath.Path(root).exists()
