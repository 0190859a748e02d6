"""mimjax-analyze's runner: load models and images, run the analyses, write figures and numbers.

See analysis_cli.py for the command and analysis_measures.py for the definitions.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mimjax import api
from mimjax import data
from mimjax import errors
from mimjax.evals import analysis_measures as measures
from mimjax.evals import plots
from mimjax.models import vit


def parse_heads(items, depth: int, heads: int) -> list[tuple[int, int]]:
  """['12:0', '12:3'] -> [(12, 0), (12, 3)]; [] -> every head of the last layer."""

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

  it = data.make_host_eval_iterator(input_cfg, split, process_index=0, process_count=1)
  images = []
  for batch in it:
    images.extend(batch["image"][batch["mask"]])
    if len(images) >= num_images:
      break
  return np.stack(images[:num_images])


def analyze_model(model, params, images, *, batch_size: int, heads, num_registers: int,
                  num_map_images: int) -> dict:
  """All analyses of one encoder on uint8 `images`; a JSON-ready dict plus arrays for figures.

  `maps` is None when `num_map_images` is 0 (no attention-map figure).
  """
  patch = model.patch
  grid = (images.shape[1] // patch, images.shape[2] // patch)
  prefix = 1 + num_registers
  run = jax.jit(lambda p, x: measures.encoder_internals(model, p, data.normalize(x)))
  distance = entropy = None
  pooled, tokens, maps = [], None, []
  for start in range(0, len(images), batch_size):
    internals = jax.device_get(run(params, jnp.asarray(images[start:start + batch_size])))
    d = np.stack([measures.attention_distance_sum(a, grid, patch, prefix)
                  for a in internals.attention])
    e = np.stack([measures.attention_entropy_sum(a, prefix) for a in internals.attention])
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
  spectrum = measures.singular_spectrum(np.concatenate(pooled))
  return dict(
      attention_distance=(distance / queries).tolist(),
      attention_entropy=(entropy / queries).tolist(),
      singular_values=spectrum.tolist(),
      effective_rank=measures.effective_rank(spectrum),
      token_norms=[measures.token_norm_stats(t, num_registers) for t in tokens],
      num_registers=num_registers, patch=patch, image_size=int(images.shape[1]),
      num_images=int(len(images)),
      # For the figures only (not written to JSON).
      images=images[:num_map_images], maps=np.stack(maps) if maps else None, heads=heads)


def _cls_map(attn, prefix: int, grid):
  """The cls query's attention over the patches, renormalized, as a (rows, cols) map."""
  row = np.asarray(attn[0, prefix:], np.float64)
  return (row / max(row.sum(), 1e-30)).reshape(grid)


def _names(models, names):

  if names and len(names) != len(models):
    raise errors.UserError(f"--name: {len(names)} names for {len(models)} --model paths: give "
                           "one --name per --model, or none")
  names = names or [os.path.basename(os.path.normpath(m)) for m in models]
  if len(set(names)) != len(names):
    raise errors.UserError(f"--name: the labels {names} are not distinct: give --name per model")
  return names


def analyze(models, names, out_dir, *, dataset="offline_photos", folder="", data_dir="",
            split="train", num_images=160, batch_size=16, image_size=0, heads=(),
            num_map_images=4):
  """Runs every analysis on each model and writes the figures and analysis.json into out_dir."""
  names = _names(models, names)
  loaded = [api.load_pretrained(m) for m in models]  # bad paths fail before any work
  results = {}
  for name, pretrained in zip(names, loaded):
    spec = vit.decode_variant(pretrained.model_kwargs["variant"])
    chosen = parse_heads(list(heads), spec.depth, spec.heads)
    cfg = ml_collections.ConfigDict(data.make_default_config().to_dict())
    cfg.update(dataset=dataset, folder=folder, data_dir=data_dir,
               batch_size=batch_size,
               image_size=image_size or pretrained.image_size or 224)
    try:
      data.validate_config(cfg, None, 1, 1, split=split)
    except data.DataConfigError as e:
      raise data.DataConfigError(f"--dataset/--split: {e}") from None
    images = load_images(cfg, split, num_images)
    print(f"{name}: {pretrained.source}, {len(images)} images of {cfg.image_size} px", flush=True)
    results[name] = analyze_model(pretrained.model, pretrained.params, images,
                                  batch_size=batch_size, heads=chosen,
                                  num_registers=pretrained.num_registers,
                                  num_map_images=num_map_images)
    results[name]["source"] = pretrained.source
  os.makedirs(out_dir, exist_ok=True)
  plots.comparison(results, os.path.join(out_dir, "comparison.png"))
  plots.entropy(results, os.path.join(out_dir, "entropy.png"))
  plots.token_norms(results, os.path.join(out_dir, "token_norms.png"))
  for name, r in results.items():
    if r["maps"] is not None:
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
