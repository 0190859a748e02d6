r"""mimjax-export: writes a training workdir's checkpoint as PyTorch weights.

  mimjax-export --workdir workdirs/mae_demo --format hf --out exports/mae_demo_hf
  mimjax-export --workdir workdirs/mae_demo --format timm --num_classes 1000 --out exports/mae_timm
  mimjax-export --workdir workdirs/mae_demo --format timm --global_pool avg --num_classes 1000 \
      --out exports/mae_timm_gap   # the fine-tuning starting point of both papers

`hf` writes a Hugging Face ViTMAEForPreTraining directory (encoder and decoder), loadable with
`ViTMAEForPreTraining.from_pretrained(OUT)` and with `mimjax.load_pretrained(OUT)`, or, for a
fine-tuned classifier, ViTForImageClassification; `timm` writes the encoder (and a fine-tuned
classifier's head) as a timm VisionTransformer state dict plus the architecture arguments. For LUT the
student is exported (fine-tuning starts from the student encoder).
"""
from mimjax import tf_env  # pylint: disable=unused-import  (first: before TensorFlow and jax)

from absl import app
from absl import flags

from mimjax import errors

flags.DEFINE_string("workdir", None, "A training workdir (holds checkpoints/).")
flags.DEFINE_integer("step", None, "The checkpoint step to export; default: the latest.",
                     lower_bound=0)
flags.DEFINE_enum("format", None, ["timm", "hf"], "The PyTorch consumer to write for.")
flags.DEFINE_string("out", None, "The output directory (created; existing files are replaced).")
flags.DEFINE_integer("num_classes", 0, "timm only: add a freshly initialized head of this size.",
                     lower_bound=0)
flags.DEFINE_enum("global_pool", "token", ["token", "avg"],
                  "timm only: 'avg' is the fine-tuning layout (patch mean, fresh fc_norm, the "
                  "final norm dropped); a fine-tuned classifier is always exported so.")
errors.define_verbose_flag()
flags.mark_flags_as_required(["workdir", "format", "out"])
errors.refuse_empty_flags("workdir", "out")
FLAGS = flags.FLAGS
PROG = "mimjax-export"


def run(argv):
  del argv
  errors.quiet_library_logs()
  from mimjax.export import workdir  # after flag parsing, so --help is fast

  errors.exit_on_user_error(PROG, workdir.export_workdir, FLAGS.workdir, FLAGS.step, FLAGS.format,
                            FLAGS.out, FLAGS.num_classes, FLAGS.global_pool)


def main():
  app.run(run, flags_parser=errors.flags_parser(PROG))


if __name__ == "__main__":
  main()
