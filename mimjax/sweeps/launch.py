"""A sweep from files to running trials: load, validate every trial, record, then dispatch.

Nothing starts (and nothing is written) until every trial's config has been built and validated
and the manifest agrees with what already ran under the root.
"""
import os

from mimjax import config_lib
from mimjax import data
from mimjax import errors
from mimjax.sweeps import local
from mimjax.sweeps import manifest as manifest_lib
from mimjax.sweeps import progress as progress_lib
from mimjax.sweeps import slurm
from mimjax.sweeps import tpu
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


def launch(config: str, sweep: str, root: str, trainer_flags: list[str], target: str = "local",
           parallel: int | None = None, dry_run: bool = False,
           slurm_options: slurm.Options = slurm.Options(),
           tpu_options: tpu.Options = tpu.Options()) -> int:
  """Runs (or with `dry_run` lists) the sweep; returns the exit status for the command line."""
  _check_trainer_flags(trainer_flags)
  if "://" not in root:
    root = os.path.abspath(root)  # the trials may start elsewhere (SLURM nodes)
  if target == "tpu" and parallel not in (None, 1):
    raise SweepError(f"--parallel={parallel} with --target=tpu: the trials run in turn on one "
                     "slice (its chips serve one trainer); drop --parallel")
  tpu_target = tpu.Target(tpu_options, root) if target == "tpu" else None
  devices = local.cpu_only() if target == "local" else None
  probe = local.start_probe() if target == "local" and devices is None else None
  try:
    base = trials_lib.Base(trials_lib.absolute_config_spec(config), tuple(trainer_flags))
    sweep_overrides = trials_lib.load_sweep(sweep)
    trials_lib.parse_config(base.config, base.config_flags)  # the base alone must parse
    existing = manifest_lib.read(root)
  except BaseException:
    if probe is not None:
      probe.kill()
      probe.wait()
    raise
  if probe is not None:
    devices = local.finish_probe(probe)
  if target == "local":
    num_processes, num_devices = 1, local.share(devices, parallel or 1)
  elif tpu_target:
    num_processes, num_devices = tpu_target.num_processes, tpu_target.num_devices
  else:
    num_processes, num_devices = slurm_options.nodes, slurm_options.num_devices()
  trials = build_trials(base, sweep_overrides, existing, num_processes, num_devices)
  manifest = manifest_lib.merge(existing, base, trials)
  actions = _actions(root, manifest, trials)
  todo = [t for t in trials if actions[t.name] != SKIP]
  if tpu_target:  # trainer flags for the workers, which run the shipped checkout
    shipped = tpu_target.base(base)
    jobs = [(t.name, t.trainer_args(shipped, manifest_lib.workdir(root, t.name))) for t in todo]
  else:
    jobs = [(t.name, t.command(base, manifest_lib.workdir(root, t.name))) for t in todo]

  width = max(len(t.name) for t in trials)
  print(f"{len(trials)} trials under {root} ({num_devices} device(s) each):")
  for trial in trials:
    print(f"  {trial.name.ljust(width)}  {actions[trial.name]:<22}  "
          f"{trials_lib.describe(trial.overrides)}")
  script = slurm.render(jobs, root, slurm_options, parallel) if target == "slurm" and jobs else None
  if dry_run:
    if script:
      print(f"\nThe array job (submitted without --dry_run):\n\n{script}")
    elif tpu_target and jobs:
      print("\nThe gcloud commands (run without --dry_run):\n")
      print("\n".join(tpu_target.plan(jobs)))
    else:
      for name, command in jobs:
        print(f"\n{name}:\n  {' '.join(command)}")
    return 0
  if tpu_target:
    tpu_target.check(trials, jobs)  # the memory check of every trial, before the slice exists
  manifest_lib.write(root, manifest)
  if not jobs:
    print("Every trial is done: see the results with --report", root)
    return 0
  if target == "slurm":
    job_id = slurm.submit(script, root)
    print(f"Submitted array job {job_id}: {len(jobs)} tasks; watch it with `squeue -j {job_id}`, "
          f"results with --report {root}")
    return 0
  if tpu_target:
    tpu_target.run(jobs)
  else:
    local.run(root, jobs, devices, parallel or 1)
  entries = {t["name"]: t for t in manifest["trials"]}
  unfinished = [t.name for t in trials
                if progress_lib.progress(root, entries[t.name]).status != progress_lib.DONE]
  if unfinished:
    print(f"{len(unfinished)} trial(s) not finished: {', '.join(unfinished)} (see their output "
          "above); run the same command again to resume them")
    return 1
  print(f"All {len(trials)} trials done: python launch/sweep.py --report {root}")
  return 0
