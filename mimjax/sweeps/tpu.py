"""The TPU target: every trial in turn on one Cloud TPU VM slice, through mimjax.launch.tpu.

The slice is created once, this checkout shipped (recorded in ROOT/launch/) and installed once;
each trial's trainer then runs on all the slice's hosts exactly as `launch/tpu.py` runs one
(`--distributed`, worker 0's log streamed, a preempted spot slice recreated and the trial
resumed); after the last trial the slice is deleted unless `keep`. The root is on gs://: the
workers write there and this machine reads the trials' progress from there.
"""
import dataclasses
import os

from mimjax.launch import common
from mimjax.launch import tpu as tpu_launch
from mimjax.sweeps import manifest as manifest_lib
from mimjax.sweeps import progress
from mimjax.sweeps import trials as trials_lib

CHECKOUT = common.ROOT  # what the slice gets: config files must be inside it


@dataclasses.dataclass(frozen=True)
class Options:
  """launch/tpu.py's own flags, as the sweep command takes them."""
  name: str = ""
  zone: str = ""
  accelerator_type: str = ""
  spot: bool = False
  keep: bool = False
  skip_compile_check: bool = False

  def argv(self) -> list[str]:
    missing = [f"--{k}" for k in ("name", "zone", "accelerator_type") if not getattr(self, k)]
    if missing:
      raise trials_lib.SweepError(f"--target=tpu needs {' '.join(missing)}: the slice to create, "
                                  "e.g. --name=sweep --zone=us-central1-a "
                                  "--accelerator_type=v5litepod-8")
    switches = [f"--{k}" for k in ("spot", "keep", "skip_compile_check") if getattr(self, k)]
    return ["--name", self.name, "--zone", self.zone, "--accelerator_type",
            self.accelerator_type, *switches]


class Target:
  """One slice for the whole sweep."""

  def __init__(self, options: Options, root: str):
    self.args = tpu_launch.parser().parse_args(options.argv())
    self.slice = tpu_launch.TpuVm(self.args)
    self.root = root
    common.check_shared_workdir(root, "TPU slice", flag="--root")

  @property
  def num_processes(self) -> int:
    return self.slice.hosts

  @property
  def num_devices(self) -> int:
    return self.slice.hosts * self.slice.devices_per_host

  def base(self, base: trials_lib.Base) -> trials_lib.Base:
    """`base` with its config file named inside the checkout, where the workers unpack it."""
    path, sep, arg = base.config.partition(":")
    relative = os.path.relpath(path, CHECKOUT)
    if relative.startswith(".."):
      raise trials_lib.SweepError(f"--config {path} is outside this checkout ({CHECKOUT}), which "
                                  "is what the slice gets: put the config file under configs/")
    return trials_lib.Base(relative + sep + arg, base.flags)

  def check(self, trials: list[trials_lib.Trial], jobs: list[tuple[str, list[str]]]):
    """The root takes a write, and each trial still to run fits in the chips' memory
    (mimjax.compile, unless skip_compile_check); else a UserError, before the slice exists."""
    tpu_launch.require_gcloud()
    common.check_checkout()
    common.check_workdir(self.root)
    labels = {t.name: t.label() for t in trials}
    for name, trainer_args in jobs:
      try:
        tpu_launch.check_fits(tpu_launch.compile_check(self.args, trainer_args),
                               f"{self.slice.label} for {labels[name]}")
      except common.LaunchError as e:
        raise trials_lib.SweepError(str(e)) from None

  def plan(self, jobs: list[tuple[str, list[str]]]) -> list[str]:
    """What --dry_run prints: the memory checks, then the gcloud commands, in order."""
    show = common.show
    checks = [tpu_launch.compile_check(self.args, args) for _, args in jobs]
    commands = [c for c in checks if c] + tpu_launch.plan(
        self.slice, [(args, manifest_lib.workdir(self.root, name)) for name, args in jobs])
    return [f"# {self.slice.label}; code: git archive of this checkout, recorded in "
            f"{self.root}/launch/", *[show(c) for c in commands]]

  def run(self, jobs: list[tuple[str, list[str]]]):
    """Runs `jobs` (trial name, trainer args) in turn on the slice, then deletes it (unless keep).

    A trial that fails is marked so and the next one runs; Ctrl-C stops the trainers (they save)
    and ends the sweep.
    """
    archive = tpu_launch.ship(self.slice, self.root)
    code = 0
    try:
      for name, trainer_args in jobs:
        print(f"=== {name}: {' '.join(trainer_args)}", flush=True)
        # The launcher's pid: the trial counts as running while this command lives.
        progress.mark(self.root, name, progress.RUNNING, pid=os.getpid())
        code = tpu_launch.run(self.slice, archive, trainer_args,
                               manifest_lib.workdir(self.root, name))
        progress.mark(self.root, name, progress.DONE if code == 0 else progress.FAILED, code)
        print(f"=== {name}: {'finished' if code == 0 else f'exit status {code}'}", flush=True)
        if code == 130:  # interrupted
          break
    finally:
      tpu_launch.finish(self.slice, code)

