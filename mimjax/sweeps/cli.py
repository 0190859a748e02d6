r"""mimjax-sweep (launch/sweep.py): runs a config sweep, resumably, and reports on it.

  python launch/sweep.py --config configs/mae.py:demo --sweep configs/sweeps/mae_demo.py \
      --root workdirs/mae_sweep [--parallel 2] [--dry_run] [-- --config.total_steps=100]
  python launch/sweep.py --report workdirs/mae_sweep

Every trial's config is built and validated before the first trial starts. Each trial trains in
ROOT/<name from its overrides>; ROOT/sweep.json records the base config and the trials. The same
command again skips finished trials, resumes unfinished ones and starts new ones. Flags after
`--` go to every trial's trainer.

Targets (mimjax.launch.targets; each takes its launcher's options, named `--local_*`,
`--slurm_*` and, for tpu, as launch/tpu.py names them): `--target=local` (default) runs the
trials here, `--parallel` at a time on disjoint device sets; `--target=slurm` submits one array
job (at most `--parallel` tasks at once), each task requeued and resumed as launch/slurm.py's
job is; `--target=tpu` creates one Cloud TPU VM slice and runs the trials on it in turn (a
gs:// root):

  python launch/sweep.py --config configs/mae.py:demo --sweep configs/sweeps/mae_demo.py \
      --root gs://BUCKET/mae_sweep --target tpu --name sweep --zone us-central1-a \
      --accelerator_type v5litepod-8 [--spot] [--keep]
"""
import sys

from mimjax import tf_env  # pylint: disable=unused-import  (first: before TensorFlow and jax)

from mimjax import errors  # pylint: disable=g-import-not-at-top,wrong-import-position
from mimjax.launch import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from mimjax.launch import targets  # pylint: disable=g-import-not-at-top,wrong-import-position

PROG = "mimjax-sweep"


def parser() -> common.ArgumentParser:
  p = common.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
  p.add_argument("--config", type=common.nonempty,
                 help="The base config: configs/NAME.py[:ARG], as for mimjax-train.")
  p.add_argument("--sweep", type=common.nonempty,
                 help="A file defining get_sweep(arg=None): FILE.py[:ARG].")
  p.add_argument("--root", type=common.nonempty,
                 help="The sweep's directory (local or gs://): a workdir per trial.")
  p.add_argument("--target", default="local", choices=sorted(targets.TARGETS),
                 help="Where the trials run.")
  p.add_argument("--parallel", type=common.integer(minimum=1), default=None,
                 help="Trials at once: local default 1 (each gets 1/K of the devices); slurm "
                 "default no limit (the array's %%K).")
  p.add_argument("--dry_run", action="store_true",
                 help="List the trials and their commands (the sbatch script, the gcloud "
                 "commands); start and write nothing.")
  p.add_argument("--report", default=None, type=common.nonempty,
                 help="Print the table of the sweep at this root and write ROOT/report.csv and "
                 "ROOT/report.png (nothing else happens).")
  for target in targets.TARGETS.values():
    group = p.add_argument_group(f"--target={target.kind}")
    target.add_arguments(group, prefix=target.sweep_prefix, launcher=False)
  return p


def _launch(argv: list[str]):
  at = argv.index("--") if "--" in argv else len(argv)
  args, trainer_flags = parser().parse_args(argv[:at]), argv[at + 1:]
  if args.report:
    # Imported here: the config machinery pulls in JAX and TensorFlow, which a report does without.
    from mimjax.sweeps import report  # pylint: disable=g-import-not-at-top
    print(report.write(args.report))
    print(f"\nwrote {args.report}/{report.CSV_NAME} and {args.report}/{report.PNG_NAME}")
    return 0
  from mimjax.sweeps import trials  # pylint: disable=g-import-not-at-top
  missing = [f"--{name}" for name in ("config", "sweep", "root") if not getattr(args, name)]
  if missing:
    raise trials.SweepError(f"{' '.join(missing)} missing: give --config, --sweep and --root "
                            "(or --report ROOT)")
  target_class = targets.TARGETS[args.target]
  target = target_class.from_args(args, prefix=target_class.sweep_prefix)
  from mimjax.sweeps import launch  # pylint: disable=g-import-not-at-top
  return launch.launch(config=args.config, sweep=args.sweep, root=args.root,
                       trainer_flags=trainer_flags, target=target, parallel=args.parallel,
                       dry_run=args.dry_run)


def main():
  errors.quiet_library_logs()
  common.main(PROG, _launch)


if __name__ == "__main__":
  main()
