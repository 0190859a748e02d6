r"""Runs mimjax-train on a Cloud TPU VM slice (a pod: every host runs one process).

  python launch/tpu.py --name mae-l16 --zone us-central1-a --accelerator_type v5litepod-16 \
      -- --config configs/mae.py:variant=L/16,dataset=imagenet2012 --workdir gs://BUCKET/mae-l16

Steps: check the config against the slice's devices and (mimjax.compile, unless
--skip_compile_check) that it fits in the chips' memory; check the gs:// workdir is writable;
create the slice (`gcloud compute tpus tpu-vm create`, or `queued-resources create` with --queued); ship this
checkout (git archive, recorded in WORKDIR/launch/) and install it with the `tpu` extra on every
worker, into a virtual environment of a Python >= 3.11 whatever the image's python3 is (made by
uv, kept while the install set is unchanged; --python names an interpreter instead); stop a stale
trainer of an earlier launch that still holds the chips (by its pid); run
`mimjax.main ... --distributed` on all workers, streaming worker 0's log and every worker's
errors; when one worker fails, stop the others and exit with its code; delete the slice unless
--keep. With --spot, a preempted slice is recreated and the same command run again: it resumes
from the workdir's last checkpoint. Launching again while the run is alive attaches to it.
--dry_run prints every gcloud command and changes nothing.
"""
import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from mimjax import hardware
from mimjax import workdir_lock
from mimjax.launch import common

REMOTE_CODE = "~/mimjax"
PID, LOG, RC, WORKDIR = "~/mimjax.pid", "~/mimjax.log", "~/mimjax.rc", "~/mimjax.workdir"
# The workers' virtual environments, one per install set, and the uv that makes them: they stay
# on a VM across launches, trials and restarts.
ENVS = "~/mimjax_envs"
UV = f"{ENVS}/uv/bin/uv"
EXTRA = "tpu"  # setup.py's extra for TPU VMs
INSTALLED = ".installed"  # in an environment whose install finished


def worker_env() -> str:
  """The workers' environment for this checkout's install set: ~/mimjax_envs/pyX.Y-HASH, HASH of
  setup.py (the pinned requirements and extras), the extra and the Python version."""
  version = "%d.%d" % common.min_python()
  with open(common.SETUP, "rb") as f:
    key = hashlib.sha256(f.read() + f"\0{EXTRA}\0{version}".encode()).hexdigest()[:12]
  return f"{ENVS}/py{version}-{key}"


def tpu_slice(accelerator_type: str) -> hardware.Slice:
  """The slice of an accelerator type such as v5litepod-16 or v4-32 (its hosts, its chips)."""
  try:
    found = hardware.gcloud_slice(accelerator_type)
  except hardware.SliceError as e:
    raise common.LaunchError(f"--accelerator_type {accelerator_type}: {e}") from None
  if found is None:
    prefixes = sorted(t.gcloud_prefix for t in hardware.TPUS.values())
    raise common.LaunchError(
        f"unknown --accelerator_type {accelerator_type!r}: expected FAMILY-SIZE with FAMILY one "
        f"of {prefixes}, e.g. v5litepod-16, v6e-8, v4-32, v5p-16")
  return found


class TpuVm:
  """The gcloud commands for one slice's TPU VMs."""

  def __init__(self, args):
    self.args = args
    self.slice = tpu_slice(args.accelerator_type)
    self.runtime = args.runtime_version or self.slice.tpu.runtime_version
    self.installed = False  # the code is on the workers (a sweep's next trial needs no install)
    self.env = None if args.python else worker_env()  # --python: the user's own interpreter

  @property
  def python(self) -> str:
    """The workers' interpreter, as a word of their shell."""
    return shlex.quote(self.args.python) if self.args.python else f"{self.env}/bin/python"

  @property
  def hosts(self) -> int:
    return self.slice.hosts

  @property
  def devices_per_host(self) -> int:
    return self.slice.devices_per_host

  @property
  def label(self) -> str:
    return f"{self.args.accelerator_type} ({self.hosts} hosts x {self.devices_per_host} chips)"

  def _where(self) -> list[str]:
    where = [f"--zone={self.args.zone}"]
    return where + ([f"--project={self.args.project}"] if self.args.project else [])

  def tpu_vm(self, verb: str, *rest: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *rest, *self._where()]

  def create(self) -> list[str]:
    spot = ["--spot"] if self.args.spot else []
    if self.args.queued:
      return ["gcloud", "compute", "tpus", "queued-resources", "create", self.args.name,
              f"--node-id={self.args.name}", *self._where(),
              f"--accelerator-type={self.args.accelerator_type}",
              f"--runtime-version={self.runtime}", *spot]
    return self.tpu_vm("create", self.args.name, f"--accelerator-type={self.args.accelerator_type}",
                       f"--version={self.runtime}", *spot)

  def describe(self) -> list[str]:
    return self.tpu_vm("describe", self.args.name, "--format=value(state)")

  def delete(self) -> list[str]:
    if self.args.queued:
      return ["gcloud", "compute", "tpus", "queued-resources", "delete", self.args.name,
              *self._where(), "--force", "--quiet"]
    return self.tpu_vm("delete", self.args.name, "--quiet")

  def scp(self, local: str, remote: str) -> list[str]:
    return self.tpu_vm("scp", local, f"{self.args.name}:{remote}", "--worker=all")

  def ssh(self, worker, command: str) -> list[str]:
    return self.tpu_vm("ssh", self.args.name, f"--worker={worker}", f"--command={command}")

  def install(self) -> str:
    """Unpacks the shipped code and installs it with the `tpu` extra: into --python, or into the
    workers' environment unless it is there already. uv makes that environment with a Python
    >= 3.11 (the image's, or a CPython it downloads), whatever the image's python3 is."""
    spec = shlex.quote(f".[{EXTRA}]")
    unpack = (f"mkdir -p {REMOTE_CODE} && tar -xzf ~/mimjax_code.tar.gz -C {REMOTE_CODE} && "
              f"cd {REMOTE_CODE}")
    if not self.env:
      return f"{unpack} && {self.python} -m pip install -q {spec}"
    env, version = self.env, "%d.%d" % common.min_python()
    return (f"{unpack} && if [ -f {env}/{INSTALLED} ]; then echo reusing {env}; else "
            # uv from PyPI beside the environments: `pip --target` needs no venv module, and an
            # externally managed system Python (PEP 668) allows it.
            f"{{ [ -x {UV} ] || python3 -m pip install -q --target {ENVS}/uv uv; }} && "
            f"rm -rf {env} && {UV} venv -q --python {version} {env} && "
            # Editable: the environment runs whatever code a later launch unpacks.
            f"{UV} pip install -q --python {env}/bin/python -e {spec} && "
            f"touch {env}/{INSTALLED}; fi")

  def run(self, worker: int, trainer_args: list[str], workdir: str) -> str:
    """Starts the trainer detached (it outlives this ssh), then follows its log to the end."""
    # The run's name across slice re-creations: the lock that a preempted attempt left,
    # heartbeat still fresh, is this run's own and is taken over.
    run_id = shlex.quote(f"tpu:{self.args.zone}/{self.args.name}:{workdir}")
    trainer = f"{workdir_lock.RUN_ID_ENV}={run_id} {self.python} " + common.show(
        [*common.TRAINER, *trainer_args, "--distributed", f"--num_processes={self.hosts}",
         f"--process_id={worker}"])
    # The wrapper passes SIGTERM (preemption, a stop) on to the trainer, which saves before it
    # exits, and records the trainer's exit code for whoever follows the log.
    inner = shlex.quote(f"{trainer} & c=$!; trap 'kill -TERM $c' TERM; s=0; "
                        f"while kill -0 $c 2>/dev/null; do wait $c; s=$?; done; echo $s > {RC}")
    return (f"cd {REMOTE_CODE} && "
            # A trainer left by an earlier launch still holds the chips: stop it by its pid.
            f"if [ -f {PID} ] && kill -0 -- -$(cat {PID}) 2>/dev/null; then "
            f"echo stopping stale trainer $(cat {PID}); kill -9 -- -$(cat {PID}); sleep 2; fi; "
            f"rm -f {RC}; echo {shlex.quote(workdir)} > {WORKDIR}; "
            # The log exists before the follower starts: the background job opens it too late.
            f": > {LOG}; setsid nohup bash -c {inner} >> {LOG} 2>&1 < /dev/null & "
            f"echo $! > {PID}; "
            f"{self.follow()}")

  @staticmethod
  def follow() -> str:
    return f"tail -n +1 --pid=$(cat {PID}) -f {LOG}; exit $(cat {RC} 2>/dev/null || echo 1)"

  @staticmethod
  def alive(workdir: str) -> str:
    return (f"[ -f {PID} ] && kill -0 -- -$(cat {PID}) 2>/dev/null && "
            f"[ \"$(cat {WORKDIR})\" = {shlex.quote(workdir)} ]")

  @staticmethod
  def stop() -> str:
    """SIGTERM to the trainer, then wait (up to 5 minutes) while it saves and exits."""
    return (f"[ -f {PID} ] && kill -TERM -- -$(cat {PID}) 2>/dev/null; "
            f"for i in $(seq 300); do kill -0 -- -$(cat {PID}) 2>/dev/null || break; sleep 1; done; "
            "true")


def require_gcloud():
  """LaunchError unless gcloud is here: checked before anything starts (--dry_run needs none)."""
  common.require_tool("gcloud", "install the Google Cloud SDK "
                      "(https://cloud.google.com/sdk/docs/install), run `gcloud auth login`, and "
                      "launch again; or add --dry_run to print the gcloud commands")


def _call(command: list[str], check: bool = True) -> subprocess.CompletedProcess:
  print(f"launch: {common.show(command)[:300]}", flush=True)
  result = subprocess.run(command, capture_output=True, text=True)
  if check and result.returncode:
    raise common.LaunchError(f"{command[0]} {' '.join(command[1:5])} failed "
                             f"({result.returncode}): {result.stderr.strip()[-500:]}")
  return result


def _state(tpu: TpuVm) -> str | None:
  result = subprocess.run(tpu.describe(), capture_output=True, text=True)
  return result.stdout.strip() if result.returncode == 0 else None


def compile_check(args, trainer_args: list[str]) -> list[str] | None:
  """The mimjax.compile memory check's command (None with --skip_compile_check)."""
  if args.skip_compile_check:
    return None
  config_args = [a for i, a in enumerate(trainer_args)
                 if a.startswith("--config") or (i and trainer_args[i - 1] == "--config")]
  return [sys.executable, "-m", "mimjax.compile", *config_args,
          f"--topology={args.accelerator_type}"]


def check_fits(check: list[str] | None, target: str):
  """Runs the memory check `check`; LaunchError with its verdict when the config does not fit.

  The verdict comes from the check's JSON report; its console (the memory table, the verdict
  with the run's length and cost) is shown as it printed it.
  """
  if not check:
    return
  print(f"launch: checking that the config fits in the memory of {target}", flush=True)
  with tempfile.TemporaryDirectory(prefix="mimjax_fits_") as tmp:
    report_path = os.path.join(tmp, "report.json")
    result = subprocess.run([*check, f"--report={report_path}"], cwd=common.ROOT,
                            capture_output=True, text=True)
    # 0 fits, 1 does not fit: both write the report; any other status is a failed check.
    report = None
    if result.returncode in (0, 1) and os.path.exists(report_path):
      with open(report_path) as f:
        report = json.load(f)
  if report is None:
    error = result.stderr.strip().splitlines()
    raise common.LaunchError(f"the memory check {common.show(check)[:300]} failed "
                             f"({result.returncode}): {error[-1] if error else 'no output'}")
  if not report["fits"]:
    verdict = report["verdict"].removeprefix("does not fit: ")
    raise common.LaunchError(f"the config does not fit in the memory of {target}: {verdict}")
  print("\n".join(f"launch: {line}" for line in result.stdout.strip().splitlines()), flush=True)


def _wait_active(tpu: TpuVm):
  """Queued resources: wait until the slice exists and is READY."""
  while _state(tpu) != "READY":
    time.sleep(30)


def _bring_up(tpu: TpuVm, archive: str):
  state = _state(tpu)
  if tpu.installed and state == "READY":
    return
  if state is None:
    _call(tpu.create())
  if tpu.args.queued:
    _wait_active(tpu)
  _call(tpu.scp(archive, "~/mimjax_code.tar.gz"))
  _call(tpu.ssh("all", tpu.install()))
  tpu.installed = True


def _run(tpu: TpuVm, trainer_args, workdir, attach: bool) -> int:
  if attach:
    commands = [tpu.ssh(i, tpu.follow()) for i in range(tpu.hosts)]
  else:
    commands = [tpu.ssh(i, tpu.run(i, trainer_args, workdir)) for i in range(tpu.hosts)]
  stop = lambda: subprocess.run(tpu.ssh("all", tpu.stop()), capture_output=True)
  return common.run_workers(commands, stop_all=stop)


def plan(tpu: TpuVm, runs: list[tuple[list[str], str]]) -> list[list[str]]:
  """The gcloud commands that create the slice, run each (trainer args, workdir) of `runs` in
  turn on it and delete it (unless --keep): what --dry_run prints."""
  commands = [tpu.create(), tpu.scp("code.tar.gz", "~/mimjax_code.tar.gz"),
              tpu.ssh("all", tpu.install())]
  for trainer_args, workdir in runs:
    commands += [tpu.ssh(i, tpu.run(i, trainer_args, workdir)) for i in range(tpu.hosts)]
  return commands + ([] if tpu.args.keep else [tpu.delete()])


def run(tpu: TpuVm, archive: str, trainer_args: list[str], workdir: str) -> int:
  """Runs the trainer on every worker, first creating the slice and installing `archive` when
  that is not done yet; with --spot a preempted slice is recreated and the run resumed."""
  restarts = 0
  while True:
    _bring_up(tpu, archive)
    code = _run(tpu, trainer_args, workdir, attach=False)
    if not tpu.args.spot or _state(tpu) not in (None, "PREEMPTED", "TERMINATED", "STOPPED"):
      return code
    restarts += 1
    if restarts > tpu.args.max_restarts:
      print(f"launch: preempted {restarts} times: giving up", file=sys.stderr)
      return code or 1
    print(f"launch: {tpu.args.name} was preempted: recreating it and resuming "
          f"(restart {restarts})", flush=True)
    _call(tpu.delete(), check=False)
    tpu.installed = False


def ship(tpu: TpuVm, workdir: str) -> str:
  """This checkout as an archive to install on the workers (recorded in WORKDIR/launch/)."""
  archive = os.path.join(tempfile.mkdtemp(prefix="mimjax_ship_"), "code.tar.gz")
  sha = common.ship(workdir, archive)
  print(f"launch: {tpu.label}, code {sha[:12]}", flush=True)
  return archive


def finish(tpu: TpuVm, code: int) -> int:
  """Deletes the slice (or with --keep says how to); returns `code`."""
  if tpu.args.keep:
    print(f"launch: keeping {tpu.args.name} (it bills until deleted): "
          f"{common.show(tpu.delete())}", flush=True)
  else:
    _call(tpu.delete(), check=False)
  return code


@dataclasses.dataclass
class TpuTarget(common.LaunchTarget):
  """One Cloud TPU VM slice: its runs go in turn on all its hosts, then it is deleted."""
  kind = "tpu"
  sweep_prefix = ""

  name: str | None = common.option(None, "The slice (TPU VM) name.", launcher=common.REQUIRED)
  zone: str | None = common.option(None, "e.g. us-central1-a; the bucket's region.",
                                   launcher=common.REQUIRED)
  accelerator_type: str | None = common.option(None, "e.g. v5litepod-16, v4-32.",
                                               launcher=common.REQUIRED)
  runtime_version: str | None = common.option(None, "Default: the family's base image.")
  project: str | None = common.option(None, "Default: gcloud's configured project.")
  spot: bool = common.option(False, "Spot capacity; recreate when preempted.")
  queued: bool = common.option(False, "Create through queued-resources.")
  keep: bool = common.option(False, "Keep the slice at the end (it bills).")
  max_restarts: int = common.option(20, "Spot: preemptions to survive.", minimum=0)
  python: str | None = common.option(
      None, "The workers' Python, which gets the `tpu` extra installed (default: a virtual "
      "environment of Python >= 3.11 that the launch makes on each worker with uv).")
  skip_compile_check: bool = common.option(
      False, "Do not check with mimjax.compile that the config fits in memory.")
  vm: TpuVm | None = dataclasses.field(default=None, init=False, repr=False)

  def __post_init__(self):
    missing = [f"--{k}" for k in ("name", "zone", "accelerator_type") if not getattr(self, k)]
    if missing:
      raise common.LaunchError(f"--target=tpu needs {' '.join(missing)}: the slice to create, "
                               "e.g. --name=sweep --zone=us-central1-a "
                               "--accelerator_type=v5litepod-8")
    self.vm = TpuVm(self)

  @property
  def num_processes(self) -> int:
    return self.vm.hosts

  @property
  def num_devices(self) -> int:
    return self.vm.hosts * self.vm.devices_per_host

  @property
  def label(self) -> str:
    return self.vm.label

  def side_by_side(self, parallel: int | None):
    if parallel not in (None, 1):
      raise common.LaunchError(f"--parallel={parallel} with --target=tpu: the trials run in "
                               "turn on one slice (its chips serve one trainer); drop --parallel")

  def config_path(self, path: str) -> str:
    """`path` inside the shipped checkout, where the workers unpack it."""
    relative = os.path.relpath(path, common.ROOT)
    if relative.startswith(".."):
      raise common.LaunchError(f"--config {path} is outside this checkout ({common.ROOT}), "
                               "which is what the slice gets: put the config file under configs/")
    return relative

  def _check_storage(self, jobs: list[common.Job], records: str):
    flag = "--workdir" if [j.workdir for j in jobs] == [records] else "--root"
    common.check_shared_workdir(records, "TPU slice", flag=flag)

  def _checks(self, jobs: list[common.Job]) -> list[list[str]]:
    return [c for c in (compile_check(self, job.trainer_args) for job in jobs) if c]

  def dry_run(self, jobs: list[common.Job], records: str) -> list[str]:
    self._check_storage(jobs, records)
    commands = self._checks(jobs) + plan(self.vm, [(j.trainer_args, j.workdir) for j in jobs])
    python = f"environment {self.vm.env} (uv)" if self.vm.env else f"python {self.python}"
    return [f"# {self.vm.label}; code: git archive of this checkout, recorded in "
            f"{records}/{common.SHIPPED}/; {python}", *(common.show(c) for c in commands)]

  def preflight(self, jobs: list[common.Job], records: str):
    self._check_storage(jobs, records)
    require_gcloud()
    common.check_checkout()

  def check_fits(self, jobs: list[common.Job]):
    for job in jobs:
      where = f"{self.vm.label} for {job.label}" if job.label else self.vm.label
      check_fits(compile_check(self, job.trainer_args), where)

  def run(self, jobs: list[common.Job], records: str, on_start=None, on_end=None) -> int:
    """Runs `jobs` in turn on the slice, creating it and installing this checkout once; a run of
    a job's workdir still alive on the slice is attached to rather than started again. A job
    that fails is reported and the next one runs; Ctrl-C stops the trainers (they save) and ends
    the list. Deletes the slice at the end unless --keep."""
    archive, code = None, 0
    try:
      for job in jobs:
        print(f"=== {job.name}: {' '.join(job.trainer_args)}", flush=True)
        if on_start:  # this launcher's pid: the run counts as running while it lives
          on_start(job.name, os.getpid())
        if (_state(self.vm) == "READY" and
            _call(self.vm.ssh(0, self.vm.alive(job.workdir)), check=False).returncode == 0):
          print(f"launch: a run of {job.workdir} is alive on {self.name}: attaching", flush=True)
          code = _run(self.vm, job.trainer_args, job.workdir, attach=True)
        else:
          archive = archive or ship(self.vm, records)
          code = run(self.vm, archive, job.trainer_args, job.workdir)
        if on_end:
          on_end(job.name, code)
        print(f"=== {job.name}: {'finished' if code == 0 else f'exit status {code}'}", flush=True)
        if code == 130:  # interrupted
          break
    finally:
      finish(self.vm, code)
    return code


def launch(argv: list[str]) -> int:
  return common.launch(TpuTarget, argv)


def main():
  common.main("launch/tpu.py", launch)
