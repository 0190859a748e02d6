r"""Runs mimjax-train on this machine: N processes connected on 127.0.0.1, or K runs side by side.

  python launch/local.py --processes 2 -- --config configs/mae.py:demo --workdir workdirs/mae2

With N > 1 processes per run, each process gets its share of the devices (on CPU
`--devices_per_process` host devices, on GPUs a disjoint CUDA_VISIBLE_DEVICES slice) and the
code runs from a snapshot of this checkout (`git archive`; sha and uncommitted diff recorded in
WORKDIR/launch/), as on a cluster; process 0's output is shown, and every process's errors; when
one fails the others are stopped and its exit code returned. The free way to try a TPU-pod or
SLURM command before booking one.

With one process per run (a sweep's default), runs go `parallel` at a time, each on its own
share of the devices a trainer here sees (CUDA_VISIBLE_DEVICES on GPUs; on CPU a share of
`--xla_force_host_platform_device_count`), from this checkout. SIGTERM or Ctrl-C is passed on to
the running trainers, which save a checkpoint and exit.
"""
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from mimjax.launch import common

PROBE = ("import json, jax; d = jax.local_devices(); "
         "print(json.dumps([jax.default_backend(), len(d)]))")


@dataclasses.dataclass(frozen=True)
class Devices:
  platform: str  # 'cpu', 'gpu', 'tpu'
  count: int


def cpu_only() -> Devices | None:
  """The devices when JAX_PLATFORMS=cpu fixes them (no probe needed), else None."""
  if os.environ.get("JAX_PLATFORMS", "").strip().lower() != "cpu":
    return None
  match = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
  count = os.environ.get("JAX_NUM_CPU_DEVICES") or (match.group(1) if match else "1")
  return Devices("cpu", int(count))


def probe() -> Devices:
  """The devices a trainer started here would see, asked of a short-lived process: initializing
  a GPU or TPU backend in this one would hold memory (or the TPU itself) that the runs need."""
  proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
  if proc.returncode != 0:
    err = proc.stderr.strip()
    raise common.LaunchError("could not list this machine's JAX devices: "
                             f"{err.splitlines()[-1] if err else proc.returncode}")
  platform, count = json.loads(proc.stdout.strip().splitlines()[-1])
  return Devices(platform, count)


def share(devices: Devices, parallel: int) -> int:
  """The devices each of `parallel` side-by-side runs gets."""
  if parallel < 1:
    raise common.LaunchError(f"--parallel={parallel}: must be >= 1")
  if devices.platform == "cpu":
    return max(devices.count // parallel, 1)  # virtual devices: every run can have some
  if parallel > 1 and devices.platform == "tpu":
    raise common.LaunchError("--parallel > 1 on a TPU host: the chips of one host serve one "
                             "process; run the trials in turn (--parallel=1)")
  if devices.count % parallel:
    raise common.LaunchError(f"--parallel={parallel} does not divide the {devices.count} "
                             f"{devices.platform} devices: use a divisor of {devices.count}")
  return devices.count // parallel


def slot_envs(devices: Devices, parallel: int) -> list[dict[str, str]]:
  """Environment changes that give each of `parallel` slots its own devices."""
  n = share(devices, parallel)
  if parallel == 1:
    return [{}]
  if devices.platform == "cpu":
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "",
                   os.environ.get("XLA_FLAGS", "")).strip()
    return [{"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={n}".strip()}] * parallel
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  ids = visible.split(",") if visible else [str(i) for i in range(devices.count)]
  return [{"CUDA_VISIBLE_DEVICES": ",".join(ids[i * n:(i + 1) * n])} for i in range(parallel)]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _pump(stream, prefix: str):
  for line in stream:
    sys.stdout.write(f"[{prefix}] {line}")
    sys.stdout.flush()


def _ignore(*_):
  pass


@dataclasses.dataclass
class LocalTarget(common.LaunchTarget):
  """This machine."""
  kind = "local"
  sweep_prefix = "local_"

  processes: int = common.option(1, "Trainer processes per run, connected on 127.0.0.1.",
                                 launcher=2, minimum=1)
  devices_per_process: int = common.option(
      1, "With --processes > 1 on CPU: host devices per process (XLA's forced device count).",
      minimum=1)
  gpus: int | None = common.option(
      None, "With --processes > 1: GPUs on this machine to split between the processes "
      "(default: none, CPU).", minimum=1)
  port: int | None = common.option(None, "Coordinator port (default: a free one).", minimum=1,
                                   maximum=65535)
  devices: Devices | None = dataclasses.field(default=None, repr=False)
  parallel: int = dataclasses.field(default=1, repr=False)

  def __post_init__(self):
    if self.processes < 1:
      raise common.LaunchError(f"--processes={self.processes}: must be >= 1")
    if self.gpus is not None and (self.gpus < self.processes or self.gpus % self.processes):
      raise common.LaunchError(f"--gpus={self.gpus} does not split over --processes="
                               f"{self.processes}: use a multiple of it")

  @property
  def distributed(self) -> bool:
    return self.processes > 1

  def side_by_side(self, parallel: int | None):
    self.parallel = parallel or 1
    if self.distributed:
      if self.parallel != 1:
        raise common.LaunchError(f"--parallel={parallel} with {self.processes} processes per "
                                 "run: runs of several processes go one at a time")
      return
    self.devices = cpu_only() or probe()
    share(self.devices, self.parallel)

  @property
  def num_processes(self) -> int:
    return self.processes

  @property
  def num_devices(self) -> int:
    if self.distributed:
      return self.gpus or self.devices_per_process * self.processes
    if self.devices is None:
      self.side_by_side(self.parallel)
    return share(self.devices, self.parallel)

  @property
  def label(self) -> str:
    if self.distributed:
      return f"the {self.num_devices} devices of {self.processes} local processes"
    return f"the {self.num_devices} device(s) of a run here"

  # -- N processes per run ---------------------------------------------------------------------
  def commands(self, trainer_args: list[str], code_dir: str
               ) -> tuple[list[list[str]], list[dict]]:
    """One trainer command and environment per process."""
    n = self.processes
    port = self.port or _free_port()
    cmds, envs = [], []
    for i in range(n):
      cmds.append([sys.executable, *common.TRAINER, *trainer_args, "--distributed",
                   f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={n}",
                   f"--process_id={i}"])
      env = {"PYTHONPATH": code_dir}
      if self.gpus:
        part = self.gpus // n
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(i * part, (i + 1) * part))
      else:
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={self.devices_per_process}"
      envs.append(env)
    return cmds, envs

  def dry_run(self, jobs: list[common.Job], records: str) -> list[str]:
    if not self.distributed:
      return [f"{job.name}:\n  {' '.join([sys.executable, *common.TRAINER, *job.trainer_args])}"
              for job in jobs]
    snapshot = "<snapshot of this checkout>"
    lines = [f"# ship: git archive of this checkout -> {snapshot}; sha and diff -> "
             f"{records}/{common.SHIPPED}/"]
    for job in jobs:
      for cmd, env in zip(*self.commands(job.trainer_args, snapshot)):
        lines.append(" ".join(f"{k}={v}" for k, v in env.items()) + " " + common.show(cmd))
    return lines

  def preflight(self, jobs: list[common.Job], records: str):
    if self.distributed:
      common.check_checkout()

  def run(self, jobs: list[common.Job], records: str, on_start=None, on_end=None) -> int:
    on_start, on_end = on_start or _ignore, on_end or _ignore
    if not self.distributed:
      return self._side_by_side(jobs, on_start, on_end)
    snapshot = tempfile.mkdtemp(prefix="mimjax_code_")
    archive = os.path.join(snapshot, "code.tar.gz")
    sha = common.ship(records, archive)
    common.extract(archive, snapshot)
    print(f"launch: {self.processes} processes, code {sha[:12]} from {snapshot}", flush=True)
    code = 0
    for job in jobs:
      on_start(job.name, os.getpid())
      cmds, envs = self.commands(job.trainer_args, snapshot)
      code = common.run_workers(cmds, [dict(os.environ, **env) for env in envs])
      on_end(job.name, code)
      if code == 130:  # interrupted
        break
    return code

  # -- one process per run, `parallel` at a time --------------------------------------------------
  def _side_by_side(self, jobs: list[common.Job], on_start, on_end) -> int:
    """Runs each job's trainer on a free device set; the last failure's exit status, else 0."""
    if self.devices is None:
      self.side_by_side(self.parallel)
    parallel = self.parallel
    slots = slot_envs(self.devices, parallel)
    free = list(range(len(slots)))
    queue = list(jobs)
    running = {}  # name -> (process, slot)
    code = 0
    stopping = False

    def stop(signum, frame):
      nonlocal stopping
      stopping = True
      for proc, _ in running.values():
        proc.send_signal(signal.SIGTERM)  # the trainer saves and exits

    previous = signal.signal(signal.SIGTERM, stop)
    try:
      while queue or running:
        while queue and free and not stopping:
          job = queue.pop(0)
          slot = free.pop(0)
          command = [sys.executable, *common.TRAINER, *job.trainer_args]
          print(f"=== {job.name}: {' '.join(command)}", flush=True)
          piped = parallel > 1
          proc = subprocess.Popen(command, env=dict(os.environ, **slots[slot]), text=True,
                                  stdout=subprocess.PIPE if piped else None,
                                  stderr=subprocess.STDOUT if piped else None)
          if piped:
            threading.Thread(target=_pump, args=(proc.stdout, job.name), daemon=True).start()
          on_start(job.name, proc.pid)
          running[job.name] = (proc, slot)
        for name, (proc, slot) in list(running.items()):
          if proc.poll() is not None:
            on_end(name, proc.returncode)
            code = proc.returncode or code
            print(f"=== {name}: "
                  f"{'finished' if proc.returncode == 0 else f'exit status {proc.returncode}'}",
                  flush=True)
            del running[name]
            free.append(slot)
        if stopping and not running:
          break
        time.sleep(0.2)
    except KeyboardInterrupt:
      stop(signal.SIGINT, None)
      for name, (proc, _) in running.items():
        on_end(name, proc.wait() or 1)
      raise
    finally:
      signal.signal(signal.SIGTERM, previous)
    return code


def launch(argv: list[str]) -> int:
  return common.launch(LocalTarget, argv)


def main():
  common.main("launch/local.py", launch)
