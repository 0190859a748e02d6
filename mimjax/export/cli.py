r"""mimjax-export: writes a training workdir's checkpoint as PyTorch weights.

  mimjax-export --workdir workdirs/mae_demo --format hf --out exports/mae_demo_hf
  mimjax-export --workdir workdirs/mae_demo --format timm --num_classes 1000 --out exports/mae_timm

`hf` writes a Hugging Face ViTMAEForPreTraining directory (encoder and decoder), loadable with
`ViTMAEForPreTraining.from_pretrained(OUT)` and with `mimjax.load_pretrained(OUT)`; `timm` writes
the encoder as a timm VisionTransformer state dict plus the architecture arguments. For LUT the
student is exported (fine-tuning starts from the student encoder).
"""
import os
import sys

# TensorFlow is only the input pipeline here: keep its start-up chatter off the console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import logging
from absl import flags

flags.DEFINE_string("workdir", None, "A training workdir (holds checkpoints/).")
flags.DEFINE_integer("step", None, "The checkpoint step to export; default: the latest.")
flags.DEFINE_enum("format", None, ["timm", "hf"], "The PyTorch consumer to write for.")
flags.DEFINE_string("out", None, "The output directory (created; existing files are replaced).")
flags.DEFINE_integer("num_classes", 0, "timm only: add a freshly initialized head of this size.")
flags.mark_flags_as_required(["workdir", "format", "out"])
FLAGS = flags.FLAGS


def run(argv):
  del argv
  if not FLAGS["verbosity"].present:
    # orbax and XLA log every save and backend probe at INFO; --verbosity=0 shows them again.
    logging.set_verbosity(logging.WARNING)
  from mimjax import errors
  from mimjax import export
  from mimjax import state as state_lib

  config, step, state = errors.exit_on_user_error(
      "mimjax-export", state_lib.restore_state, FLAGS.workdir, FLAGS.step)
  kwargs = state_lib.model_kwargs(config)
  params = state["params"]
  if FLAGS.format == "hf":
    write = lambda: export.save_hf(params, kwargs, config.input.image_size, FLAGS.out)
  else:
    write = lambda: export.save_timm(params, kwargs, FLAGS.out, num_classes=FLAGS.num_classes,
                                     image_size=config.input.image_size)
  errors.exit_on_user_error("mimjax-export", write)  # e.g. register tokens: no PyTorch layout
  print(f"Exported step {step} of {os.path.abspath(FLAGS.workdir)} ({FLAGS.format}) to "
        f"{os.path.abspath(FLAGS.out)}: {sorted(os.listdir(FLAGS.out))}", flush=True)


def main():
  app.run(run)


if __name__ == "__main__":
  main()
