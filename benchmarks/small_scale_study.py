r"""MAE against LUT at a scale a CPU runs, each against random inits of the same encoder.

  python benchmarks/small_scale_study.py --out study/                  # MAE and LUT, 3 seeds
  python benchmarks/small_scale_study.py --out study/ --knobs all      # and LUT's knobs
  python benchmarks/small_scale_study.py --out study/ --tiny           # seconds: that it works

Both methods pre-train the same small ViT (W64-D4-H4/8 on the bundled 32 px digits: 80% for
pre-training, labels unused) with the same optimizer and peak lr, for `--steps` each; LUT adds
its heads, teacher and second view (configs/lut.py's demo: BC weight 0.1, EMA base 0.9995). Every
encoder, and random inits of it for each seed, is scored on the held-out 20%: kNN top-1 on the
mean patch feature and on [CLS], a linear probe on [CLS] (trained to convergence: 200 epochs),
the mean attention distance per layer and the effective rank of the pooled features (the LUT
paper's analyses, mimjax-analyze's definitions). `--knobs` then moves LUT's knobs one at a time
on the first seed (BC weight, EMA base momentum, both at ImageNet's values, mask ratio, head
width, run length).

Writes OUT/study.json (every run's numbers), OUT/study.md (the table) and OUT/comparison.png
(the analysis figure of the random init and the best MAE and LUT runs). Figures are printed,
never asserted.
"""
import argparse
import json
import os
import statistics
import time

from mimjax import tf_env  # pylint: disable=unused-import  (first: before TensorFlow and jax)
import jax  # pylint: disable=g-bad-import-order

from configs import common
from configs import lut as lut_recipe
from configs import mae as mae_recipe
from mimjax import api
from mimjax import evals
from mimjax import methods
from mimjax import sharding
from mimjax import state as state_lib
from mimjax import step as step_lib
from mimjax import train
from mimjax.evals import analysis_runner
from mimjax.evals import plots

PRETRAIN, HELD_OUT = common.DIGITS_PRETRAIN, common.DIGITS_HELD_OUT
# LUT's knobs, one at a time over its base run (first seed): (label, config overrides).
KNOBS = (
    ("bc_weight=0", {"lut.bc_weight": 0.0}),
    ("bc_weight=0.05", {"lut.bc_weight": 0.05}),
    ("bc_weight=0.25", {"lut.bc_weight": 0.25}),
    ("bc_weight=1", {"lut.bc_weight": 1.0}),
    ("ema_base=0.99", {"lut.ema_base": 0.99}),
    ("ema_base=0.996", {"lut.ema_base": 0.996}),
    ("ema_base=0.9999", {"lut.ema_base": 0.9999}),
    # ImageNet's values (configs/lut.py's recipe): LUT as the study first ran it.
    ("bc_weight=0.25+ema_base=0.996", {"lut.bc_weight": 0.25, "lut.ema_base": 0.996}),
    ("mask_ratio=0.5", {"model.mask_ratio": 0.5}),
    ("mask_ratio=0.9", {"model.mask_ratio": 0.9}),
    ("head_hidden=1024", {"model.head_hidden": 1024}),
    ("steps x2", {"total_steps": 2}),  # a factor of --steps
)


def config_for(method: str, steps: int, seed: int, overrides=None, tiny=False):
  """configs/mae.py's or configs/lut.py's demo (tiny: a smaller ViT)."""
  c = (mae_recipe if method == "mae" else lut_recipe).get_config("demo").unlock()
  c.seed = seed
  if tiny:
    c.model.variant = "W32-D2-H2/8"
  c.total_steps = steps
  c.log_every_steps, c.ckpt_every_steps, c.image_every_steps = max(steps // 4, 1), steps, 0
  for entry in c.evals.values():
    entry.every_steps, entry.at_start = -1, False  # scored here, on the held-out digits
  for key, value in (overrides or {}).items():
    *parents, leaf = key.split(".")
    section = c
    for p in parents:
      section = section[p]
    section[leaf] = steps * value if key == "total_steps" else value
  return c.lock()


def scores(config, params, tiny: bool) -> dict:
  """kNN (mean, [CLS]), linear probe ([CLS]), attention distance per layer, effective rank."""
  mesh = sharding.make_mesh(-1, 1)
  model = state_lib.build_model(config)
  out = {}
  probe = dict(epochs=2 if tiny else 200, warmup_epochs=1 if tiny else 10, base_lr=50.0,
               probe_batch_size=256)
  for name, eval_type, keys in (("knn_mean", "knn", dict(feature="mean")),
                                ("knn_cls", "knn", dict(feature="cls")),
                                ("probe_cls", "linear_probe", dict(feature="cls", **probe))):
    eval_config = evals.make_config(eval_type, dataset="digits", train_split=PRETRAIN,
                                    val_split=HELD_OUT, batch_size=128, **keys)
    out[name] = float(evals.get(eval_type)(config, eval_config, model, mesh).run(params)["top1"])
  kwargs = methods.get(config.method).model_kwargs(config)
  encoder = api.Pretrained(kwargs, params, config.input.image_size)
  images = analysis_runner.load_images(_held_out_input(config), HELD_OUT, 32 if tiny else 256)
  analysis = analysis_runner.analyze_model(encoder.model, encoder.params, images, batch_size=64,
                                           heads=(), num_registers=0, num_map_images=0)
  out["attention_distance"] = [sum(layer) / len(layer)
                               for layer in analysis["attention_distance"]]
  out["effective_rank"] = float(analysis["effective_rank"])
  return out, analysis


def _held_out_input(config):
  cfg = config.input.copy_and_resolve_references()
  cfg.unlock()
  cfg.batch_size = 64
  return cfg


def random_params(config, seed: int):
  setup = step_lib.build_step(config, sharding.make_mesh(-1, 1), lambda step: 0.0, 1)
  return jax.jit(setup.init)(jax.random.key(seed))["params"]


def run(name, config, out_dir, tiny, results, analyses):
  start = time.time()
  state = train.train(config, os.path.join(out_dir, "workdirs", name.replace(" ", "_")))
  numbers, analysis = scores(config, state["params"], tiny)
  numbers.update(seconds=round(time.time() - start, 1))
  results[name] = numbers
  analyses[name] = analysis
  print(f"== {name}: {_row_text(numbers)}", flush=True)


def _row_text(n):
  return (f"kNN mean {n['knn_mean']:.3f}, kNN cls {n['knn_cls']:.3f}, probe {n['probe_cls']:.3f}, "
          f"eff. rank {n['effective_rank']:.2f}, attention distance "
          f"{' '.join(f'{d:.1f}' for d in n['attention_distance'])} px")


def groups(results) -> dict[str, list[dict]]:
  """Runs by label, in order: "MAE seed 1" is one of "MAE"'s seeds, a knob's run its own."""
  out = {}
  for name, numbers in results.items():
    out.setdefault(name.split(" seed ")[0], []).append(numbers)
  return out


def table(results) -> str:
  """Mean (min-max) over seeds per label; gains against the mean of the random inits."""
  keys = ("knn_mean", "knn_cls", "probe_cls", "effective_rank")
  runs_by_label = groups(results)
  baseline = {k: statistics.mean(r[k] for r in runs_by_label["random"]) for k in keys}
  lines = ["| run | seeds | kNN mean | kNN [CLS] | probe [CLS] | eff. rank | attention distance "
           "per layer (px) |", "|---|---|---|---|---|---|---|"]

  def cell(runs, key, gain):
    values = [r[key] for r in runs]
    mean = statistics.mean(values)
    spread = f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else ""
    gain = f", {mean - baseline[key]:+.3f}" if gain and key != "effective_rank" else ""
    return f"{mean:.3f}{spread}{gain}"

  for label, runs in runs_by_label.items():
    distances = [statistics.mean(d) for d in zip(*(r["attention_distance"] for r in runs))]
    cells = (cell(runs, k, gain=label != "random") for k in keys)
    lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) +
                 f" | {' '.join(f'{d:.1f}' for d in distances)} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="Folder for the workdirs, table and figure.")
  parser.add_argument("--steps", type=int, default=600, help="Pre-training steps per run.")
  parser.add_argument("--seeds", type=int, default=3, help="Seeds per method (0, 1, ...).")
  parser.add_argument("--knobs", default="", help="Also move LUT's knobs, one at a time: 'all', "
                      f"or some of {[label for label, _ in KNOBS]}, comma-separated.")
  parser.add_argument("--methods", default="mae,lut", help="The methods to pre-train per seed "
                      "(the random inits are always scored).")
  parser.add_argument("--tiny", action="store_true",
                      help="A smaller ViT, few probe epochs and images: that it works, in seconds.")
  args = parser.parse_args()
  if args.steps < 1 or args.seeds < 1:
    parser.error("--steps and --seeds must be >= 1")
  knobs = [label for label, _ in KNOBS] if args.knobs == "all" else [
      k for k in args.knobs.split(",") if k]
  unknown = set(knobs) - {label for label, _ in KNOBS}
  if unknown:
    parser.error(f"--knobs: unknown {sorted(unknown)}; the knobs: {[l for l, _ in KNOBS]}")
  methods = [m for m in args.methods.split(",") if m]
  if not set(methods) <= {"mae", "lut"}:
    parser.error(f"--methods: {args.methods!r}; use 'mae', 'lut' or 'mae,lut'")
  os.makedirs(args.out, exist_ok=True)
  results, analyses = {}, {}
  start = time.time()
  for seed in range(args.seeds):
    base = config_for("mae", args.steps, seed, tiny=args.tiny)
    numbers, analyses[f"random seed {seed}"] = scores(base, random_params(base, seed), args.tiny)
    results[f"random seed {seed}"] = numbers
    print(f"== random seed {seed}: {_row_text(numbers)}", flush=True)
    for method in methods:
      run(f"{method.upper()} seed {seed}", config_for(method, args.steps, seed, tiny=args.tiny),
          args.out, args.tiny, results, analyses)
  for label in knobs:  # in the order asked for
    run(f"LUT {label}", config_for("lut", args.steps, 0, dict(KNOBS)[label], args.tiny),
        args.out, args.tiny, results, analyses)
  text = table(results)
  with open(os.path.join(args.out, "study.json"), "w") as f:
    json.dump(dict(steps=args.steps, seeds=args.seeds, results=results), f, indent=1)
  with open(os.path.join(args.out, "study.md"), "w") as f:
    f.write(text + "\n")
  best = [max(runs, key=lambda k: results[k]["knn_mean"]) for runs in (
      [k for k in results if k.startswith(label + " seed")] for label in ("random", "MAE", "LUT"))
           if runs]
  plots.comparison({k: analyses[k] for k in best}, os.path.join(args.out, "comparison.png"))
  print(text)
  print(f"({time.time() - start:.0f} s; gains against the mean of the random inits; "
        f"figure of {', '.join(best)} in {os.path.join(args.out, 'comparison.png')})")


if __name__ == "__main__":
  main()
