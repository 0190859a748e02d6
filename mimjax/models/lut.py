"""LUT: MAE plus the broader-context (BC) loss on the unmasked tokens, with an EMA teacher.

The student runs the encoder on two disjointly masked views, the decoder and MAE loss on view 1,
and `predictor(projector(pooled visible tokens))` on each view. The teacher is an EMA of the
student's encoder and projector (parameters and BatchNorm statistics: the only parts its forward
uses), run on the full views with BatchNorm in inference mode.
"""
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mimjax.models import batch_norm
from mimjax.models import masking
from mimjax.models import mae

# The parts of the student the teacher keeps an EMA of.
TEACHER_MODULES = ("encoder", "projector")


class ProjectionHead(nn.Module):
  """Dense (no bias) -> BatchNorm over the whole (global) batch -> ReLU -> Dense (no bias)."""
  hidden: int
  out: int

  @nn.compact
  def __call__(self, x, train: bool):
    dense = lambda features, name: nn.Dense(
        features, use_bias=False, kernel_init=nn.initializers.xavier_uniform(), name=name)
    x = dense(self.hidden, "fc1")(x.astype(jnp.float32))
    # PyTorch's BatchNorm1d defaults in Flax terms, running statistics as PyTorch keeps them.
    x = batch_norm.BatchNorm(momentum=0.9, epsilon=1e-5, name="bn")(x, train)
    return dense(self.out, "fc2")(nn.relu(x))


class StudentOutput(NamedTuple):
  reconstruction: mae.Reconstruction  # MAE on view 1
  q1: jax.Array
  q2: jax.Array


class LUT(mae.MAE):
  """MAE with LUT's projector and predictor heads (hidden width `head_hidden`)."""
  head_hidden: int = 4096

  def setup(self):
    super().setup()
    width = self.encoder.spec.width
    self.projector = ProjectionHead(self.head_hidden, width)
    self.predictor = ProjectionHead(self.head_hidden, width)

  def _pooled(self, images, ids_keep=None):
    """Mean of the patch tokens (cls excluded) after the final LN, for both views in one pass."""
    tokens = self.encoder(images, ids_keep)
    return tokens, jnp.mean(tokens[:, 1:].astype(jnp.float32), axis=1)

  def student(self, view1, view2, noise, train: bool = True) -> StudentOutput:
    m1, m2 = masking.two_view_masking(noise, self.mask_ratio)
    n = view1.shape[0]
    tokens, pooled = self._pooled(jnp.concatenate([view1, view2]),
                                  jnp.concatenate([m1.ids_keep, m2.ids_keep]))
    pred = self.decoder(tokens[:n], m1.ids_restore, self.grid(view1))
    loss = mae.reconstruction_loss(view1, pred, m1.mask, self.patch, self.norm_pix_loss)
    # Each view is normalized by BatchNorm on its own, as in the reference.
    q1 = self.predictor(self.projector(pooled[:n], train), train)
    q2 = self.predictor(self.projector(pooled[n:], train), train)
    return StudentOutput(mae.Reconstruction(loss, pred, m1.mask), q1, q2)

  def teacher(self, view1, view2):
    """z_i = projector(mean of all patch tokens of full view i), BatchNorm in inference mode."""
    n = view1.shape[0]
    _, pooled = self._pooled(jnp.concatenate([view1, view2]))
    return self.projector(pooled[:n], False), self.projector(pooled[n:], False)

  def __call__(self, view1, view2, noise, train: bool = True):
    """Used for init: touches every parameter (student and teacher paths)."""
    out = self.student(view1, view2, noise, train)
    self.teacher(view1, view2)
    return out


def bc_loss(a, b):
  """mean_batch(2 - 2 cos(a, stop_grad(b))); vectors normalized like F.normalize (eps 1e-12)."""
  normalize = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  b = jax.lax.stop_gradient(b)
  return jnp.mean(2 - 2 * jnp.sum(normalize(a) * normalize(b), axis=-1))


def cross_view_bc_loss(q1, q2, z1, z2):
  """L_BC = (bc(q2, z1) + bc(q1, z2)) / 2: each view predicts the teacher's other view."""
  return (bc_loss(q2, z1) + bc_loss(q1, z2)) / 2


def ema_momentum(step, total_steps: int, base: float = 0.996, accum_steps: int = 1):
  """Cosine from `base` to 1, read where the official engine reads it.

  The LUT code's schedule has one value per micro-batch of the run, and the teacher is updated
  after the last micro-batch of each optimizer step: step k reads micro-batch
  k * accum_steps + accum_steps - 1 of total_steps * accum_steps (step k of total_steps without
  accumulation).
  """
  micro_batch = jnp.asarray(step, jnp.int32) * accum_steps + (accum_steps - 1)
  progress = micro_batch.astype(jnp.float32) / (total_steps * accum_steps)
  return 1 - (1 - base) * (1 + jnp.cos(math.pi * progress)) / 2


def teacher_subset(variables: dict[str, Any]) -> dict[str, Any]:
  """The part of the student's variables that the teacher mirrors (see TEACHER_MODULES)."""
  return {
      collection: {k: v for k, v in tree.items() if k in TEACHER_MODULES}
      for collection, tree in variables.items()
  }


def ema_update(teacher, student, momentum):
  """teacher = m * teacher + (1 - m) * student, leaf by leaf over the teacher's tree."""
  student = teacher_subset(student)
  return jax.tree_util.tree_map(lambda t, s: momentum * t + (1 - momentum) * s, teacher, student)
