"""The local target: trials one after another, or K side by side on disjoint device sets.

Each trial is its own trainer process. With `parallel=K` the devices this machine's JAX sees are
split into K equal sets (CUDA_VISIBLE_DEVICES on GPUs; on CPU each trial gets its share of
`--xla_force_host_platform_device_count` virtual devices) and a trial starts as soon as a set is
free. SIGTERM or Ctrl-C is passed on to the running trials, which save a checkpoint and exit.
"""
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from mimjax.sweeps import progress
from mimjax.sweeps import trials as trials_lib

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


def start_probe() -> subprocess.Popen:
  """Asks a short-lived process which devices a trainer started here would see.

  Not in this process: initializing a GPU or TPU backend here would hold memory (or the TPU
  itself) that the trials need.
  """
  return subprocess.Popen([sys.executable, "-c", PROBE], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def finish_probe(proc: subprocess.Popen) -> Devices:
  out, err = proc.communicate()
  if proc.returncode != 0:
    raise trials_lib.SweepError("could not list this machine's JAX devices: "
                                f"{err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
  platform, count = json.loads(out.strip().splitlines()[-1])
  return Devices(platform, count)


def share(devices: Devices, parallel: int) -> int:
  """The devices each of `parallel` side-by-side trials gets."""
  if parallel < 1:
    raise trials_lib.SweepError(f"--parallel={parallel}: must be >= 1")
  if devices.platform == "cpu":
    return max(devices.count // parallel, 1)  # virtual devices: every trial can have some
  if parallel > 1 and devices.platform == "tpu":
    raise trials_lib.SweepError("--parallel > 1 on a TPU host: the chips of one host serve one "
                                "process; run the trials in turn (--parallel=1)")
  if devices.count % parallel:
    raise trials_lib.SweepError(f"--parallel={parallel} does not divide the {devices.count} "
                                f"{devices.platform} devices: use a divisor of {devices.count}")
  return devices.count // parallel


def _slot_envs(devices: Devices, parallel: int) -> list[dict[str, str]]:
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


def _pump(stream, prefix: str):
  for line in stream:
    sys.stdout.write(f"[{prefix}] {line}")
    sys.stdout.flush()


def run(root: str, jobs: list[tuple[str, list[str]]], devices: Devices, parallel: int = 1
        ) -> dict[str, int]:
  """Runs `jobs` (trial name, trainer command); returns each started trial's exit status."""
  slots = _slot_envs(devices, parallel)
  free = list(range(len(slots)))
  queue = list(jobs)
  running = {}  # name -> (process, slot)
  results = {}
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
        name, command = queue.pop(0)
        slot = free.pop(0)
        print(f"=== {name}: {' '.join(command)}", flush=True)
        env = dict(os.environ, **slots[slot])
        piped = parallel > 1
        proc = subprocess.Popen(command, env=env, text=True,
                                stdout=subprocess.PIPE if piped else None,
                                stderr=subprocess.STDOUT if piped else None)
        if piped:
          threading.Thread(target=_pump, args=(proc.stdout, name), daemon=True).start()
        progress.mark(root, name, progress.RUNNING, pid=proc.pid)
        running[name] = (proc, slot)
      for name, (proc, slot) in list(running.items()):
        if proc.poll() is not None:
          results[name] = proc.returncode
          progress.mark(root, name, progress.DONE if proc.returncode == 0 else progress.FAILED,
                        proc.returncode)
          print(f"=== {name}: {'finished' if proc.returncode == 0 else f'exit status {proc.returncode}'}",
                flush=True)
          del running[name]
          free.append(slot)
      if stopping and not running:
        break
      time.sleep(0.2)
  except KeyboardInterrupt:
    stop(signal.SIGINT, None)
    for name, (proc, _) in running.items():
      results[name] = proc.wait()
      progress.mark(root, name, progress.FAILED, results[name])
    raise
  finally:
    signal.signal(signal.SIGTERM, previous)
  return results
