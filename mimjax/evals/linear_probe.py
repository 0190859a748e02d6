"""Linear probing, MAE's protocol, on features extracted once.

The encoder is frozen, so its features are computed once per split (the [CLS] token after the
final LayerNorm, as the MAE paper probes) and the head is trained on them: BatchNorm without
affine parameters (eps 1e-6) before a linear layer (weights trunc-normal std 0.01, bias 0),
LARS (momentum 0.9, trust coefficient 0.001, no weight decay; biases and 1-D parameters not
adapted), lr = base_lr x batch / 256 with base_lr 0.1, batch 16384, 90 epochs, a linear warm-up
over 10 epochs then cosine to 0, cross-entropy. Images are centre crops with no augmentation
(features extracted once cannot be re-augmented). On a set smaller than the batch the batch is
the whole set; LARS moves each weight by about lr x 0.001 of its norm per step, so small sets
need a larger `base_lr` (or more epochs) than ImageNet's recipe.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mimjax import sharding
from mimjax.evals import features as features_lib
from mimjax.evals import knn
from mimjax.evals import registry


class ProbeHead(nn.Module):
  """BatchNorm (no scale or bias) -> Dense(num_classes)."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.BatchNorm(use_running_average=not train, use_bias=False, use_scale=False,
                     epsilon=1e-6, momentum=0.9, name="bn")(x)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.truncated_normal(0.01),
                    name="head")(x)


def lars(learning_rate) -> optax.GradientTransformation:
  """MAE's LARS: weight decay 0, and neither decay nor trust ratio on 1-D parameters (biases)."""
  matrices = lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)
  return optax.lars(learning_rate, weight_decay=0.0, weight_decay_mask=matrices,
                    trust_coefficient=0.001, eps=0.0, trust_ratio_mask=matrices, momentum=0.9)


def train_probe(train_x, train_y, val_x, val_y, num_classes: int, *, epochs: int = 90,
                warmup_epochs: int = 10, base_lr: float = 0.1, batch_size: int = 16384,
                seed: int = 0, mesh=None) -> dict[str, float]:
  """Trains the probe on (train_x, train_y) and returns {'top1', 'top5'} on (val_x, val_y).

  Arrays may be numpy or global jax.Arrays (rows sharded); rows with label < 0 are ignored.
  The epoch order is drawn on the host from `seed`: the same on every process.
  """
  train_labels = features_lib.to_host(train_y) if isinstance(train_y, jax.Array) else train_y
  rows = np.flatnonzero(np.asarray(train_labels) >= 0)
  batch = min(batch_size, len(rows))
  steps_per_epoch = max(len(rows) // batch, 1)
  total = epochs * steps_per_epoch
  peak = base_lr * batch / 256
  warmup = min(warmup_epochs * steps_per_epoch, total)
  # Warm-up over every step (warmup_epochs == epochs, which the config allows) leaves no cosine,
  # whose optax schedule needs at least one step.
  schedule = (optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, 0.0) if warmup < total
              else optax.linear_schedule(0.0, peak, max(warmup, 1)))
  tx = lars(schedule)
  head = ProbeHead(num_classes)
  variables = head.init(jax.random.key(seed), jnp.zeros((2, train_x.shape[1])), train=False)
  state = dict(params=variables["params"], batch_stats=variables["batch_stats"],
               opt_state=tx.init(variables["params"]))
  replicated = sharding.replicated(mesh) if mesh is not None else None

  def step(state, x_all, y_all, idx):
    x, y = jnp.take(x_all, idx, axis=0), jnp.take(y_all, idx, axis=0)

    def loss_fn(params):
      logits, new = head.apply({"params": params, "batch_stats": state["batch_stats"]}, x,
                               train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

    (_, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return dict(params=optax.apply_updates(state["params"], updates),
                batch_stats=new["batch_stats"], opt_state=opt_state)

  def evaluate(state, x, y):
    logits = head.apply({"params": state["params"], "batch_stats": state["batch_stats"]}, x,
                        train=False)
    top1, top5 = knn.topk_correct(logits, y)
    return top1, top5, jnp.sum(y >= 0)

  step = jax.jit(step, out_shardings=replicated, donate_argnums=0)
  state = jax.device_put(state, replicated) if replicated is not None else state
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(rows)
    for s in range(steps_per_epoch):
      idx = jnp.asarray(order[s * batch:(s + 1) * batch], jnp.int32)
      if replicated is not None:
        idx = jax.device_put(idx, replicated)
      state = step(state, train_x, train_y, idx)
  top1, top5, n = jax.jit(evaluate, out_shardings=replicated)(state, val_x, val_y)
  n = max(int(n), 1)
  return dict(top1=int(top1) / n, top5=int(top5) / n)


@registry.register("linear_probe")
class LinearProbeEvaluator:
  """`run(params, step)` -> {'top1', 'top5'} of a linear probe trained on `train_split`."""
  DEFAULTS = dict(train_split="train", val_split="validation", feature="cls", epochs=90,
                  warmup_epochs=10, base_lr=0.1, probe_batch_size=16384, seed=0)

  def __init__(self, config, eval_config, model, mesh):
    self.eval_config = eval_config
    self.cfg = features_lib.input_config(config, eval_config)
    self.mesh = mesh
    self.extract = features_lib.Extractor(model, mesh, eval_config.feature, normalize=False)
    self._max = jax.jit(jnp.max, out_shardings=sharding.replicated(mesh))

  @staticmethod
  def validate(config, eval_config, name, num_processes, num_devices):
    cfg = features_lib.input_config(config, eval_config)
    for key in ("train_split", "val_split"):
      features_lib.check_split(cfg, eval_config[key], f"config.evals.{name}.{key}", num_processes,
                               num_devices, labelled=True)
    for key in ("epochs", "probe_batch_size"):
      if eval_config[key] < 1:
        raise ValueError(f"config.evals.{name}.{key}: must be >= 1")
    if not 0 <= eval_config.warmup_epochs <= eval_config.epochs:
      raise ValueError(f"config.evals.{name}.warmup_epochs: must lie in [0, epochs]")
    if eval_config.base_lr <= 0 or not math.isfinite(eval_config.base_lr):
      raise ValueError(f"config.evals.{name}.base_lr: must be positive (MAE uses 0.1)")
    if eval_config.feature not in features_lib.FEATURES:
      raise ValueError(f"config.evals.{name}.feature: {eval_config.feature!r} is not one of "
                       f"{features_lib.FEATURES}")

  def run(self, params, step=None) -> dict[str, float]:
    del step
    e = self.eval_config
    train_x, train_y = self.extract(params, self.cfg, e.train_split)
    val_x, val_y = self.extract(params, self.cfg, e.val_split)
    num_classes = int(self._max(train_y)) + 1
    return train_probe(train_x, train_y, val_x, val_y, num_classes, epochs=e.epochs,
                       warmup_epochs=e.warmup_epochs, base_lr=e.base_lr,
                       batch_size=e.probe_batch_size, seed=e.seed, mesh=self.mesh)
