"""The SLURM target: one array job, a task per trial, at most `parallel` at once (`%K`).

Each array task runs its trial's trainer command under `srun` on its own allocation
(`nodes` x `gpus_per_node`); with more than one node the trainer gets `--distributed` and
jax.distributed.initialize() reads the cluster from SLURM's environment. The job inherits the
submitting shell's environment (sbatch's default), so the same Python and PYTHONPATH run it.
"""
import dataclasses
import os
import shlex
import shutil
import subprocess

from etils import epath

from mimjax.sweeps import trials as trials_lib


@dataclasses.dataclass(frozen=True)
class Options:
  nodes: int = 1           # per trial
  gpus_per_node: int = 0   # 0: no --gpus-per-node line (CPU nodes, or the partition's default)
  cpus_per_task: int = 0
  time: str = ""           # e.g. 24:00:00
  partition: str = ""
  account: str = ""
  sbatch: tuple[str, ...] = ()  # further #SBATCH options, e.g. --qos=high

  def num_devices(self) -> int:
    return self.nodes * max(self.gpus_per_node, 1)


def log_dir(root: str) -> str:
  """Where the tasks' output goes: under the root when it is a local path."""
  if "://" in root:
    return os.path.abspath("slurm_logs")
  return os.path.join(os.path.abspath(root), "slurm_logs")


def render(jobs: list[tuple[str, list[str]]], root: str, options: Options,
           parallel: int | None) -> str:
  """The sbatch script whose array task i runs the i-th of `jobs` (trial name, command)."""
  if not jobs:
    raise trials_lib.SweepError("no trial left to submit")
  limit = f"%{parallel}" if parallel else ""
  lines = ["#!/bin/bash",
           f"#SBATCH --job-name=sweep-{epath.Path(root).name}",
           f"#SBATCH --array=0-{len(jobs) - 1}{limit}",
           f"#SBATCH --nodes={options.nodes}",
           "#SBATCH --ntasks-per-node=1",
           f"#SBATCH --output={log_dir(root)}/%A_%a.out"]
  if options.gpus_per_node:
    lines.append(f"#SBATCH --gpus-per-node={options.gpus_per_node}")
  for flag, value in (("cpus-per-task", options.cpus_per_task), ("time", options.time),
                      ("partition", options.partition), ("account", options.account)):
    if value:
      lines.append(f"#SBATCH --{flag}={value}")
  lines += [f"#SBATCH {extra}" for extra in options.sbatch]
  lines += ["set -euo pipefail", f"cd {shlex.quote(os.getcwd())}",
            'case "$SLURM_ARRAY_TASK_ID" in']
  for index, (name, command) in enumerate(jobs):
    if options.nodes > 1:
      command = [*command, "--distributed"]
    lines.append(f"  {index}) TRIAL={shlex.quote(name)}; "
                 f"COMMAND=({' '.join(shlex.quote(c) for c in command)}) ;;")
  lines += ['  *) echo "no trial for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;', "esac",
            'echo "trial $TRIAL: array task $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID on $(hostname)"',
            'srun --kill-on-bad-exit=1 "${COMMAND[@]}"', ""]
  return "\n".join(lines)


def submit(script: str, root: str) -> str:
  """Saves the script under the root and submits it; returns the job id."""
  if shutil.which("sbatch") is None:
    raise trials_lib.SweepError("--target=slurm: sbatch is not on PATH: run on a SLURM login "
                                "node, or add --dry_run to print the job script")
  os.makedirs(log_dir(root), exist_ok=True)
  (epath.Path(root) / "sweep.sbatch").write_text(script)
  result = subprocess.run(["sbatch", "--parsable"], input=script, text=True,
                          capture_output=True)
  if result.returncode != 0:
    message = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
    raise trials_lib.SweepError(f"sbatch refused the sweep's array job: {message}")
  return result.stdout.strip().split(";")[0]
