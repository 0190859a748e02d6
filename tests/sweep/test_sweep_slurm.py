"""The SLURM target: one array job with a concurrency limit, through stand-in sbatch and srun."""
import os
import re

from mimjax.sweeps import launch
from mimjax.sweeps import progress
from mimjax.sweeps import report
from mimjax.sweeps import slurm
from tests import trainer_utils as tu
from tests.sweep import sweep_helpers as sh

RUN = {"total_steps": 2, "ckpt_every_steps": 2, "log_every_steps": 1}
GRID = [{"model.mask_ratio": 0.5}, {"model.mask_ratio": 0.9}]
NAMES = ["mask_ratio_0.5", "mask_ratio_0.9"]


def test_script_holds_one_task_per_trial():
  jobs = [("a", ["python", "-m", "mimjax.main", "--workdir=/r/a"]),
          ("b b", ["python", "-m", "mimjax.main", "--config.input.folder=/x y"])]
  options = slurm.Options(nodes=2, gpus_per_node=8, time="4:00:00", partition="gpu",
                          sbatch=("--qos=high",))
  script = slurm.render(jobs, "/r", options, parallel=3)
  assert "#SBATCH --array=0-1%3" in script and "#SBATCH --nodes=2" in script
  for line in ("#SBATCH --gpus-per-node=8", "#SBATCH --time=4:00:00", "#SBATCH --partition=gpu",
               "#SBATCH --qos=high", "#SBATCH --output=/r/slurm_logs/%A_%a.out"):
    assert line in script
  # Two nodes: the trainer initializes jax.distributed from SLURM's environment.
  assert "  1) TRIAL='b b'; COMMAND=(python -m mimjax.main '--config.input.folder=/x y' " \
         "--distributed) ;;" in script
  assert "%" not in slurm.render(jobs, "/r", slurm.Options(), parallel=None).split("--array=")[1].split("\n")[0]


def test_array_job_runs_every_trial(tmp_path, capsys):
  root = str(tmp_path / "root")
  sweep = sh.write_sweep(tmp_path / "grid.py", GRID)
  flags = sh.tiny_flags(**RUN)
  assert launch.launch(sh.CONFIG, sweep, root, flags, target="slurm", parallel=1,
                       dry_run=True) == 0
  assert "#SBATCH --array=0-1%1" in capsys.readouterr().out and not os.path.exists(root)

  log = tmp_path / "sbatch.log"
  command = sh.sweep_cmd(sweep, root, "--target=slurm", "--parallel=1", trainer_flags=flags)
  os.environ["SBATCH_STANDIN_LOG"] = str(log)
  try:
    result = sh.run(command, path_first=sh.STANDIN_BIN)
  finally:
    del os.environ["SBATCH_STANDIN_LOG"]
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  job = re.search(r"Submitted array job (\d+): 2 tasks", result.stdout).group(1)
  assert log.read_text() == f"job {job} array 0-1%1: at most 1 tasks at once\n"
  rows = report.collect(root)
  assert [(r.name, r.progress.status, r.progress.step) for r in rows] == [
      (n, progress.DONE, 2) for n in NAMES]
  for task, name in enumerate(NAMES):
    with open(os.path.join(slurm.log_dir(root), f"{job}_{task}.out")) as f:
      out = f.read()
    assert f"trial {name}: array task {task} of job {job}" in out and "Done." in out
    assert tu.losses(os.path.join(root, name)).keys() == {1, 2}
  with open(os.path.join(root, "sweep.sbatch")) as f:
    assert f.read().startswith("#!/bin/bash")

  # Every trial done: nothing more is submitted.
  assert launch.launch(sh.CONFIG, sweep, root, flags, target="slurm", parallel=1) == 0
  out = capsys.readouterr().out
  assert "Every trial is done" in out and "Submitted" not in out

