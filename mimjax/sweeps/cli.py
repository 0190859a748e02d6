r"""mimjax-sweep (launch/sweep.py): runs a config sweep, resumably, and reports on it.

  python launch/sweep.py --config configs/mae.py:demo --sweep configs/sweeps/mae_demo.py \
      --root workdirs/mae_sweep [--parallel 2] [--dry_run] [-- --config.total_steps=100]
  python launch/sweep.py --report workdirs/mae_sweep

Every trial's config is built and validated before the first trial starts. Each trial trains in
ROOT/<name from its overrides>; ROOT/sweep.json records the base config and the trials. The same
command again skips finished trials, resumes unfinished ones and starts new ones. Flags after
`--` go to every trial's trainer.

Targets: `--target=local` (default) runs the trials here, `--parallel` at a time on disjoint
device sets; `--target=slurm` submits one array job (at most `--parallel` tasks at once);
`--target=tpu` creates one Cloud TPU VM slice and runs the trials on it in turn (a gs:// root):

  python launch/sweep.py --config configs/mae.py:demo --sweep configs/sweeps/mae_demo.py \
      --root gs://BUCKET/mae_sweep --target tpu --name sweep --zone us-central1-a \
      --accelerator_type v5litepod-8 [--spot] [--keep]
"""
import sys

from mimjax import tf_env  # pylint: disable=unused-import  (first: before TensorFlow and jax)

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from mimjax import errors

TARGETS = ("local", "slurm", "tpu")

flags.DEFINE_string("config", None, "The base config: configs/NAME.py[:ARG], as for mimjax-train.")
flags.DEFINE_string("sweep", None, "A file defining get_sweep(arg=None): FILE.py[:ARG].")
flags.DEFINE_string("root", None, "The sweep's directory (local or gs://): a workdir per trial.")
flags.DEFINE_enum("target", "local", TARGETS, "Where the trials run.")
flags.DEFINE_integer("parallel", None, "Trials at once: local default 1 (each gets 1/K of the "
                     "devices); slurm default no limit (the array's %K).")
flags.DEFINE_bool("dry_run", False, "List the trials and their commands (the sbatch script, the "
                  "gcloud commands); "
                  "start and write nothing.")
flags.DEFINE_string("report", None, "Print the table of the sweep at this root and write "
                    "ROOT/report.csv and ROOT/report.png (nothing else happens).")
errors.define_verbose_flag()
flags.DEFINE_integer("slurm_nodes", 1, "slurm: nodes per trial.")
flags.DEFINE_integer("slurm_gpus_per_node", 0, "slurm: GPUs per node (0: no --gpus-per-node).")
flags.DEFINE_integer("slurm_cpus_per_task", 0, "slurm: CPUs per task (0: the default).")
flags.DEFINE_string("slurm_time", "", "slurm: time limit per trial, e.g. 24:00:00.")
flags.DEFINE_string("slurm_partition", "", "slurm: the partition.")
flags.DEFINE_string("slurm_account", "", "slurm: the account.")
flags.DEFINE_multi_string("slurm_sbatch", [], "slurm: a further #SBATCH option, e.g. --qos=high.")
flags.DEFINE_string("name", None, "tpu: the slice (TPU VM) to create for the sweep.")
flags.DEFINE_string("zone", None, "tpu: the slice's zone, e.g. us-central1-a (the bucket's region).")
flags.DEFINE_string("accelerator_type", None, "tpu: e.g. v5litepod-8, v4-32.")
flags.DEFINE_bool("spot", False, "tpu: spot capacity; a preempted slice is recreated and the "
                  "trial resumed.")
flags.DEFINE_bool("keep", False, "tpu: keep the slice after the last trial (it bills).")
flags.DEFINE_bool("skip_compile_check", False, "tpu: do not check with mimjax.compile that each "
                  "trial fits in the chips' memory.")
FLAGS = flags.FLAGS

PROG = "mimjax-sweep"


def _launch(argv: list[str]):
  # Imported here: the config machinery pulls in JAX and TensorFlow, which --help and
  # --report do without.
  from mimjax.sweeps import trials
  if FLAGS.report:
    from mimjax.sweeps import report
    print(report.write(FLAGS.report))
    print(f"\nwrote {FLAGS.report}/{report.CSV_NAME} and {FLAGS.report}/{report.PNG_NAME}")
    return 0
  missing = [f"--{name}" for name in ("config", "sweep", "root") if not FLAGS[name].value]
  if missing:
    raise trials.SweepError(f"{' '.join(missing)} missing: give --config, --sweep and --root "
                            "(or --report ROOT)")
  from mimjax.sweeps import launch
  from mimjax.sweeps import slurm
  from mimjax.sweeps import tpu
  options = slurm.Options(
      nodes=FLAGS.slurm_nodes, gpus_per_node=FLAGS.slurm_gpus_per_node,
      cpus_per_task=FLAGS.slurm_cpus_per_task, time=FLAGS.slurm_time,
      partition=FLAGS.slurm_partition, account=FLAGS.slurm_account,
      sbatch=tuple(FLAGS.slurm_sbatch))
  return launch.launch(config=FLAGS.config, sweep=FLAGS.sweep, root=FLAGS.root,
                       trainer_flags=argv[1:], target=FLAGS.target, parallel=FLAGS.parallel,
                       dry_run=FLAGS.dry_run, slurm_options=options,
                       tpu_options=tpu.Options(
                           name=FLAGS.name or "", zone=FLAGS.zone or "",
                           accelerator_type=FLAGS.accelerator_type or "", spot=FLAGS.spot,
                           keep=FLAGS.keep, skip_compile_check=FLAGS.skip_compile_check))


def run(argv):
  errors.quiet_library_logs()
  sys.exit(errors.exit_on_user_error(PROG, _launch, argv, verbose=FLAGS.verbose) or 0)


def main():
  app.run(run, flags_parser=errors.flags_parser(PROG))


if __name__ == "__main__":
  main()
