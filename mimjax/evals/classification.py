"""Classification accuracy of a classifier being trained (fine-tuning): top-1, top-5, loss.

The model is the trainer's own (it maps normalized images to logits); padding rows of the last
batch are left out, so the numbers cover exactly the split's examples on any process count.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mimjax import data
from mimjax import sharding
from mimjax.evals import features as features_lib
from mimjax.evals import registry


@registry.register("classification")
class ClassificationEvaluator:
  """`run(params, step)` -> {'top1', 'top5', 'loss'} of the trainer's classifier on `split`."""
  DEFAULTS = dict(split="validation")

  def __init__(self, config, eval_config, model, mesh):
    self.eval_config = eval_config
    self.cfg = features_lib.input_config(config, eval_config)
    self.mesh = mesh
    num_classes = config.model.num_classes

    def counts(params, images, labels, valid):
      logits = model.apply({"params": params}, data.normalize(images)).astype(jnp.float32)
      valid = valid.astype(jnp.float32)
      top5 = jax.lax.top_k(logits, min(5, num_classes))[1]
      hit = top5 == labels[:, None]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
      return jnp.stack([jnp.sum(hit[:, 0] * valid), jnp.sum(jnp.any(hit, axis=1) * valid),
                        jnp.sum(loss * valid), jnp.sum(valid)])

    self._counts = jax.jit(counts, out_shardings=sharding.replicated(mesh))

  @staticmethod
  def validate(config, eval_config, name, num_processes, num_devices):
    if "num_classes" not in config.model:
      raise ValueError(f"config.evals.{name}.type: 'classification' needs a classifier "
                       "(config.method='finetune')")
    cfg = features_lib.input_config(config, eval_config)
    features_lib.check_split(cfg, eval_config.split, f"config.evals.{name}.split", num_processes,
                             num_devices, labelled=True)

  def run(self, params, step=None) -> dict[str, float]:
    del step
    totals = np.zeros(4)
    for batch in features_lib.eval_batches(self.cfg, self.eval_config.split, self.mesh):
      totals += np.asarray(self._counts(params, batch["image"], batch["label"], batch["valid"]),
                           np.float64)
    top1, top5, loss, n = totals
    n = max(n, 1.0)
    return dict(top1=top1 / n, top5=top5 / n, loss=loss / n)
