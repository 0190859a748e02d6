"""LUT's heads, BC loss, teacher and EMA against direct NumPy computations."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mimjax import methods
from mimjax.models import lut
from mimjax.models import masking

N, SIZE, PATCH = 4, 16, 4


@pytest.fixture(scope="module")
def setup():
  model = lut.LUT("mu/4", decoder_width=32, decoder_depth=1, decoder_heads=2, head_hidden=64)
  rng = np.random.default_rng(0)
  view1 = jnp.asarray(rng.normal(size=(N, SIZE, SIZE, 3)), jnp.float32)
  view2 = jnp.asarray(rng.normal(size=(N, SIZE, SIZE, 3)), jnp.float32)
  noise = masking.sample_noise(jax.random.key(1), N, (SIZE // PATCH) ** 2)
  variables = model.init(jax.random.key(2), view1, view2, noise)
  return model, variables, view1, view2, noise


def numpy_bc(a, b):
  a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
  return np.mean(2 - 2 * np.sum(a * b, axis=-1))


def test_bc_loss_equals_numpy():
  rng = np.random.default_rng(1)
  q1, q2, z1, z2 = (rng.normal(size=(8, 16)).astype(np.float32) for _ in range(4))
  expected = (numpy_bc(q2, z1) + numpy_bc(q1, z2)) / 2
  np.testing.assert_allclose(lut.cross_view_bc_loss(q1, q2, z1, z2), expected, rtol=1e-6)
  assert lut.bc_loss(q1, q1) == pytest.approx(0, abs=1e-6)
  assert lut.bc_loss(q1, -q1) == pytest.approx(4, abs=1e-5)


def test_ema_momentum_schedule():
  total = 1000
  assert float(lut.ema_momentum(0, total)) == pytest.approx(0.996, abs=1e-7)
  assert float(lut.ema_momentum(total // 2, total)) == pytest.approx(0.998, abs=1e-7)
  assert float(lut.ema_momentum(total, total)) == pytest.approx(1.0, abs=1e-7)
  quarter = 1 - 0.004 * (1 + np.cos(np.pi / 4)) / 2
  assert float(lut.ema_momentum(total // 4, total)) == pytest.approx(quarter, abs=1e-7)


def official_ema_schedule(base, epochs, niter_per_ep):
  """The official main_lut.py's teacher decay: cosine_scheduler(base, 1, epochs, len(loader)),
  one value per micro-batch (no warm-up), restated."""
  iters = np.arange(epochs * niter_per_ep)
  return 1 + 0.5 * (base - 1) * (1 + np.cos(np.pi * iters / len(iters)))


def test_ema_momentum_without_accumulation_is_unchanged():
  total = 1000
  steps = jnp.arange(total + 1)
  before = 1 - (1 - 0.996) * (1 + jnp.cos(np.pi * steps.astype(jnp.float32) / total)) / 2
  np.testing.assert_array_equal(lut.ema_momentum(steps, total), before)
  np.testing.assert_array_equal(lut.ema_momentum(steps, total, accum_steps=1), before)


def test_ema_momentum_reads_the_official_schedule_at_the_last_micro_batch():
  """engine_lut.py updates the teacher after micro-batch it = len(loader) * epoch + data_iter_step
  when (data_iter_step + 1) % accum_iter == 0: optimizer step k reads decay[4k + 3]."""
  total_steps, accum, epochs = 250, 4, 5
  schedule = official_ema_schedule(0.996, epochs, total_steps * accum // epochs)
  k = np.arange(total_steps)
  np.testing.assert_allclose(lut.ema_momentum(k, total_steps, 0.996, accum),
                             schedule[accum * k + accum - 1], rtol=0, atol=1e-7)
  # Mid-run, three micro-batches move the value by ~2e-5: the tolerance tells them apart.
  assert abs(schedule[500 + 3] - schedule[500]) > 1e-5


def test_lut_after_update_follows_the_accumulation_steps():
  c = ml_collections.ConfigDict({"optim": {"accum_steps": 4}, "lut": {"ema_base": 0.996}})
  leaf = lambda: jnp.zeros(3)
  state = {"params": {"encoder": leaf(), "projector": leaf(), "decoder": leaf()},
           "batch_stats": {"projector": leaf()},
           "teacher": {"params": {"encoder": leaf(), "projector": leaf()},
                       "batch_stats": {"projector": leaf()}}}
  schedule = official_ema_schedule(0.996, 1, 400)
  _, metrics = methods.get("lut").after_update(c, state, 37, 100)
  assert float(metrics["ema_momentum"]) == pytest.approx(schedule[4 * 37 + 3], abs=1e-7)


def test_head_batchnorm_keeps_the_unbiased_running_variance():
  """One train-mode pass from the initial statistics (mean 0, var 1), as PyTorch's BatchNorm1d:
  running var = m * 1 + (1 - m) * the unbiased variance of the pre-BN activations."""
  head = lut.ProjectionHead(hidden=16, out=8)
  x = np.random.default_rng(3).standard_normal((6, 12)).astype(np.float32)
  variables = head.init(jax.random.key(0), x, True)
  _, updated = head.apply(variables, x, True, mutable=["batch_stats"])
  h = x.astype(np.float64) @ np.asarray(variables["params"]["fc1"]["kernel"], np.float64)
  momentum = 0.9
  np.testing.assert_allclose(updated["batch_stats"]["bn"]["var"],
                             momentum * 1 + (1 - momentum) * h.var(0, ddof=1), rtol=1e-5)
  np.testing.assert_allclose(updated["batch_stats"]["bn"]["mean"], (1 - momentum) * h.mean(0),
                             rtol=1e-5, atol=1e-6)


def test_ema_update_covers_params_and_batch_stats(setup):
  model, variables, view1, view2, noise = setup
  teacher = lut.teacher_subset(variables)
  assert set(teacher["params"]) == {"encoder", "projector"}
  assert set(teacher["batch_stats"]) == {"projector"}
  student = jax.tree_util.tree_map(lambda x: x + 1.0, variables)
  updated = lut.ema_update(teacher, student, 0.9)
  for path in (("params", "encoder", "cls"), ("batch_stats", "projector", "bn", "var"),
               ("params", "projector", "fc1", "kernel")):
    t, u = teacher, updated
    for key in path:
      t, u = t[key], u[key]
    np.testing.assert_allclose(u, np.asarray(t) + 0.1, rtol=1e-6, atol=1e-6)


def test_no_gradient_reaches_the_teacher(setup):
  model, variables, view1, view2, noise = setup
  teacher = lut.teacher_subset(variables)

  def loss(student_params, teacher_params):
    out, _ = model.apply({"params": student_params, "batch_stats": variables["batch_stats"]},
                         view1, view2, noise, method="student", mutable=["batch_stats"])
    z1, z2 = model.apply({"params": teacher_params, "batch_stats": teacher["batch_stats"]},
                         view1, view2, method="teacher")
    return out.reconstruction.loss + 0.25 * lut.cross_view_bc_loss(out.q1, out.q2, z1, z2)

  g_student, g_teacher = jax.grad(loss, argnums=(0, 1))(variables["params"], teacher["params"])
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree_util.tree_leaves(g_teacher))
  # ...while the student's heads and encoder do get gradient from the BC term.
  assert float(jnp.abs(g_student["predictor"]["fc2"]["kernel"]).max()) > 0
  assert float(jnp.abs(g_student["encoder"]["cls"]).max()) > 0


def test_student_batchnorm_normalizes_each_view_separately(setup):
  model, variables, view1, view2, noise = setup
  run = lambda v2: model.apply(variables, view1, v2, noise, method="student",
                               mutable=["batch_stats"])
  (out_a, stats_a), (out_b, _) = run(view2), run(view2 * 3.0 + 1.0)
  np.testing.assert_allclose(out_a.q1, out_b.q1, rtol=1e-5, atol=1e-6)  # view 1 untouched
  assert not np.allclose(out_a.q2, out_b.q2, atol=1e-3)
  # Running statistics moved twice (once per view), momentum 0.9.
  old = variables["batch_stats"]["projector"]["bn"]["mean"]
  new = stats_a["batch_stats"]["projector"]["bn"]["mean"]
  assert not np.allclose(old, new)


def test_teacher_uses_running_statistics_and_full_views(setup):
  model, variables, view1, view2, noise = setup
  teacher = lut.teacher_subset(variables)
  z1, _ = model.apply(teacher, view1, view2, method="teacher")
  z1_alone, _ = model.apply(teacher, view1[:1], view2[:1], method="teacher")
  # Inference-mode BatchNorm: an example's output does not depend on the rest of the batch.
  np.testing.assert_allclose(z1[:1], z1_alone, rtol=1e-5, atol=1e-6)
  tokens = model.apply(teacher, view1, method="encode")
  pooled = np.asarray(tokens)[:, 1:].mean(axis=1)
  direct = lut.ProjectionHead(64, 32).apply(
      {"params": teacher["params"]["projector"], "batch_stats": teacher["batch_stats"]["projector"]},
      pooled, False)
  np.testing.assert_allclose(z1, direct, rtol=1e-5, atol=1e-6)


def test_student_mae_loss_on_view1_with_first_mask(setup):
  model, variables, view1, view2, noise = setup
  out, _ = model.apply(variables, view1, view2, noise, method="student", mutable=["batch_stats"])
  mae_only = model.apply(variables, view1, noise, method=lambda m, x, n: m.reconstruct(
      x, masking.random_masking(n, m.mask_ratio)))
  np.testing.assert_allclose(out.reconstruction.loss, mae_only.loss, rtol=1e-5)
  np.testing.assert_array_equal(out.reconstruction.mask, mae_only.mask)
