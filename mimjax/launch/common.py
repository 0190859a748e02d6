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
import dataclasses
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from typing import ClassVar

# The config checks import TensorFlow (through the configs).
from mimjax import tf_env  # pylint: disable=unused-import

from mimjax import errors
from mimjax import workdir_layout

# The checkout this package sits in: what the launchers ship (`git archive`) and run from.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRAINER = ("-m", "mimjax.main")
SETUP = os.path.join(ROOT, "setup.py")  # the install set: pinned requirements, extras, Python
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


def min_python() -> tuple[int, int]:
  """The oldest Python the trainer runs on: setup.py's python_requires (">=3.11")."""
  with open(SETUP) as f:
    found = re.search(r"python_requires=\">=(\d+)\.(\d+)\"", f.read())
  return int(found.group(1)), int(found.group(2))


def require_tool(name: str, what_to_do: str):
  """LaunchError unless the command `name` is on PATH: checked before anything starts."""
  if shutil.which(name) is None:
    raise LaunchError(f"{name} is not installed here (not on PATH): {what_to_do}")


# ---------------------------------------------------------------------------------------------
# The target interface: what launch/TARGET.py and mimjax-sweep both use.
# ---------------------------------------------------------------------------------------------
REQUIRED = object()  # an option that launch/TARGET.py cannot do without


def option(default, help: str, launcher=None,  # pylint: disable=redefined-builtin
           minimum: int | None = None, maximum: int | None = None):
  """A target option: a dataclass field that is also a flag. `launcher` is its default in
  launch/TARGET.py when that differs from the sweep's (REQUIRED: the launcher needs it given);
  an integer's flag refuses a value below `minimum` or above `maximum`."""
  return dataclasses.field(default=default, metadata={"help": help, "launcher": launcher,
                                                      "range": (minimum, maximum)})


def integer(minimum: int | None = None, maximum: int | None = None):
  """An argparse `type`: an integer within [minimum, maximum] (None: no bound on that side)."""
  def parse(text: str) -> int:
    value = int(text)  # not an integer: argparse says "invalid int value: 'TEXT'"
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
      bound = (f">= {minimum}" if maximum is None else f"<= {maximum}" if minimum is None
               else f"in [{minimum}, {maximum}]")
      raise argparse.ArgumentTypeError(f"{value} is out of range: give an integer {bound}")
    return value
  parse.__name__ = "int"  # the name argparse's message gives the type
  return parse


def nonempty(text: str) -> str:
  """An argparse `type`: a name or path, which an empty string is not."""
  if not text:
    raise argparse.ArgumentTypeError("give a value, not an empty string")
  return text


@dataclasses.dataclass
class Job:
  """One trainer run: its name, its mimjax-train flags (--config and --workdir among them), its
  workdir, and how errors name it (a sweep's trial with its overrides)."""
  name: str
  trainer_args: list[str]
  workdir: str
  label: str = ""


@dataclasses.dataclass
class LaunchTarget:
  """Where runs start; a subclass is a dataclass whose `option` fields are its flags.

  launch/KIND.py runs one job through `launch`; mimjax-sweep runs a sweep's trials through the
  same methods, with the flags named `--{sweep_prefix}FIELD`.
  """
  kind: ClassVar[str]          # launch/KIND.py, mimjax-sweep --target=KIND
  sweep_prefix: ClassVar[str]  # its flags' prefix in mimjax-sweep
  waits: ClassVar[bool] = True  # run() returns once the runs end (not once they are queued)

  @classmethod
  def add_arguments(cls, parser: argparse.ArgumentParser, prefix: str = "",
                    launcher: bool = True):
    """The target's options as flags `--{prefix}FIELD` (with the launcher's defaults)."""
    for f in dataclasses.fields(cls):
      if "help" not in f.metadata:
        continue
      default = f.default
      if launcher and f.metadata["launcher"] is not None:
        default = f.metadata["launcher"]
      kwargs = dict(dest=prefix + f.name, help=f.metadata["help"])
      if default is REQUIRED:
        kwargs["required"] = True
      else:
        kwargs["default"] = default
      if isinstance(f.default, bool):
        kwargs["action"] = "store_true"
      elif isinstance(f.default, tuple):
        kwargs.update(action="append", default=list(f.default), type=nonempty)
      elif f.type in (int, int | None):
        kwargs["type"] = integer(*f.metadata["range"])
      elif f.type in (str, str | None):
        kwargs["type"] = nonempty
      parser.add_argument(f"--{prefix}{f.name}", **kwargs)

  @classmethod
  def from_args(cls, args: argparse.Namespace, prefix: str = ""):
    values = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)
              if "help" in f.metadata}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

  # What each run gets: the config must divide over these (the trainer's own checks).
  @property
  def num_processes(self) -> int:
    raise NotImplementedError

  @property
  def num_devices(self) -> int:
    raise NotImplementedError

  @property
  def label(self) -> str:
    """The target in messages, e.g. `v4-16 (2 hosts x 4 chips)`."""
    raise NotImplementedError

  def side_by_side(self, parallel: int | None):
    """Prepares for `parallel` runs at once (None: the target's default); LaunchError when the
    target cannot run that many."""

  def check(self, config, label: str = ""):
    """The config against each run's processes and devices: config_lib.validate, as the trainer
    will (the data is checked where the runs read it)."""
    from mimjax import config_lib  # pylint: disable=g-import-not-at-top
    try:
      config_lib.validate(config, self.num_processes, self.num_devices, check_data=False)
    except errors.UserError as e:
      raise LaunchError(f"{label or 'the config'} cannot run on {self.label}: {e}") from None

  def config_path(self, path: str) -> str:
    """The config file as the runs' hosts name it (this machine's path by default)."""
    return path

  def dry_run(self, jobs: list[Job], records: str) -> list[str]:
    """The commands (or script) that `run` would run: what --dry_run prints."""
    raise NotImplementedError

  def preflight(self, jobs: list[Job], records: str):
    """Before anything is booked: the tools it needs, the checkout it ships (LaunchError)."""

  def check_fits(self, jobs: list[Job]):
    """Each run fits in the devices' memory (LaunchError naming the job), where that can be
    known before booking them."""

  def run(self, jobs: list[Job], records: str, on_start=None, on_end=None) -> int:
    """Runs `jobs` (shipping this checkout, recorded in RECORDS/launch/, where the target runs
    a copy); `on_start(name, pid)` and `on_end(name, exit code)` follow each run where the
    target sees it. Returns the exit status for the command line."""
    raise NotImplementedError


def launcher_parser(target: type[LaunchTarget]) -> ArgumentParser:
  """launch/KIND.py's flags: the target's options, --dry_run, --verbose."""
  module = sys.modules[target.__module__]
  p = ArgumentParser(prog=f"launch/{target.kind}.py", description=module.__doc__.split("\n\n")[0])
  target.add_arguments(p)
  p.add_argument("--dry_run", action="store_true",
                 help="Print the commands (or script); start nothing.")
  return p


def launch(target_class: type[LaunchTarget], argv: list[str]) -> int:
  """launch/KIND.py: one run of mimjax-train on the target; checks first, before anything is
  booked (the tools, the checkout, the config, the workdir); --dry_run only prints."""
  args, trainer_args = parse(launcher_parser(target_class), argv)
  target = target_class.from_args(args)
  workdir = workdir_of(trainer_args)
  job = Job(os.path.basename(workdir.rstrip("/")) or workdir, trainer_args, workdir)
  if args.dry_run:
    print("\n".join(target.dry_run([job], workdir)))
    return 0
  target.preflight([job], workdir)
  target.check(load_config(trainer_args))
  target.check_fits([job])
  check_workdir(workdir)
  return target.run([job], workdir)


# ---------------------------------------------------------------------------------------------
# The config the trainer would run with, and the workdir it would write.
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
