"""A sweep from files to running trials: load, validate every trial, record, then dispatch.

Nothing starts (and nothing is written) until every trial's config has been built and validated
for the target's processes and devices and the manifest agrees with what already ran under the
root. The trials run through a launch target (mimjax.launch.targets), as launch/KIND.py runs one.
"""
import os

from mimjax import config_lib
from mimjax import data
from mimjax import errors
from mimjax.launch import common
from mimjax.launch import local
from mimjax.sweeps import manifest as manifest_lib
from mimjax.sweeps import progress as progress_lib
from mimjax.sweeps import trials as trials_lib
from mimjax.sweeps.trials import SweepError

START, RESUME, SKIP = "start", "resume", "skip (done)"
RESERVED_FLAGS = ("--workdir", "--config=", "--config ")


def _check_trainer_flags(trainer_flags: list[str]):
  for flag in trainer_flags:
    if flag.startswith(RESERVED_FLAGS) or flag == "--config":
      raise SweepError(f"{flag!r} after --: the sweep sets --config and --workdir of each trial; "
                       "give the config with --config and the root with --root")
    if not flag.startswith("-"):
      raise SweepError(f"{flag!r} after --: trainer flags look like --config.KEY=VALUE")


def _total_steps(config, cache: dict) -> int:
  if config.total_steps:
    return config.total_steps
  key = config.input.to_json()
  if key not in cache:
    cache[key] = data.num_examples(config.input)
  return config_lib.steps(config, cache[key])[0]


def build_trials(base: trials_lib.Base, sweep_overrides: list[dict], existing: dict | None,
                 num_processes: int, num_devices: int) -> list[trials_lib.Trial]:
  """Every trial named, its config built as its trainer will and validated; SweepError names
  the first trial that cannot run."""
  swept_and_fixed = sorted({k for o in sweep_overrides for k in o} &
                           {f.split("=", 1)[0][len("--config."):] for f in base.config_flags})
  if swept_and_fixed:
    raise SweepError(f"config.{swept_and_fixed[0]} is swept and also set after --: drop one")
  trials = []
  for index, overrides in enumerate(sweep_overrides):
    trial = trials_lib.Trial(f"#{index}", overrides)
    trial.config = trials_lib.resolve(base, trial)
    # The values as the config holds them (an int given for a float key becomes a float).
    trial.overrides = {k: trials_lib.get_value(trial.config, k) for k in overrides}
    trials.append(trial)
  names = manifest_lib.assign_names(existing, [t.overrides for t in trials])
  cache = {}
  for trial, name in zip(trials, names):
    trial.name = name
    try:
      config_lib.validate(trial.config, num_processes, num_devices)
      trial.total_steps = _total_steps(trial.config, cache)
    except errors.UserError as e:
      raise SweepError(f"{trial.label()}: {e}") from None
  trials_lib.check_distinct(trials)
  return trials


def _actions(root: str, manifest: dict, trials: list[trials_lib.Trial]) -> dict[str, str]:
  entries = {t["name"]: t for t in manifest["trials"]}
  actions = {}
  for trial in trials:
    p = progress_lib.progress(root, entries[trial.name])
    if p.running_here:
      raise SweepError(f"{trial.label()} is running (another sweep command started it): let that "
                       "command finish, or stop it, before running this sweep again")
    if p.status == progress_lib.DONE:
      actions[trial.name] = SKIP
    elif p.checkpoint_step:
      actions[trial.name] = f"{RESUME} from step {p.checkpoint_step}"
    else:
      actions[trial.name] = START
  return actions


def _jobs(target: common.LaunchTarget, base: trials_lib.Base, root: str,
          trials: list[trials_lib.Trial]) -> list[common.Job]:
  """The trials as the target's jobs, their config file named as the target's hosts see it."""
  path, sep, arg = base.config.partition(":")
  seen = trials_lib.Base(target.config_path(path) + sep + arg, base.flags)
  return [common.Job(t.name, t.trainer_args(seen, manifest_lib.workdir(root, t.name)),
                     manifest_lib.workdir(root, t.name), t.label()) for t in trials]


def launch(config: str, sweep: str, root: str, trainer_flags: list[str],
           target: common.LaunchTarget | None = None, parallel: int | None = None,
           dry_run: bool = False) -> int:
  """Runs (or with `dry_run` lists) the sweep on `target` (default: this machine); returns the
  exit status for the command line."""
  target = target or local.LocalTarget()
  _check_trainer_flags(trainer_flags)
  if "://" not in root:
    root = os.path.abspath(root)  # the trials may start elsewhere (SLURM nodes)
  target.side_by_side(parallel)
  base = trials_lib.Base(trials_lib.absolute_config_spec(config), tuple(trainer_flags))
  sweep_overrides = trials_lib.load_sweep(sweep)
  trials_lib.parse_config(base.config, base.config_flags)  # the base alone must parse
  existing = manifest_lib.read(root)
  num_devices = target.num_devices
  trials = build_trials(base, sweep_overrides, existing, target.num_processes, num_devices)
  manifest = manifest_lib.merge(existing, base, trials)
  actions = _actions(root, manifest, trials)
  jobs = _jobs(target, base, root, [t for t in trials if actions[t.name] != SKIP])

  width = max(len(t.name) for t in trials)
  print(f"{len(trials)} trials under {root} ({num_devices} device(s) each):")
  for trial in trials:
    print(f"  {trial.name.ljust(width)}  {actions[trial.name]:<22}  "
          f"{trials_lib.describe(trial.overrides)}")
  if dry_run:
    if jobs:
      print(f"\nWhat --target={target.kind} runs (without --dry_run):\n")
      print("\n".join(target.dry_run(jobs, root)))
    return 0
  if jobs:
    target.preflight(jobs, root)
    target.check_fits(jobs)  # e.g. the memory check of every trial, before a TPU slice exists
    common.check_workdir(root)
  manifest_lib.write(root, manifest)
  if not jobs:
    print("Every trial is done: see the results with --report", root)
    return 0
  code = target.run(
      jobs, root,
      on_start=lambda name, pid: progress_lib.mark(root, name, progress_lib.RUNNING, pid=pid),
      on_end=lambda name, code: progress_lib.mark(
          root, name, progress_lib.DONE if code == 0 else progress_lib.FAILED, code))
  if not target.waits:
    print(f"{len(jobs)} trial(s) queued on {target.kind}: follow them with --report {root}")
    return code
  entries = {t["name"]: t for t in manifest["trials"]}
  unfinished = [t.name for t in trials
                if progress_lib.progress(root, entries[t.name]).status != progress_lib.DONE]
  if unfinished:
    print(f"{len(unfinished)} trial(s) not finished: {', '.join(unfinished)} (see their output "
          "above); run the same command again to resume them")
    return 1
  print(f"All {len(trials)} trials done: python launch/sweep.py --report {root}")
  return 0
