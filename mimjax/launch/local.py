r"""Runs a multi-host command on this machine: N processes connected on 127.0.0.1.

  python launch/local.py --processes 2 -- --config configs/mae.py:demo --workdir workdirs/mae2

Each process gets its share of the devices: on CPU `--devices_per_process` host devices, on
GPUs a disjoint CUDA_VISIBLE_DEVICES slice. The code runs from a snapshot of this checkout
(`git archive`; sha and uncommitted diff recorded in WORKDIR/launch/), as on a cluster. Process
0's output is shown, and every process's errors; when one fails the others are stopped and its
exit code returned. The free way to try a TPU-pod or SLURM command before booking one.
"""
import os
import socket
import sys
import tempfile

from mimjax.launch import common


def _parser():
  p = common.ArgumentParser(prog="launch/local.py", description=__doc__.split("\n\n")[0])
  p.add_argument("--processes", type=int, default=2, help="How many trainer processes.")
  p.add_argument("--devices_per_process", type=int, default=1,
                 help="CPU only: host devices per process (XLA's forced device count).")
  p.add_argument("--gpus", type=int, default=None,
                 help="GPUs on this machine to split between the processes (default: none, CPU).")
  p.add_argument("--port", type=int, default=None, help="Coordinator port (default: a free one).")
  p.add_argument("--dry_run", action="store_true", help="Print the commands; start nothing.")
  return p


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def commands(args, trainer_args, code_dir: str) -> tuple[list[list[str]], list[dict]]:
  """One trainer command and environment per process."""
  n = args.processes
  port = args.port or _free_port()
  cmds, envs = [], []
  for i in range(n):
    cmds.append([sys.executable, *common.TRAINER, *trainer_args, "--distributed",
                 f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={n}",
                 f"--process_id={i}"])
    env = {"PYTHONPATH": code_dir}
    if args.gpus:
      share = args.gpus // n
      env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(i * share, (i + 1) * share))
    else:
      env["JAX_PLATFORMS"] = "cpu"
      env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices_per_process}"
    envs.append(env)
  return cmds, envs


def launch(argv: list[str]) -> int:
  args, trainer_args = common.parse(_parser(), argv)
  if args.processes < 1:
    raise common.LaunchError(f"--processes={args.processes}: must be >= 1")
  if args.gpus is not None and (args.gpus < args.processes or args.gpus % args.processes):
    raise common.LaunchError(f"--gpus={args.gpus} does not split over --processes="
                             f"{args.processes}: use a multiple of it")
  workdir = common.workdir_of(trainer_args)
  devices = (args.gpus or args.devices_per_process * args.processes)
  snapshot = "<snapshot of this checkout>" if args.dry_run else tempfile.mkdtemp(
      prefix="mimjax_code_")
  cmds, envs = commands(args, trainer_args, snapshot)
  if args.dry_run:
    print(f"# ship: git archive of this checkout -> {snapshot}; sha and diff -> "
          f"{workdir}/{common.SHIPPED}/")
    for cmd, env in zip(cmds, envs):
      print(" ".join(f"{k}={v}" for k, v in env.items()), common.show(cmd))
    return 0
  common.check_checkout()
  common.check_config(common.load_config(trainer_args), devices, args.processes,
                      f"{args.processes} local processes")
  common.check_workdir(workdir)
  archive = os.path.join(snapshot, "code.tar.gz")
  sha = common.ship(workdir, archive)
  common.extract(archive, snapshot)
  print(f"launch: {args.processes} processes, code {sha[:12]} from {snapshot}", flush=True)
  return common.run_workers(cmds, [dict(os.environ, **env) for env in envs])


def main():
  common.main("launch/local.py", launch)
