"""Held-out MAE loss: the reconstruction loss on a validation split under fixed masks.

The masks of batch i come from `fold_in(key(seed), i)` over the global batch, so every run of
the evaluator (each step, each process count) scores the same patches of the same images, and
the numbers are comparable along a run and across runs. Padding rows are left out.
"""
import jax
import jax.numpy as jnp

from mimjax import data
from mimjax import methods
from mimjax import sharding
from mimjax.evals import features as features_lib
from mimjax.evals import registry
from mimjax.models import mae


@registry.register("reconstruction")
class ReconstructionEvaluator:
  """`run(params, step)` -> {'loss'}: MAE's loss (its norm_pix_loss setting) on `split`."""
  DEFAULTS = dict(split="validation", seed=0)

  def __init__(self, config, eval_config, model, mesh):
    self.eval_config = eval_config
    self.cfg = features_lib.input_config(config, eval_config)
    self.mesh = mesh
    method = methods.get(config.method)

    def loss_terms(params, images, valid, index):
      x = data.normalize(images)
      out = method.reconstruct(model, params, x,
                               jax.random.fold_in(jax.random.key(eval_config.seed), index))
      mask = out.mask * valid[:, None]  # padding rows do not count
      count = jnp.sum(mask)
      loss = mae.reconstruction_loss(x, out.pred, mask, model.patch, model.norm_pix_loss)
      return jnp.where(count > 0, loss * count, 0.0), count

    self._terms = jax.jit(loss_terms, out_shardings=sharding.replicated(mesh))

  @staticmethod
  def validate(config, eval_config, name, num_processes, num_devices):
    if not hasattr(methods.get(config.method), "reconstruct"):
      raise ValueError(f"config.evals.{name}.type: 'reconstruction' scores a method that "
                       f"reconstructs masked images, which {config.method!r} does not")
    cfg = features_lib.input_config(config, eval_config)
    features_lib.check_split(cfg, eval_config.split, f"config.evals.{name}.split", num_processes,
                             num_devices, labelled=False)

  def run(self, params, step=None) -> dict[str, float]:
    del step
    total = count = 0.0
    batches = features_lib.eval_batches(self.cfg, self.eval_config.split, self.mesh)
    for i, batch in enumerate(batches):
      s, n = self._terms(params, batch["image"], batch["valid"], i)
      total, count = total + float(s), count + float(n)
    return dict(loss=total / max(count, 1.0))
