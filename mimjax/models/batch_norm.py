"""BatchNorm with PyTorch's running statistics.

Both normalize a training batch with its biased variance, but PyTorch's BatchNorm (and the
SyncBatchNorm of the LUT reference) keeps the *unbiased* variance in its running statistics,
n/(n-1) times Flax's, n being the number of values per feature. An inference-mode BatchNorm (the
LUT teacher's) reads that running variance, so it must be PyTorch's.

The variables are named and shaped as Flax's `nn.BatchNorm` (params `scale`, `bias`; batch_stats
`mean`, `var`), so checkpoints written with either load into the other.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
  """Normalizes each feature (the last axis) over all other axes."""
  momentum: float = 0.9  # Flax's convention: running = momentum * running + (1 - momentum) * batch
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,))
    bias = self.param("bias", nn.initializers.zeros, (features,))
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    if not train:
      mean, var = running_mean.value, running_var.value
    else:
      # The batch axis of a global jax.Array spans every device: synchronized statistics.
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axes)
      var = jnp.mean(jnp.square(x - mean), axes)
      if not self.is_initializing():  # as Flax: init's dummy batch leaves the statistics alone
        n = x.size // features
        # One value has no unbiased variance (PyTorch refuses it): keep 0 rather than inf.
        unbiased = var * (n / max(n - 1, 1))
        running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
        running_var.value = self.momentum * running_var.value + (1 - self.momentum) * unbiased
    return (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
