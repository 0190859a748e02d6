"""The SLURM target of a sweep: one array job of launch/slurm.py's script, through the stand-in
sbatch, srun and scontrol (tests/launch/bin/); a preempted task is requeued and resumes."""
import os
import re
import signal
import time

from mimjax import train
from mimjax.launch import common
from mimjax.launch import slurm
from mimjax.sweeps import launch
from mimjax.sweeps import progress
from mimjax.sweeps import report
from tests import helpers

RUN = dict(helpers.STEPS, log_every_steps=1)
GRID = [{"model.mask_ratio": 0.5}, {"model.mask_ratio": 0.9}]
NAMES = ["mask_ratio_0.5", "mask_ratio_0.9"]


def test_script_holds_one_task_per_trial():
  jobs = [common.Job("a", ["--workdir=/r/a"], "/r/a"),
          common.Job("b b", ["--config.input.folder=/x y"], "/r/b b")]
  target = slurm.SlurmTarget(nodes=2, gpus_per_node=8, time="4:00:00", partition="gpu",
                             sbatch=("--qos=high",), python="python")
  target.side_by_side(3)
  script = target.script(jobs, "/r")
  assert "#SBATCH --array=0-1%3" in script and "#SBATCH --nodes=2" in script
  for line in ("#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=8",
               "#SBATCH --time=4:00:00", "#SBATCH --partition=gpu", "#SBATCH --qos=high",
               "#SBATCH --output=/r/launch/logs/%x-%A_%a.out",
               # The single run's preemption and time-limit handling, for every task.
               "#SBATCH --requeue", "#SBATCH --signal=B:USR1@300", "trap requeue USR1",
               "  scontrol requeue \"$SLURM_JOB_ID\""):
    assert line + "\n" in script, line
  assert "  1) RUN='b b'; ARGS=('--config.input.folder=/x y') ;;" in script
  # 16 tasks: the trainer initializes jax.distributed from SLURM's environment.
  assert "srun --kill-on-bad-exit=1 python -m mimjax.main \"${ARGS[@]}\" --distributed &" in script
  target.side_by_side(None)
  assert "%" not in target.script(jobs, "/r").split("--array=")[1].split("\n")[0]


def test_a_preempted_array_task_is_requeued_and_ends_like_an_uninterrupted_trial(
    tmp_path, monkeypatch, capsys):
  state = tmp_path / "cloud"
  state.mkdir()
  helpers.use_fake_cloud(monkeypatch, state)
  root = str(tmp_path / "root")
  sweep = helpers.write_sweep(tmp_path / "grid.py", GRID)
  flags = helpers.tiny_flags(**RUN)
  target = slurm.SlurmTarget()
  assert launch.launch(helpers.CONFIG, sweep, root, flags, target=target, parallel=1,
                       dry_run=True) == 0
  assert "#SBATCH --array=0-1%1" in capsys.readouterr().out and not os.path.exists(root)

  command = helpers.sweep_cmd(sweep, root, "--target=slurm", "--parallel=1", trainer_flags=flags)
  result = helpers.run_sweep(command)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  job = re.search(r"Submitted job (\d+) \(code \w+\): 2 array tasks", result.stdout).group(1)
  log = re.search(r"log: +(\S+)", result.stdout).group(1)
  assert log.endswith(f"/root/launch/logs/sweep-root-{job}_0.out")
  deadline = time.monotonic() + 600
  while not (os.path.exists(log) and "step 3/12" in open(log).read()):
    assert time.monotonic() < deadline, open(log).read() if os.path.exists(log) else "no log"
    time.sleep(0.05)
  task = (state / "slurm" / f"{job}_0.id").read_text()
  os.kill(int((state / "slurm" / f"{task}.pid").read_text()), signal.SIGUSR1)  # --signal=B:USR1
  while not (state / "slurm" / f"{job}.rc").exists():
    assert time.monotonic() < deadline, open(log).read()
    time.sleep(0.5)
  text = open(log).read()
  assert (state / "slurm" / f"{job}.rc").read_text() == "0", text
  assert "requeueing job" in text and f"job {task} (restart 1)" in text and "Resuming from" in text
  assert (state / "slurm" / f"{job}.most").read_text() == "1"  # --parallel=1: one at a time
  for index, name in enumerate(NAMES):
    with open(log.replace("_0.out", f"_{index}.out")) as f:
      assert f"{name}: array task {index} of job {job}" in f.read()
  rows = report.collect(root)
  assert [(r.name, r.progress.status, r.progress.step) for r in rows] == [
      (n, progress.DONE, 12) for n in NAMES]
  uninterrupted = str(tmp_path / "uninterrupted")
  train.train(helpers.tiny_config("mae", **RUN, **GRID[0]), uninterrupted)
  assert helpers.losses(os.path.join(root, NAMES[0])) == helpers.losses(uninterrupted)

  # Every trial done: nothing more is submitted.
  assert launch.launch(helpers.CONFIG, sweep, root, flags, target=target, parallel=1) == 0
  out = capsys.readouterr().out
  assert "Every trial is done" in out and "Submitted" not in out
