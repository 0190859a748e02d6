"""The optimizer: AdamW with the reference weight-decay mask and a per-step warm-up + cosine schedule."""
import math

import jax
import optax

from mimjax.models import vit


def peak_learning_rate(base_lr: float, batch_size: int, rule: str) -> float:
  """MAE scales linearly (base * batch / 256); LUT by the square root: base * sqrt(batch) / 4
  in pre-training ('sqrt'), base * sqrt(batch) / 8 in fine-tuning ('sqrt8')."""
  if rule == "linear":
    return base_lr * batch_size / 256
  if rule == "sqrt":
    return base_lr * math.sqrt(batch_size) / 4
  if rule == "sqrt8":
    return base_lr * math.sqrt(batch_size) / 8
  raise ValueError(f"unknown lr scaling rule {rule!r}: use 'linear', 'sqrt' or 'sqrt8'")


def schedule(peak_lr: float, warmup_steps: int, total_steps: int,
             min_lr: float = 0.0) -> optax.Schedule:
  """Linear warm-up from 0 over `warmup_steps`, then cosine to `min_lr` at `total_steps`."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=min_lr)


def _name(entry) -> str:
  return str(getattr(entry, "key", entry))


def decay_mask(params, decay_cls: bool = True):
  """Decay every parameter except 1-D ones, biases and a learned position embedding; the cls
  token unless `decay_cls` is off.

  Pre-training decays the cls and mask tokens (MAE's optim_factory; its position embeddings are
  fixed); fine-tuning excludes the cls token and `pos_embed` (timm's `no_weight_decay` list).
  """
  def decayed(path, leaf):
    name = _name(path[-1])
    return (leaf.ndim > 1 and name not in ("bias", "pos_embed")
            and (decay_cls or name != "cls"))
  return jax.tree_util.tree_map_with_path(decayed, params)


def layer_id(path, depth: int) -> int:
  """The layer of a parameter for layer-wise lr decay, as MAE's `get_layer_id_for_vit`: the
  embeddings (cls, position and patch embedding) are layer 0, block i is layer i + 1, the rest
  (fc_norm, head) layer depth + 1."""
  names = [_name(p) for p in path]
  if names[0] == "encoder":
    if names[1] in ("cls", "pos_embed", "patch_embed"):
      return 0
    if names[1] == "transformer" and names[2].startswith("block"):
      return int(names[2][len("block"):]) + 1
  return depth + 1


def layer_scales(params, depth: int, decay: float):
  """Per-parameter lr multipliers decay^(depth + 1 - layer_id) (1 everywhere for decay = 1)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: decay ** (depth + 1 - layer_id(path, depth)), params)


def scale_by_layer(depth: int, decay: float) -> optax.GradientTransformation:
  """Multiplies each update, weight decay included, by its layer's scale (as a torch param
  group's lr_scale multiplies the AdamW step)."""
  return optax.stateless(lambda updates, params: jax.tree_util.tree_map(
      lambda u, s: u * s, updates, layer_scales(updates, depth, decay)))


def make(config, lr_schedule: optax.Schedule) -> optax.GradientTransformation:
  """AdamW per `config.optim`; optional global-norm clipping (the reference uses none) and
  layer-wise lr decay (fine-tuning)."""
  opt = config.optim
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  decay_cls = opt.get("decay_cls", True)
  parts.append(optax.adamw(lr_schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=opt.weight_decay,
                           mask=lambda params: decay_mask(params, decay_cls)))
  if opt.get("layer_decay", 1.0) != 1.0:
    depth = vit.decode_variant(config.model.variant).depth
    parts.append(scale_by_layer(depth, opt.layer_decay))
  return optax.chain(*parts)
