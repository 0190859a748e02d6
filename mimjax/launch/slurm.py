r"""Submits mimjax-train to a SLURM GPU cluster: one task per GPU, connected by JAX's SLURM support.

  python launch/slurm.py --nodes 2 --gpus_per_node 8 --partition gpu --time 24:00:00 \
      -- --config configs/mae.py:variant=L/16,dataset=imagenet2012 --workdir /shared/runs/mae-l16

Renders an sbatch script and submits it: `--ntasks-per-node` = GPUs per node (one process per
GPU, which is what `jax.distributed.initialize()` assumes under SLURM); `srun --kill-on-bad-exit`
so that one failed task ends the step; `--signal=B:USR1@SECONDS` before the time limit, on which
the script sends SIGTERM to the tasks (the trainer saves and exits) and requeues the job;
`--requeue` so that a preempted job runs again. A requeued job resumes from the workdir's last
checkpoint. The code runs from a snapshot of this checkout in --launch_dir/code (sha and
uncommitted diff recorded in WORKDIR/launch/), so later edits do not change a queued job. Prints the
job id and the log paths. --dry_run prints the script and submits nothing.
"""
import os
import re
import subprocess
import sys

from mimjax.launch import common


def _parser():
  p = common.ArgumentParser(prog="launch/slurm.py", description=__doc__.split("\n\n")[0])
  p.add_argument("--nodes", type=int, required=True)
  p.add_argument("--gpus_per_node", type=int, required=True)
  p.add_argument("--partition", default=None)
  p.add_argument("--account", default=None)
  p.add_argument("--time", default=None, help="Time limit, e.g. 24:00:00 (the cluster's default "
                 "if unset).")
  p.add_argument("--job_name", default="mimjax")
  p.add_argument("--cpus_per_task", type=int, default=8)
  p.add_argument("--signal_seconds", type=int, default=300,
                 help="Seconds before the time limit at which the trainer is told to save.")
  p.add_argument("--python", default=sys.executable,
                 help="The Python with mimjax's dependencies on the nodes (a shared venv).")
  p.add_argument("--launch_dir", default=None,
                 help="Where the code snapshot, the script and the logs go, on the shared "
                 "filesystem (default: WORKDIR/launch, or ~/mimjax_launch/JOB_NAME for a gs:// "
                 "workdir).")
  p.add_argument("--dry_run", action="store_true", help="Print the script; submit nothing.")
  return p


def script(args, trainer_args: list[str], code_dir: str, log_dir: str) -> str:
  """The sbatch script."""
  directives = [
      f"--job-name={args.job_name}", f"--nodes={args.nodes}",
      f"--ntasks-per-node={args.gpus_per_node}", f"--gpus-per-node={args.gpus_per_node}",
      f"--cpus-per-task={args.cpus_per_task}", f"--output={log_dir}/%x-%j.out",
      "--open-mode=append", "--requeue", f"--signal=B:USR1@{args.signal_seconds}"]
  for key in ("partition", "account", "time"):
    if getattr(args, key):
      directives.append(f"--{key}={getattr(args, key)}")
  trainer = common.show([args.python, *common.TRAINER, *trainer_args, "--distributed"])
  lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "",
           "# The code of the launch, whatever has changed in the checkout since.",
           f"export PYTHONPATH={code_dir}",
           "echo \"job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST\"",
           "",
           "# Near the time limit: the tasks save and exit on SIGTERM, then the job requeues",
           "# itself and resumes from that checkpoint.",
           "requeue() {",
           "  echo \"time limit near: saving, then requeueing job $SLURM_JOB_ID\"",
           "  kill -TERM \"$STEP\"",
           "  wait \"$STEP\"",
           "  scontrol requeue \"$SLURM_JOB_ID\"",
           "  exit 0",
           "}",
           "trap requeue USR1",
           "",
           f"srun --kill-on-bad-exit=1 {trainer} &",
           "STEP=$!",
           "wait \"$STEP\"",
           "CODE=$?",
           "exit $CODE", ""]
  return "\n".join(lines)


def launch(argv: list[str]) -> int:
  args, trainer_args = common.parse(_parser(), argv)
  if args.nodes < 1 or args.gpus_per_node < 1:
    raise common.LaunchError("--nodes and --gpus_per_node must be >= 1")
  if args.time and not re.fullmatch(r"(\d+-)?\d+(:\d\d){0,2}", args.time):
    raise common.LaunchError(f"--time={args.time}: use SLURM's form, e.g. 24:00:00 or 2-00:00:00")
  workdir = common.workdir_of(trainer_args)
  tasks = args.nodes * args.gpus_per_node
  if args.nodes > 1 and "://" not in workdir and not os.path.isabs(workdir):
    raise common.LaunchError(f"--workdir {workdir} is relative: give the nodes an absolute path "
                             "on the shared filesystem, or gs://BUCKET/RUN")
  from mimjax import storage  # pylint: disable=g-import-not-at-top
  launch_dir = os.path.abspath(os.path.expanduser(
      args.launch_dir or (os.path.join("~", "mimjax_launch", args.job_name)
                          if storage.is_remote(workdir) else storage.join(workdir, common.SHIPPED))))
  code_dir, log_dir = os.path.join(launch_dir, "code"), os.path.join(launch_dir, "logs")
  text = script(args, trainer_args, code_dir, log_dir)
  if args.dry_run:
    print(f"# sbatch {log_dir}/{args.job_name}.sbatch; code: git archive of this checkout "
          f"unpacked in {code_dir}")
    print(text, end="")
    return 0

  common.require_tool("sbatch", "run this on a SLURM login node, where SLURM's commands "
                      "(sbatch, srun) are on PATH; or add --dry_run to print the job script")
  common.check_checkout()
  common.check_config(common.load_config(trainer_args), tasks, tasks,
                      f"{args.nodes} nodes x {args.gpus_per_node} GPUs")
  common.check_workdir(workdir)
  os.makedirs(log_dir, exist_ok=True)
  archive = os.path.join(log_dir, "code.tar.gz")
  sha = common.ship(workdir, archive)
  common.extract(archive, code_dir)
  path = os.path.join(log_dir, f"{args.job_name}.sbatch")
  with open(path, "w") as f:
    f.write(text)
  try:
    result = subprocess.run(["sbatch", "--parsable", path], capture_output=True, text=True)
  except OSError as e:  # on PATH, yet it cannot run
    raise common.LaunchError(f"sbatch could not be run ({e}): check the SLURM installation "
                             "on this machine") from e
  if result.returncode:
    raise common.LaunchError(f"sbatch {path} failed: {result.stderr.strip()}")
  job = result.stdout.strip().split(";")[0]
  print(f"Submitted job {job} (code {sha[:12]}): {args.nodes} nodes x {args.gpus_per_node} GPUs",
        flush=True)
  print(f"  log:    {log_dir}/{args.job_name}-{job}.out", flush=True)
  print(f"  script: {path}", flush=True)
  print(f"  watch:  squeue -j {job}; cancel: scancel {job}", flush=True)
  return 0


def main():
  common.main("launch/slurm.py", launch)
