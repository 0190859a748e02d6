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
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
from absl import logging

flags.DEFINE_multi_string("model", None, "A training workdir or export directory (repeatable).")
flags.DEFINE_multi_string("name", None, "A label per --model (default: the directory's name).")
flags.DEFINE_string("out", None, "Directory for the figures and analysis.json.")
flags.DEFINE_string("dataset", "offline_photos", "As config.input.dataset.")
flags.DEFINE_string("folder", "", "As config.input.folder (with --dataset=folder).")
flags.DEFINE_string("data_dir", "", "As config.input.data_dir (tfds).")
flags.DEFINE_string("split", "train", "The split whose images are analysed.")
flags.DEFINE_integer("num_images", 160, "How many images (the first of the split).")
flags.DEFINE_integer("batch_size", 16, "Images per forward pass.")
flags.DEFINE_integer("image_size", 0, "Image side; 0 = the model's training size.")
flags.DEFINE_list("heads", [], "LAYER:HEAD pairs for the attention maps; default: every head "
                  "of the last layer.")
flags.DEFINE_integer("num_map_images", 4, "Images in each attention-map figure.")
flags.mark_flags_as_required(["model", "out"])
FLAGS = flags.FLAGS


def parse_heads(items, depth: int, heads: int) -> list[tuple[int, int]]:
  """['12:0', '12:3'] -> [(12, 0), (12, 3)]; [] -> every head of the last layer."""
  from mimjax import errors  # pylint: disable=g-import-not-at-top
  if not items:
    return [(depth, h) for h in range(heads)]
  out = []
  for item in items:
    layer, _, head = item.partition(":")
    try:
      pair = (int(layer), int(head))
    except ValueError:
      pair = None
    if pair is None or not (1 <= pair[0] <= depth and 0 <= pair[1] < heads):
      raise errors.UserError(f"--heads: {item!r} is not LAYER:HEAD with LAYER in 1..{depth} and "
                             f"HEAD in 0..{heads - 1}")
    out.append(pair)
  return out


def load_images(input_cfg, split: str, num_images: int):
  """The first `num_images` (centre-cropped, uint8) images of the split, as one numpy array."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mimjax import data  # pylint: disable=g-import-not-at-top
  it = data.make_host_eval_iterator(input_cfg, split, process_index=0, process_count=1)
  images = []
  for batch in it:
    images.extend(batch["image"][batch["mask"]])
    if len(images) >= num_images:
      break
  return np.stack(images[:num_images])


def analyze_model(model, params, images, *, batch_size: int, heads, num_registers: int,
                  num_map_images: int) -> dict:
  """All analyses of one encoder on uint8 `images`; a JSON-ready dict plus arrays for figures."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mimjax import data  # pylint: disable=g-import-not-at-top
  from mimjax.evals import analysis  # pylint: disable=g-import-not-at-top

  patch = model.patch
  grid = (images.shape[1] // patch, images.shape[2] // patch)
  prefix = 1 + num_registers
  run = jax.jit(lambda p, x: analysis.encoder_internals(model, p, data.normalize(x)))
  distance = entropy = None
  pooled, tokens, maps = [], None, []
  for start in range(0, len(images), batch_size):
    internals = jax.device_get(run(params, jnp.asarray(images[start:start + batch_size])))
    d = np.stack([analysis.attention_distance_sum(a, grid, patch, prefix)
                  for a in internals.attention])
    e = np.stack([analysis.attention_entropy_sum(a, prefix) for a in internals.attention])
    distance = d if distance is None else distance + d
    entropy = e if entropy is None else entropy + e
    pooled.append(np.asarray(internals.output)[:, 1:].mean(1))
    layer_tokens = [np.asarray(t) for t in internals.tokens]
    tokens = layer_tokens if tokens is None else [
        np.concatenate([a, b]) for a, b in zip(tokens, layer_tokens)]
    if len(maps) < num_map_images:
      for i in range(min(num_map_images - len(maps), len(images[start:start + batch_size]))):
        maps.append(np.stack([
            _cls_map(internals.attention[layer - 1][i, head], prefix, grid)
            for layer, head in heads]))
  queries = len(images) * grid[0] * grid[1]
  spectrum = analysis.singular_spectrum(np.concatenate(pooled))
  return dict(
      attention_distance=(distance / queries).tolist(),
      attention_entropy=(entropy / queries).tolist(),
      singular_values=spectrum.tolist(),
      effective_rank=analysis.effective_rank(spectrum),
      token_norms=[analysis.token_norm_stats(t, num_registers) for t in tokens],
      num_registers=num_registers, patch=patch, image_size=int(images.shape[1]),
      num_images=int(len(images)),
      # For the figures only (not written to JSON).
      images=images[:num_map_images], maps=np.stack(maps), heads=heads)


def _cls_map(attn, prefix: int, grid):
  """The cls query's attention over the patches, renormalized, as a (rows, cols) map."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  row = np.asarray(attn[0, prefix:], np.float64)
  return (row / max(row.sum(), 1e-30)).reshape(grid)


def _names(models, names):
  from mimjax import errors  # pylint: disable=g-import-not-at-top
  if names and len(names) != len(models):
    raise errors.UserError(f"--name: {len(names)} names for {len(models)} --model paths: give "
                           "one --name per --model, or none")
  names = names or [os.path.basename(os.path.normpath(m)) for m in models]
  if len(set(names)) != len(names):
    raise errors.UserError(f"--name: the labels {names} are not distinct: give --name per model")
  return names


def analyze(models, names, out_dir):
  import json  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import mimjax  # pylint: disable=g-import-not-at-top
  from mimjax import api  # pylint: disable=g-import-not-at-top
  from mimjax import data  # pylint: disable=g-import-not-at-top
  from mimjax.evals import plots  # pylint: disable=g-import-not-at-top
  from mimjax.models import vit  # pylint: disable=g-import-not-at-top
  del mimjax

  names = _names(models, names)
  loaded = [api.load_pretrained(m) for m in models]  # bad paths fail before any work
  results = {}
  for name, pretrained in zip(names, loaded):
    spec = vit.decode_variant(pretrained.model_kwargs["variant"])
    heads = parse_heads(FLAGS.heads, spec.depth, spec.heads)
    cfg = ml_collections.ConfigDict(data.make_default_config().to_dict())
    cfg.update(dataset=FLAGS.dataset, folder=FLAGS.folder, data_dir=FLAGS.data_dir,
               batch_size=FLAGS.batch_size,
               image_size=FLAGS.image_size or pretrained.image_size or 224)
    try:
      data.validate_config(cfg, None, 1, 1, split=FLAGS.split)
    except data.DataConfigError as e:
      raise data.DataConfigError(f"--dataset/--split: {e}") from None
    images = load_images(cfg, FLAGS.split, FLAGS.num_images)
    print(f"{name}: {pretrained.source}, {len(images)} images of {cfg.image_size} px", flush=True)
    results[name] = analyze_model(pretrained.model, pretrained.params, images,
                                  batch_size=FLAGS.batch_size, heads=heads,
                                  num_registers=pretrained.num_registers,
                                  num_map_images=FLAGS.num_map_images)
    results[name]["source"] = pretrained.source
  os.makedirs(out_dir, exist_ok=True)
  plots.comparison(results, os.path.join(out_dir, "comparison.png"))
  plots.entropy(results, os.path.join(out_dir, "entropy.png"))
  plots.token_norms(results, os.path.join(out_dir, "token_norms.png"))
  for name, r in results.items():
    plots.attention_maps(name, r, os.path.join(out_dir, f"attention_{name}.png"))
  numbers = {name: {k: v for k, v in r.items() if k not in ("images", "maps")}
             for name, r in results.items()}
  with open(os.path.join(out_dir, "analysis.json"), "w") as f:
    json.dump(numbers, f, indent=1)
  for name, r in numbers.items():
    dist = [sum(layer) / len(layer) for layer in r["attention_distance"]]
    print(f"{name}: mean attention distance per layer (px) "
          f"{' '.join(f'{d:.1f}' for d in dist)}; effective rank {r['effective_rank']:.2f}")
  print(f"Wrote {sorted(os.listdir(out_dir))} to {os.path.abspath(out_dir)}", flush=True)
  return numbers


def run(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from mimjax import errors  # pylint: disable=g-import-not-at-top
  errors.exit_on_user_error("mimjax-analyze", analyze, FLAGS.model, FLAGS.name, FLAGS.out)


def main():
  app.run(run)


if __name__ == "__main__":
  main()
