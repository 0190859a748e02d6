"""Weighted k-nearest-neighbour accuracy on frozen features (DINO's protocol).

Features of the train split (the bank) and of the val split are L2-normalized; each val image
takes its k most cosine-similar bank images, each votes for its label with weight exp(sim / T),
and the classes with the most votes are the prediction (top-1, top-5). Defaults: k = 20,
T = 0.07, the [CLS] token. The bank stays sharded over the mesh; each val batch is scored
against it in one jitted step, and the counts are exact integers, so the accuracy does not
depend on the device or process count.
"""
import jax
import jax.numpy as jnp

from mimjax import sharding
from mimjax.evals import features as features_lib
from mimjax.evals import registry


def knn_votes(bank, bank_labels, queries, k: int, temperature: float, num_classes: int):
  """(Q, num_classes) summed vote weights; bank rows with label < 0 (padding) never vote.

  `bank` (N, D) and `queries` (Q, D) must be L2-normalized.
  """
  sim = queries @ bank.T
  sim = jnp.where(bank_labels[None, :] >= 0, sim, -jnp.inf)
  top, idx = jax.lax.top_k(sim, min(k, bank.shape[0]))
  weights = jnp.where(jnp.isfinite(top), jnp.exp(top / temperature), 0.0)
  votes = jax.nn.one_hot(bank_labels[idx], num_classes) * weights[..., None]
  return votes.sum(axis=1)


def topk_correct(scores, labels, ks=(1, 5)):
  """Per k, the number of rows (label >= 0) whose label is among the k best-scored classes."""
  order = jnp.argsort(-scores, axis=-1, stable=True)
  hits = order == labels[:, None]
  valid = labels >= 0
  return tuple(jnp.sum(jnp.any(hits[:, :k], axis=-1) & valid) for k in ks)


@registry.register("knn")
class KnnEvaluator:
  """`run(params, step)` -> {'top1', 'top5'} on `val_split`, with `train_split` as the bank."""
  DEFAULTS = dict(train_split="train", val_split="validation", k=20, temperature=0.07,
                  feature="cls")

  def __init__(self, config, eval_config, model, mesh):
    self.eval_config = eval_config
    self.cfg = features_lib.input_config(config, eval_config)
    self.mesh = mesh
    self.extract = features_lib.Extractor(model, mesh, eval_config.feature, normalize=True)
    k, temperature = eval_config.k, eval_config.temperature
    replicated = sharding.replicated(mesh)

    def counts(bank, bank_labels, queries, labels, num_classes):
      votes = knn_votes(bank, bank_labels, queries, k, temperature, num_classes)
      top1, top5 = topk_correct(votes, labels)
      return top1, top5, jnp.sum(labels >= 0)

    self._counts = jax.jit(counts, static_argnums=4, out_shardings=replicated)
    self._max = jax.jit(jnp.max, out_shardings=replicated)

  @staticmethod
  def validate(config, eval_config, name, num_processes, num_devices):
    cfg = features_lib.input_config(config, eval_config)
    for key in ("train_split", "val_split"):
      features_lib.check_split(cfg, eval_config[key], f"config.evals.{name}.{key}", num_processes,
                               num_devices, labelled=True)
    if eval_config.k < 1:
      raise ValueError(f"config.evals.{name}.k: {eval_config.k} must be >= 1 (DINO uses 20)")
    if eval_config.temperature <= 0:
      raise ValueError(f"config.evals.{name}.temperature: must be positive (DINO uses 0.07)")
    if eval_config.feature not in features_lib.FEATURES:
      raise ValueError(f"config.evals.{name}.feature: {eval_config.feature!r} is not one of "
                       f"{features_lib.FEATURES}")

  def run(self, params, step=None) -> dict[str, float]:
    del step
    bank, bank_labels = self.extract(params, self.cfg, self.eval_config.train_split)
    num_classes = int(self._max(bank_labels)) + 1
    top1 = top5 = total = 0
    for batch in features_lib.eval_batches(self.cfg, self.eval_config.val_split, self.mesh):
      queries = self.extract.features(params, batch["image"])
      c1, c5, n = self._counts(bank, bank_labels, queries, batch["label"], num_classes)
      top1, top5, total = top1 + int(c1), top5 + int(c5), total + int(n)
    return dict(top1=top1 / max(total, 1), top5=top5 / max(total, 1))
