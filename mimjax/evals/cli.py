r"""mimjax-eval: kNN or linear-probe accuracy of a pre-trained encoder.

  mimjax-eval --model workdirs/mae_demo --eval knn --train_split 'train[:75%]' \
      --val_split 'train[75%:]' --out knn.json
  mimjax-eval --model exports/mae_b16_hf --eval linear_probe --dataset imagenet2012 \
      --data_dir DIR --train_split train --val_split validation

--model is a training workdir or an export directory (mimjax.load_pretrained). The data flags
mean what config.input's keys mean. Prints the result and, with --out, writes it as JSON
({"top1", "top5", "eval", "model", ...}). kNN is DINO's weighted kNN (k=20, T=0.07, cosine, the
[CLS] token); linear_probe is MAE's protocol (see mimjax/evals/linear_probe.py).
"""
from mimjax import tf_env  # pylint: disable=unused-import  (first: before TensorFlow and jax)

from absl import app
from absl import flags

from mimjax import errors

flags.DEFINE_string("model", None, "A training workdir or an export directory.")
flags.DEFINE_enum("eval", None, ["knn", "linear_probe"], "Which evaluation.")
flags.DEFINE_string("dataset", "offline_photos", "As config.input.dataset.")
flags.DEFINE_string("folder", "", "As config.input.folder (with --dataset=folder).")
flags.DEFINE_string("data_dir", "", "As config.input.data_dir (tfds).")
flags.DEFINE_string("train_split", "train", "The labelled split to fit on (the kNN bank).")
flags.DEFINE_string("val_split", "validation", "The split accuracy is measured on.")
flags.DEFINE_integer("batch_size", 64, "Global batch for feature extraction.", lower_bound=1)
flags.DEFINE_integer("image_size", 0, "Image side; 0 = the model's training size.",
                     lower_bound=0)
flags.DEFINE_enum("feature", "cls", ["cls", "mean"], "[CLS] token or mean of the patch tokens.")
flags.DEFINE_integer("k", 20, "kNN: neighbours.", lower_bound=1)
flags.DEFINE_float("temperature", 0.07, "kNN: vote weight exp(similarity / T).")
flags.DEFINE_integer("epochs", 90, "Linear probe: epochs over the extracted features.",
                     lower_bound=1)
flags.DEFINE_float("base_lr", 0.1, "Linear probe: lr = base_lr x batch / 256 (LARS).")
flags.DEFINE_integer("probe_batch_size", 16384, "Linear probe: batch (at most the split's size).",
                     lower_bound=1)
flags.DEFINE_string("out", "", "Write the result as JSON to this file.")
errors.define_verbose_flag()
flags.mark_flags_as_required(["model", "eval"])
errors.refuse_empty_flags("model", "dataset", "train_split", "val_split")
flags.register_validator("temperature", lambda t: t > 0, message="must be > 0 (DINO uses 0.07)")
flags.register_validator("base_lr", lambda lr: lr > 0, message="must be > 0 (MAE uses 0.1)")
FLAGS = flags.FLAGS


def run(argv):
  del argv
  errors.quiet_library_logs()
  values = {k: FLAGS[k].value for k in (
      "dataset", "folder", "data_dir", "train_split", "val_split", "batch_size", "image_size",
      "feature", "k", "temperature", "epochs", "base_lr", "probe_batch_size")}
  from mimjax.evals import evaluate  # pylint: disable=g-import-not-at-top
  errors.exit_on_user_error("mimjax-eval", evaluate.evaluate, FLAGS.model, FLAGS.eval, FLAGS.out,
                           **values)


def main():
  app.run(run, flags_parser=errors.flags_parser('mimjax-eval'))


if __name__ == "__main__":
  main()
