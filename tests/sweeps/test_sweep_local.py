"""A 4-trial sweep of the tiny demo, SIGKILLed in trial 2 and run again to the end; its report."""
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from etils import epath
import pytest

from mimjax import checkpoint
from mimjax import train
from mimjax import workdir_lock
from mimjax.sweeps import launch
from mimjax.sweeps import manifest
from mimjax.sweeps import progress
from mimjax.sweeps import report
from mimjax.sweeps import trials
from tests import helpers

RUN = {"total_steps": 12, "ckpt_every_steps": 3, "log_every_steps": 1}
GRID = [{"model.mask_ratio": r, "optim.base_lr": lr} for r in (0.5, 0.75) for lr in (1e-3, 4e-3)]
NAMES = ["mask_ratio_0.5-base_lr_0.001", "mask_ratio_0.5-base_lr_0.004",
         "mask_ratio_0.75-base_lr_0.001", "mask_ratio_0.75-base_lr_0.004"]


def _snapshot(workdir):
  """Every file under `workdir` with its size and modification time."""
  out = {}
  for parent, _, files in os.walk(workdir):
    for f in files:
      p = os.path.join(parent, f)
      out[os.path.relpath(p, workdir)] = (os.path.getsize(p), os.stat(p).st_mtime_ns)
  return out


def _wait_until_gone(pid, timeout=60):
  """SIGKILL is delivered at once, but a trainer with many threads takes a moment to exit."""
  deadline = time.time() + timeout
  while workdir_lock.pid_alive(pid):
    assert time.time() < deadline, f"the killed trainer (pid {pid}) is still alive"
    time.sleep(0.05)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
  """The sweep killed with SIGKILL in the middle of trial 2, then the same command again."""
  tmp = tmp_path_factory.mktemp("sweep")
  root = str(tmp / "root")
  command = helpers.sweep_cmd(helpers.write_sweep(tmp / "grid.py", GRID), root,
                              trainer_flags=helpers.tiny_flags(**RUN))
  log = open(tmp / "first.log", "w")
  proc = subprocess.Popen(command, env=helpers.sweep_env(), cwd=helpers.ROOT, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
  second = os.path.join(root, NAMES[1])
  deadline = time.time() + 500
  while not os.path.isdir(os.path.join(checkpoint.checkpoint_dir(second), "3")):
    assert proc.poll() is None, (tmp / "first.log").read_text()[-3000:]
    assert time.time() < deadline, "trial 2 wrote no checkpoint"
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its running trainer
  proc.wait()
  marker = epath.Path(root) / progress.STATUS_DIR / f"{NAMES[1]}.json"
  _wait_until_gone(json.loads(marker.read_text())["pid"])
  killed = {"trial1": _snapshot(os.path.join(root, NAMES[0])),
            "trial2_steps": checkpoint.steps(second),
            "rows": report.collect(root)}
  again = helpers.run_sweep(command)
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  return {"root": root, "command": command, "killed": killed, "again": again, "tmp": tmp}


@pytest.fixture(scope="module")
def uninterrupted_trial2(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  train.train(helpers.tiny_config("mae", **RUN, **GRID[1]), workdir)
  return helpers.losses(workdir)


def test_killed_sweep_resumes_trial_2_and_runs_the_rest(sweep_run, uninterrupted_trial2):
  root, out = sweep_run["root"], sweep_run["again"].stdout
  steps = sweep_run["killed"]["trial2_steps"]
  assert steps and max(steps) < RUN["total_steps"], "trial 2 finished before the kill"
  plan = {line.split()[0]: line for line in out.splitlines() if line.startswith("  mask_ratio")}
  assert "skip (done)" in plan[NAMES[0]]
  assert f"resume from step {max(steps)}" in plan[NAMES[1]]
  assert " start " in plan[NAMES[2]] and " start " in plan[NAMES[3]]
  started = [line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("=== ")
             and not line.endswith(("finished", ")"))]
  assert started == NAMES[1:], out[-3000:]
  assert "Resuming from" in out
  # Trial 1 was not touched; trial 2 continued exactly.
  assert _snapshot(os.path.join(root, NAMES[0])) == sweep_run["killed"]["trial1"]
  assert helpers.losses(os.path.join(root, NAMES[1])) == uninterrupted_trial2
  for name in NAMES:
    assert checkpoint.steps(os.path.join(root, name))[-1] == RUN["total_steps"]


def test_report_while_killed_shows_where_each_trial_stood(sweep_run):
  rows = {r.name: r for r in sweep_run["killed"]["rows"]}
  assert rows[NAMES[0]].progress.status == progress.DONE
  second = rows[NAMES[1]].progress
  assert second.status == progress.STOPPED  # its trainer was killed with the launcher
  assert second.checkpoint_step == max(sweep_run["killed"]["trial2_steps"])
  assert second.step >= second.checkpoint_step
  assert [rows[n].progress.status for n in NAMES[2:]] == [progress.PENDING] * 2


def test_report_numbers_equal_each_trials_metrics(sweep_run):
  root = sweep_run["root"]
  result = helpers.run_sweep([sys.executable, helpers.SWEEP_CLI, f"--report={root}"])
  assert result.returncode == 0, result.stderr[-3000:]
  table = result.stdout.splitlines()
  assert table[0].split() == ["trial", "overrides", "status", "step", "final_loss", "best_loss"]
  with open(os.path.join(root, report.CSV_NAME)) as f:
    rows = list(csv.DictReader(f))
  assert [r["trial"] for r in rows] == NAMES
  for row, overrides, line in zip(rows, GRID, table[1:]):
    losses = helpers.losses(os.path.join(root, row["trial"]))
    assert float(row["final_loss"]) == losses[RUN["total_steps"]]
    assert float(row["best_loss"]) == min(losses.values())
    assert float(row["model.mask_ratio"]) == overrides["model.mask_ratio"]
    assert float(row["optim.base_lr"]) == overrides["optim.base_lr"]
    assert (row["status"], row["step"]) == ("done", "12")
    assert line.split()[2:6] == ["done", "12/12", f"{losses[12]:.6g}", f"{min(losses.values()):.6g}"]
  with open(os.path.join(root, report.PNG_NAME), "rb") as f:
    png = f.read()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_eval_metrics_get_columns_and_panels(sweep_run, tmp_path):
  """Any metrics.jsonl key besides the trainer's own is an eval metric of the report."""
  root = str(tmp_path / "root")
  shutil.copytree(sweep_run["root"], root, ignore=shutil.ignore_patterns("checkpoints"))
  for i, name in enumerate(NAMES):
    with open(os.path.join(root, name, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({"step": 12, "knn_top1": 0.1 * i}) + "\n")
  rows = report.collect(root)
  assert report.eval_keys(rows) == ["knn_top1"]
  assert [r.final("knn_top1") for r in rows] == [0.0, 0.1, 0.2, 0.30000000000000004]
  assert "knn_top1" in report.table(rows).splitlines()[0]
  assert next(csv.DictReader(io.StringIO(report.csv_text(rows))))["knn_top1"] == "0.0"
  from matplotlib import image
  panels = image.imread(io.BytesIO(report.png_bytes(rows)))
  assert panels.shape[1] > 1.8 * panels.shape[0]  # two panels side by side


def test_an_added_trial_is_the_only_one_to_run(sweep_run, capsys, monkeypatch):
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)  # the device probe's path, for once
  root, tmp = sweep_run["root"], sweep_run["tmp"]
  before = manifest.path(root).read_text()
  grid = helpers.write_sweep(tmp / "grid5.py",
                             GRID + [{"model.mask_ratio": 0.9, "optim.base_lr": 1e-3}])
  code = launch.launch(helpers.CONFIG, grid, root, helpers.tiny_flags(**RUN), dry_run=True)
  out = capsys.readouterr().out
  assert code == 0
  assert out.count("skip (done)") == 4
  assert "mask_ratio_0.9-base_lr_0.001   start" in out
  assert out.count("--workdir=") == 1 and f"--workdir={root}/mask_ratio_0.9-base_lr_0.001" in out
  assert manifest.path(root).read_text() == before  # a dry run writes nothing


def test_a_changed_base_config_is_refused_naming_the_trial(sweep_run, monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  grid = helpers.write_sweep(sweep_run["tmp"] / "grid1.py", GRID[:1])
  flags = helpers.tiny_flags(**RUN) + ["--config.optim.weight_decay=0.1"]
  with pytest.raises(trials.SweepError, match=(
      r"trial mask_ratio_0.5-base_lr_0.001 \(model.mask_ratio=0.5,optim.base_lr=0.001\) already "
      r"ran in this root with another config \(config.optim.weight_decay: 0.05 then, 0.1 now\)")):
    launch.launch(helpers.CONFIG, grid, sweep_run["root"], flags)
