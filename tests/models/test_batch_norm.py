"""BatchNorm against NumPy: the batch normalized with its biased variance, the unbiased one kept."""
import flax.linen as nn
import jax
import numpy as np

from mimjax.models import batch_norm

MOMENTUM, EPS = 0.9, 1e-5


def _batch(n=6, features=5, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((n, features)) * 3 + 1).astype(np.float32)


def _init(x):
  bn = batch_norm.BatchNorm(momentum=MOMENTUM, epsilon=EPS)
  variables = bn.init(jax.random.key(0), x, True)
  # Non-trivial affine parameters, so the output checks cover them.
  rng = np.random.default_rng(1)
  variables = dict(variables, params={
      "scale": rng.uniform(0.5, 2, x.shape[-1]).astype(np.float32),
      "bias": rng.normal(size=x.shape[-1]).astype(np.float32)})
  return bn, variables


def test_variables_are_named_and_shaped_as_flax_batchnorm():
  """Checkpoints written with flax's BatchNorm load unchanged."""
  x = _batch()
  ours = jax.eval_shape(lambda: batch_norm.BatchNorm().init(jax.random.key(0), x, True))
  flax = jax.eval_shape(lambda: nn.BatchNorm(use_running_average=False).init(
      jax.random.key(0), x))
  assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(flax)
  assert jax.tree_util.tree_leaves(ours) == jax.tree_util.tree_leaves(flax)
  init = batch_norm.BatchNorm().init(jax.random.key(0), x, True)
  np.testing.assert_array_equal(init["batch_stats"]["mean"], 0)  # init leaves them alone
  np.testing.assert_array_equal(init["batch_stats"]["var"], 1)


def test_train_mode_keeps_the_unbiased_variance_and_normalizes_with_the_biased_one():
  x = _batch()
  bn, variables = _init(x)
  y, updated = bn.apply(variables, x, True, mutable=["batch_stats"])
  stats = updated["batch_stats"]
  x64 = x.astype(np.float64)
  # From the initial statistics (mean 0, var 1): PyTorch's update with ddof=1.
  np.testing.assert_allclose(stats["mean"], (1 - MOMENTUM) * x64.mean(0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(stats["var"], MOMENTUM * 1 + (1 - MOMENTUM) * x64.var(0, ddof=1),
                             rtol=1e-6)
  # The batch itself is normalized with the biased variance (ddof=0), as PyTorch does.
  p = variables["params"]
  expected = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + EPS) * p["scale"] + p["bias"]
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_inference_mode_uses_the_running_statistics():
  x = _batch()
  bn, variables = _init(x)
  stats = {"mean": np.full(5, 0.5, np.float32), "var": np.full(5, 4.0, np.float32)}
  variables = dict(variables, batch_stats=stats)
  y = bn.apply(variables, x, False)
  p = variables["params"]
  expected = (x - 0.5) / np.sqrt(4.0 + EPS) * p["scale"] + p["bias"]
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  # An example's output does not depend on the rest of the batch.
  np.testing.assert_allclose(bn.apply(variables, x[:1], False), y[:1], rtol=1e-6)
