r"""mimjax-train: pre-trains MAE or LUT.

  mimjax-train --config configs/mae.py:demo --workdir workdirs/mae_demo
  mimjax-train --config configs/lut.py:variant=B/16,dataset=imagenet2012 --workdir DIR \
      --config.input.batch_size=1024 --config.total_steps=100000

On a multi-host TPU pod or a SLURM cluster add --distributed: jax.distributed.initialize()
then finds the coordinator, the process count and this process's index from the environment.
Elsewhere name them: --distributed --coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""
from mimjax import tf_env  # pylint: disable=unused-import  (first: before TensorFlow and jax)

import re

from absl import app
from absl import flags
from ml_collections import config_flags

from mimjax import errors

config_flags.DEFINE_config_file("config", None, "A configs/*.py file, optionally :ARG.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, TensorBoard logs and metrics go.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host runs).")
flags.DEFINE_string("coordinator_address", None, "With --distributed, where no cluster "
                    "environment says it: HOST:PORT of process 0.")
flags.DEFINE_integer("num_processes", None, "With --distributed: the number of processes.",
                     lower_bound=1)
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index.",
                     lower_bound=0)
errors.define_verbose_flag()
flags.mark_flags_as_required(["config", "workdir"])
errors.refuse_empty_flags("workdir")
flags.register_validator("coordinator_address", lambda a: a is None or bool(
    re.fullmatch(r".+:\d+", a)), message="give HOST:PORT of process 0, e.g. 10.0.0.2:1234")
flags.register_multi_flags_validator(
    ["num_processes", "process_id"],
    lambda f: None in f.values() or f["process_id"] < f["num_processes"],
    message="--process_id counts from 0: it must be below --num_processes")
FLAGS = flags.FLAGS


def run(argv):
  del argv
  errors.quiet_library_logs()
  import jax  # after flag parsing, so --help is fast

  from mimjax import train

  if FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  errors.exit_on_user_error("mimjax-train", train.train, FLAGS.config, FLAGS.workdir)


def main():
  app.run(run, flags_parser=errors.flags_parser("mimjax-train"))


if __name__ == "__main__":
  main()
