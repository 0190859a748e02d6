"""What every launch target shares: arguments, config checks, code shipping, running workers.

A launcher is `python launch/TARGET.py [target flags] -- [mimjax-train flags]`. It checks the
tools it needs (gcloud, sbatch, git), the config against the target's device count and the
workdir before booking anything, ships this checkout's code (`git archive` of the working tree,
with the HEAD sha and the uncommitted diff recorded in WORKDIR/launch/), then starts
`mimjax.main ... --distributed` on every host.
`--dry_run` prints the commands (or script) it would run and touches nothing: no cloud call,
no storage check, no git archive (so it works offline, without gcloud or sbatch installed).

An expected error (a bad flag, a missing tool, a config that cannot run there) is one line,
`launch/TARGET.py: error: ...`, exit status 2; `--verbose` (before or after `--`) adds its
traceback.
"""
import argparse
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading

# The config checks import TensorFlow (through the configs).
from mimjax import tf_env  # pylint: disable=unused-import

from mimjax import errors
from mimjax import workdir_layout

# The checkout this package sits in: what the launchers ship (`git archive`) and run from.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRAINER = ("-m", "mimjax.main")
SHIPPED = workdir_layout.LAUNCH  # WORKDIR/launch/: the shipped code, its sha and uncommitted diff


class LaunchError(errors.UserError):
  """A launch that cannot go ahead; nothing has been started."""


# ---------------------------------------------------------------------------------------------
# Arguments.
# ---------------------------------------------------------------------------------------------
class ArgumentParser(argparse.ArgumentParser):
  """The launchers' argparse: a mistake is one line naming it (not the usage block), and every
  launcher takes --verbose."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.add_argument("--verbose", action="store_true",
                      help="Show the traceback of expected errors too.")

  def error(self, message):
    # A LaunchError, so that main() prints it as every other expected error (and --verbose works).
    raise LaunchError(f"{message} (see {self.prog} --help)")


_NO_TRAINER = ("put the mimjax-train flags after `--`, e.g. "
               "-- --config configs/mae.py:demo --workdir gs://BUCKET/run")


def parse(parser: ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  """(launcher args, trainer args) of `argv`: everything after `--` goes to mimjax-train.

  The launcher's own flags are parsed first, so that --help and a bad value answer even
  without `--`.
  """
  if "--" not in argv:
    parser.parse_known_args(argv)  # the trainer's flags given without `--` are the likely cause
    raise LaunchError(f"no trainer command: {_NO_TRAINER}")
  at = argv.index("--")
  args = parser.parse_args(argv[:at])
  trainer = argv[at + 1:]
  if not trainer:
    raise LaunchError("nothing after `--`: give the mimjax-train flags, e.g. "
                      "-- --config configs/mae.py:demo --workdir gs://BUCKET/run")
  return args, trainer


def flag_value(args: list[str], name: str) -> str | None:
  """The value of `--name=V` or `--name V` in `args` (the last one wins), else None."""
  value = None
  for i, arg in enumerate(args):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(args):
      value = args[i + 1]
  return value


def workdir_of(trainer_args: list[str]) -> str:
  workdir = flag_value(trainer_args, "workdir")
  if not workdir or flag_value(trainer_args, "config") is None:
    raise LaunchError("the trainer flags after `--` need --config and --workdir")
  return workdir


def check_shared_workdir(workdir: str, target: str, flag: str = "--workdir"):
  """A multi-host target's hosts share no disk: their workdir must be a URL (gs://...)."""
  if "://" not in workdir:
    raise LaunchError(f"{flag} {workdir} is a local path, but the hosts of a {target} share "
                      "no filesystem: use a bucket in the slice's region, e.g. "
                      f"{flag} gs://BUCKET/RUN")


def require_tool(name: str, what_to_do: str):
  """LaunchError unless the command `name` is on PATH: checked before anything starts."""
  if shutil.which(name) is None:
    raise LaunchError(f"{name} is not installed here (not on PATH): {what_to_do}")


# ---------------------------------------------------------------------------------------------
# The config against the target's devices: the same rules as the trainer's, before booking.
# ---------------------------------------------------------------------------------------------
def load_config(trainer_args: list[str]):
  """The config the trainer would run with (the config file plus --config.* overrides)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_args = ["launch"] + [a for i, a in enumerate(trainer_args) if a.startswith("--config")
                              or (i and trainer_args[i - 1] == "--config")]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=config_args)
  try:
    values(config_args)
  except Exception as e:  # pylint: disable=broad-except
    raise LaunchError(f"the config after `--`: {errors.config_error_message(e)}") from None
  return values.config


def check_config(config, num_devices: int, num_processes: int, target: str):
  """Raises LaunchError if the batch or mesh cannot run on `num_devices` devices."""
  batch, accum = config.input.batch_size, config.optim.accum_steps
  where = f"on the {num_devices} devices of {target}"
  if batch % num_processes:
    raise LaunchError(f"config.input.batch_size={batch} does not split over the "
                      f"{num_processes} hosts of {target}: use a multiple of {num_processes}")
  if batch % accum or (batch // accum) % num_devices:
    raise LaunchError(f"config.input.batch_size={batch} (micro-batch {batch // max(accum, 1)}) "
                      f"does not divide {where}: use a multiple of {num_devices * accum}")
  fsdp, data = config.mesh.fsdp, config.mesh.data
  if num_devices % fsdp:
    raise LaunchError(f"config.mesh.fsdp={fsdp} does not divide {where}")
  if data != -1 and data * fsdp != num_devices:
    raise LaunchError(f"config.mesh: data x fsdp = {data} x {fsdp} must equal the "
                      f"{num_devices} devices of {target} (or set config.mesh.data=-1)")


def check_workdir(workdir: str):
  """The bucket exists and the workdir takes a write, from where this command runs."""
  from mimjax import storage  # pylint: disable=g-import-not-at-top
  try:
    storage.check_writable(workdir)
  except storage.StorageError as e:
    raise LaunchError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# Shipping the code.
# ---------------------------------------------------------------------------------------------
_NOT_A_CHECKOUT = ("the launchers ship the code with `git archive`: run them from a git clone "
                   "of mimjax")


def _git(*args: str) -> str:
  try:
    return subprocess.run(["git", "-C", ROOT, *args], check=True, capture_output=True,
                          text=True).stdout
  except FileNotFoundError as e:
    raise LaunchError(f"git is not installed here (not on PATH): {_NOT_A_CHECKOUT}") from e
  except subprocess.CalledProcessError as e:
    said = errors.one_line(e.stderr or "") or f"exit status {e.returncode}"
    raise LaunchError(f"{ROOT} is not a git checkout with a commit (git {' '.join(args)}: "
                      f"{said}): {_NOT_A_CHECKOUT}") from e


def check_checkout():
  """LaunchError unless this code is a git checkout that `ship` can archive (cheap)."""
  _git("rev-parse", "--verify", "HEAD")


def ship(workdir: str, archive: str) -> str:
  """Writes this checkout (HEAD plus uncommitted changes) to `archive` (.tar.gz).

  The sha, the uncommitted diff and the archive itself go to WORKDIR/launch/, so that every run
  records exactly what code it ran. Returns the sha.
  """
  from mimjax import storage  # pylint: disable=g-import-not-at-top
  sha = _git("rev-parse", "HEAD").strip()
  tree = _git("stash", "create").strip() or sha  # a commit of the working tree; nothing changes
  _git("archive", "--format=tar.gz", f"--output={archive}", tree)
  diff = _git("diff", "HEAD", "--binary")
  untracked = _git("ls-files", "--others", "--exclude-standard").split()
  if untracked:
    print(f"launch: not shipped (untracked; `git add` them to ship): {' '.join(untracked[:10])}",
          file=sys.stderr)
  shipped = storage.path(workdir) / SHIPPED
  shipped.mkdir(parents=True, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  (shipped / "git_sha").write_text(sha + ("-dirty" if diff else "") + "\n")
  (shipped / f"uncommitted-{stamp}.diff").write_text(diff)
  storage.upload(archive, shipped / "code.tar.gz")
  return sha


def extract(archive: str, directory: str):
  os.makedirs(directory, exist_ok=True)
  subprocess.run(["tar", "-xzf", archive, "-C", directory], check=True)


# ---------------------------------------------------------------------------------------------
# Running workers: one local process per worker (the trainer itself, or an ssh into a host).
# ---------------------------------------------------------------------------------------------
def show(command: list[str]) -> str:
  return " ".join(shlex.quote(c) for c in command)


# Lines of the other workers worth showing: Python errors, CLI errors, absl/XLA error logs.
_ERROR_LINE = re.compile(r"Traceback|\w*Error\b|Exception\b|error:|Killed|FAILED|^E\d{4} ")


def run_workers(commands: list[list[str]], env: list[dict] | None = None,
                stop_all=None) -> int:
  """Runs one command per worker; streams worker 0's output and every worker's errors.

  Worker 0's lines are printed with a `[0]` prefix; the other workers' lines that read like
  errors with theirs. When one worker exits non-zero the others are stopped (`stop_all()` runs
  first, e.g. to kill remote processes) and its exit code is returned; else 0.
  """
  processes = [subprocess.Popen(c, env=(env[i] if env else None), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
               for i, c in enumerate(commands)]
  lock = threading.Lock()

  def stream(index, process):
    for line in process.stdout:
      if index == 0 or _ERROR_LINE.search(line):
        with lock:
          print(f"[{index}] {line}", end="", flush=True)

  readers = [threading.Thread(target=stream, args=(i, p), daemon=True)
             for i, p in enumerate(processes)]
  for r in readers:
    r.start()
  failed = None
  try:
    while failed is None and any(p.poll() is None for p in processes):
      for i, p in enumerate(processes):
        if p.poll() not in (None, 0):
          failed = i
          break
      else:
        threading.Event().wait(0.2)
    if failed is None:
      failed = next((i for i, p in enumerate(processes) if p.returncode), None)
  except KeyboardInterrupt:
    failed = -1
  if failed is not None:
    if stop_all:
      stop_all()
    for p in processes:
      if p.poll() is None:
        os.killpg(p.pid, 15)
    for p in processes:
      try:
        p.wait(timeout=30)
      except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
  for r in readers:
    r.join(timeout=5)
  if failed is None:
    return 0
  if failed == -1:
    return 130
  code = processes[failed].returncode
  print(f"launch: worker {failed} exited with {code}; stopped the others", file=sys.stderr,
        flush=True)
  return code if code > 0 else 128 - code


def main(prog: str, fn):
  """Runs `fn(sys.argv[1:])`, reporting a UserError in one line (exit 2); exits with its code.

  --verbose anywhere on the command line (the launcher's or the trainer's) adds the traceback.
  """
  sys.exit(errors.exit_on_user_error(prog, fn, sys.argv[1:]) or 0)
