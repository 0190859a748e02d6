"""The optimizer: AdamW with the reference weight-decay mask and a per-step warm-up + cosine schedule."""
import math

import jax
import optax


def peak_learning_rate(base_lr: float, batch_size: int, rule: str) -> float:
  """MAE scales linearly (base * batch / 256); LUT by the square root (base * sqrt(batch) / 4)."""
  if rule == "linear":
    return base_lr * batch_size / 256
  if rule == "sqrt":
    return base_lr * math.sqrt(batch_size) / 4
  raise ValueError(f"unknown lr scaling rule {rule!r}: use 'linear' or 'sqrt'")


def schedule(peak_lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 over `warmup_steps`, then cosine to 0 at `total_steps`."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=0.0)


def decay_mask(params):
  """Decay every parameter except 1-D ones and biases (cls and mask tokens are decayed)."""
  def decayed(path, leaf):
    name = getattr(path[-1], "key", str(path[-1]))
    return leaf.ndim > 1 and name != "bias"
  return jax.tree_util.tree_map_with_path(decayed, params)


def make(config, lr_schedule: optax.Schedule) -> optax.GradientTransformation:
  """AdamW per `config.optim`; optional global-norm clipping (the reference uses none)."""
  opt = config.optim
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  parts.append(optax.adamw(lr_schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=opt.weight_decay, mask=decay_mask))
  return optax.chain(*parts)
