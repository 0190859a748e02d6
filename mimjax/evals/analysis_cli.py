r"""mimjax-analyze: the LUT paper's analyses of one or more encoders, side by side.

  mimjax-analyze --model workdirs/mae_demo --model workdirs/lut_demo --out analysis/

Each --model is a training workdir or an export (mimjax.load_pretrained); --name gives it a label
(default: the directory's name). Images: the bundled offline photos unless --dataset (and
--folder / --data_dir / --split) say otherwise, centre-cropped to the model's image size. Writes
into --out:

  analysis.json         per model: mean attention distance (pixels) and attention entropy per
                        layer and head, the normalized singular values of the pooled features and
                        their effective rank, token norm statistics per layer
  comparison.png        attention distance per layer and head | singular value spectrum
  entropy.png           attention entropy per layer and head
  token_norms.png       patch-token norm median / p99 / max, cls and register norms, per layer
  attention_<name>.png  the cls token's attention of the chosen heads (--heads) on a few images

Layers are numbered from 1, heads from 0.
"""
from mimjax import tf_env  # pylint: disable=unused-import  (first: before TensorFlow and jax)

import re

from absl import app
from absl import flags

from mimjax import errors

flags.DEFINE_multi_string("model", None, "A training workdir or export directory (repeatable).")
flags.DEFINE_multi_string("name", None, "A label per --model (default: the directory's name).")
flags.DEFINE_string("out", None, "Directory for the figures and analysis.json.")
flags.DEFINE_string("dataset", "offline_photos", "As config.input.dataset.")
flags.DEFINE_string("folder", "", "As config.input.folder (with --dataset=folder).")
flags.DEFINE_string("data_dir", "", "As config.input.data_dir (tfds).")
flags.DEFINE_string("split", "train", "The split whose images are analysed.")
flags.DEFINE_integer("num_images", 160, "How many images (the first of the split).",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Images per forward pass.", lower_bound=1)
flags.DEFINE_integer("image_size", 0, "Image side; 0 = the model's training size.",
                     lower_bound=0)
flags.DEFINE_list("heads", [], "LAYER:HEAD pairs for the attention maps; default: every head "
                  "of the last layer.")
flags.DEFINE_integer("num_map_images", 4, "Images in each attention-map figure (0: no figure).",
                     lower_bound=0)
errors.define_verbose_flag()
flags.mark_flags_as_required(["model", "out"])
errors.refuse_empty_flags("model", "name", "out", "dataset", "split")
# The form here; the layers and heads the model has once it is loaded (analysis_runner).
flags.register_validator("heads", lambda items: all(re.fullmatch(r"\d+:\d+", i) for i in items),
                         message="give LAYER:HEAD pairs, e.g. 12:0,12:5")
FLAGS = flags.FLAGS


def run(argv):
  del argv
  errors.quiet_library_logs()
  from mimjax.evals import analysis_runner  # pylint: disable=g-import-not-at-top
  errors.exit_on_user_error(
      "mimjax-analyze", analysis_runner.analyze, FLAGS.model, FLAGS.name, FLAGS.out,
      dataset=FLAGS.dataset, folder=FLAGS.folder, data_dir=FLAGS.data_dir, split=FLAGS.split,
      num_images=FLAGS.num_images, batch_size=FLAGS.batch_size, image_size=FLAGS.image_size,
      heads=FLAGS.heads, num_map_images=FLAGS.num_map_images)


def main():
  app.run(run, flags_parser=errors.flags_parser('mimjax-analyze'))


if __name__ == "__main__":
  main()
