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

A sweep's trials are one array job of the same script (`--array=0-N%K`, task i runs trial i):
each task is requeued and resumed as a single run is.
"""
import dataclasses
import os
import re
import shlex
import subprocess
import sys

from mimjax.launch import common

# Asked of --python before submitting: its version, then the trainer's imports (as the job's
# PYTHONPATH gives them).
_PYTHON_CHECK = ("import sys; print('%d.%d.%d' % sys.version_info[:3], flush=True); "
                 "import mimjax.main")


@dataclasses.dataclass
class SlurmTarget(common.LaunchTarget):
  """A SLURM cluster: each run is one job (a sweep's, one array job)."""
  kind = "slurm"
  sweep_prefix = "slurm_"
  waits = False  # the jobs are queued; the cluster runs them

  nodes: int = common.option(1, "Nodes per run.", launcher=common.REQUIRED, minimum=1)
  gpus_per_node: int = common.option(
      0, "GPUs per node, one task each (0: CPU nodes, one task per node).",
      launcher=common.REQUIRED, minimum=0)
  partition: str | None = common.option(None, "The partition.")
  account: str | None = common.option(None, "The account.")
  time: str | None = common.option(None, "Time limit per run, e.g. 24:00:00 (the cluster's "
                                   "default if unset).")
  job_name: str | None = common.option(None, "The job's name (default: mimjax; a sweep's: "
                                       "sweep-ROOT_NAME).", launcher="mimjax")
  cpus_per_task: int = common.option(0, "CPUs per task (0: the cluster's default).", launcher=8,
                                     minimum=0)
  signal_seconds: int = common.option(
      300, "Seconds before the time limit at which the trainer is told to save.", minimum=0,
      maximum=65535)  # sbatch --signal's range
  python: str = common.option(sys.executable, "The Python with mimjax's dependencies on the "
                              "nodes (a shared venv).")
  launch_dir: str | None = common.option(
      None, "Where the code snapshot, the script and the logs go, on the shared filesystem "
      "(default: WORKDIR/launch, or ~/mimjax_launch/JOB_NAME for a gs:// workdir).")
  sbatch: tuple[str, ...] = common.option((), "A further #SBATCH option, e.g. --qos=high "
                                          "(repeatable).")
  parallel: int | None = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    if self.nodes < 1 or self.gpus_per_node < 0:
      raise common.LaunchError("--nodes must be >= 1 and --gpus_per_node >= 0")
    if self.time and not re.fullmatch(r"(\d+-)?\d+(:\d\d){0,2}", self.time):
      raise common.LaunchError(f"--time={self.time}: use SLURM's form, e.g. 24:00:00 or "
                               "2-00:00:00")

  @property
  def tasks_per_node(self) -> int:
    return max(self.gpus_per_node, 1)

  @property
  def num_processes(self) -> int:
    return self.nodes * self.tasks_per_node

  @property
  def num_devices(self) -> int:
    return self.num_processes

  @property
  def label(self) -> str:
    gpus = f"{self.gpus_per_node} GPUs" if self.gpus_per_node else "1 task"
    return f"the {self.num_devices} devices of {self.nodes} nodes x {gpus}"

  def side_by_side(self, parallel: int | None):
    self.parallel = parallel  # the array's %K

  def _name(self, records: str) -> str:
    return self.job_name or f"sweep-{os.path.basename(records.rstrip('/')) or 'root'}"

  def dirs(self, records: str) -> tuple[str, str]:
    """(code, logs) directories on the shared filesystem."""
    from mimjax import storage  # pylint: disable=g-import-not-at-top
    launch_dir = os.path.abspath(os.path.expanduser(
        self.launch_dir or (os.path.join("~", "mimjax_launch", self._name(records))
                            if storage.is_remote(records)
                            else storage.join(records, common.SHIPPED))))
    return os.path.join(launch_dir, "code"), os.path.join(launch_dir, "logs")

  def log(self, records: str, job_id: str, index: int | None = None) -> str:
    _, log_dir = self.dirs(records)
    task = "" if index is None else f"_{index}"
    return os.path.join(log_dir, f"{self._name(records)}-{job_id}{task}.out")

  def script(self, jobs: list[common.Job], records: str) -> str:
    """The sbatch script: one run, or an array job whose task i runs jobs[i]."""
    code_dir, log_dir = self.dirs(records)
    array = len(jobs) > 1
    directives = [
        f"--job-name={self._name(records)}", f"--nodes={self.nodes}",
        f"--ntasks-per-node={self.tasks_per_node}"]
    if self.gpus_per_node:
      directives.append(f"--gpus-per-node={self.gpus_per_node}")
    if self.cpus_per_task:
      directives.append(f"--cpus-per-task={self.cpus_per_task}")
    if array:
      limit = f"%{self.parallel}" if self.parallel else ""
      directives.append(f"--array=0-{len(jobs) - 1}{limit}")
    directives += [f"--output={log_dir}/%x-{'%A_%a' if array else '%j'}.out",
                   "--open-mode=append", "--requeue", f"--signal=B:USR1@{self.signal_seconds}"]
    for key in ("partition", "account", "time"):
      if getattr(self, key):
        directives.append(f"--{key}={getattr(self, key)}")
    directives += list(self.sbatch)
    trainer = [self.python, *common.TRAINER]
    distributed = ["--distributed"] if self.num_processes > 1 else []
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "",
             "# The code of the launch, whatever has changed in the checkout since.",
             f"export PYTHONPATH={code_dir}",
             "echo \"job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on "
             "$SLURM_JOB_NODELIST\"", ""]
    if array:
      lines.append("case \"$SLURM_ARRAY_TASK_ID\" in")
      for index, job in enumerate(jobs):
        lines.append(f"  {index}) RUN={shlex.quote(job.name)}; "
                     f"ARGS=({common.show(job.trainer_args)}) ;;")
      lines += ["  *) echo \"no run for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 1 ;;",
                "esac",
                "echo \"$RUN: array task $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID\"", ""]
      step = f"{common.show(trainer)} \"${{ARGS[@]}}\" {common.show(distributed)}".rstrip()
    else:
      step = common.show([*trainer, *jobs[0].trainer_args, *distributed])
    lines += ["# Near the time limit: the tasks save and exit on SIGTERM, then the job requeues",
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
              f"srun --kill-on-bad-exit=1 {step} &",
              "STEP=$!",
              "wait \"$STEP\"",
              "CODE=$?",
              "exit $CODE", ""]
    return "\n".join(lines)

  def dry_run(self, jobs: list[common.Job], records: str) -> list[str]:
    code_dir, log_dir = self.dirs(records)
    return [f"# sbatch {log_dir}/{self._name(records)}.sbatch; code: git archive of this "
            f"checkout unpacked in {code_dir}", self.script(jobs, records).rstrip("\n")]

  def preflight(self, jobs: list[common.Job], records: str):
    common.require_tool("sbatch", "run this on a SLURM login node, where SLURM's commands "
                        "(sbatch, srun) are on PATH; or add --dry_run to print the job script")
    for job in jobs:
      workdir = job.workdir
      if self.nodes > 1 and "://" not in workdir and not os.path.isabs(workdir):
        raise common.LaunchError(f"--workdir {workdir} is relative: give the nodes an absolute "
                                 "path on the shared filesystem, or gs://BUCKET/RUN")
    common.check_checkout()
    self.check_python()

  def check_python(self):
    """LaunchError naming --python unless it is a Python >= 3.11 that imports the trainer from
    this checkout (what the job runs, from its snapshot)."""
    need = "%d.%d" % common.min_python()
    fix = (f"give --python the Python (>= {need}) of an environment with mimjax's dependencies "
           "and the `cuda` extra on the shared filesystem (see README.md, SLURM GPU clusters)")
    try:
      result = subprocess.run([self.python, "-c", _PYTHON_CHECK], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=common.ROOT), timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
      raise common.LaunchError(f"--python {self.python} cannot be run here "
                               f"({getattr(e, 'strerror', None) or e}): {fix}") from None
    version = (result.stdout.split() or ["?"])[0]
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
      said = (result.stderr.strip().splitlines() or ["no output"])[-1]
      raise common.LaunchError(f"--python {self.python} did not answer as a Python does "
                               f"({said}): {fix}")
    if tuple(int(v) for v in version.split(".")[:2]) < common.min_python():
      raise common.LaunchError(f"--python {self.python} is Python {version}, but mimjax needs "
                               f">= {need}: {fix}")
    if result.returncode:
      said = (result.stderr.strip().splitlines() or ["no output"])[-1]
      raise common.LaunchError(f"--python {self.python} (Python {version}) cannot import the "
                               f"trainer ({said}): {fix}")

  def run(self, jobs: list[common.Job], records: str, on_start=None, on_end=None) -> int:
    """Ships the code, writes the script beside the logs and submits it; prints the job id."""
    code_dir, log_dir = self.dirs(records)
    os.makedirs(log_dir, exist_ok=True)
    archive = os.path.join(log_dir, "code.tar.gz")
    sha = common.ship(records, archive)
    common.extract(archive, code_dir)
    path = os.path.join(log_dir, f"{self._name(records)}.sbatch")
    with open(path, "w") as f:
      f.write(self.script(jobs, records))
    try:
      result = subprocess.run(["sbatch", "--parsable", path], capture_output=True, text=True)
    except OSError as e:  # on PATH, yet it cannot run
      raise common.LaunchError(f"sbatch could not be run ({e}): check the SLURM installation "
                               "on this machine") from e
    if result.returncode:
      raise common.LaunchError(f"sbatch {path} failed: {' '.join(result.stderr.split())}")
    job_id = result.stdout.strip().split(";")[0]
    what = f"{len(jobs)} array tasks" if len(jobs) > 1 else "1 run"
    gpus = f"{self.gpus_per_node} GPUs" if self.gpus_per_node else "1 task"
    print(f"Submitted job {job_id} (code {sha[:12]}): {what} of {self.nodes} nodes x {gpus}",
          flush=True)
    log = self.log(records, job_id, 0 if len(jobs) > 1 else None)
    print(f"  log:    {log}", flush=True)
    print(f"  script: {path}", flush=True)
    print(f"  watch:  squeue -j {job_id}; cancel: scancel {job_id}", flush=True)
    return 0


def launch(argv: list[str]) -> int:
  return common.launch(SlurmTarget, argv)


def main():
  common.main("launch/slurm.py", launch)
