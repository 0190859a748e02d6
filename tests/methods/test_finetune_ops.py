"""Fine-tuning's batch ops against hand-computed values: label smoothing, mixup, cutmix, random
erasing, drop path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimjax.data import mixup
from mimjax.models import vit

# Jitted once: eager dispatch of the many small ops is slower than the compile.
mix = jax.jit(mixup.mixup_cutmix, static_argnums=(3, 4))
erase = jax.jit(mixup.random_erasing, static_argnums=2)


def test_label_smoothing_targets():
  targets = np.asarray(mixup.smooth_targets(jnp.array([2, 0]), 4, 0.1))
  # timm: off = 0.1 / 4, on = 1 - 0.1 + 0.1 / 4.
  np.testing.assert_allclose(targets, [[0.025, 0.025, 0.925, 0.025],
                                       [0.925, 0.025, 0.025, 0.025]], rtol=1e-6)


def _batch():
  rng = np.random.default_rng(0)
  images = rng.standard_normal((4, 8, 10, 3)).astype(np.float32)
  return images, mixup.smooth_targets(jnp.array([0, 1, 2, 3]), 4, 0.0)


def test_mixup_mixes_with_the_reversed_batch():
  images, targets = _batch()
  for seed in range(4):
    out, soft, lam = mix(jax.random.key(seed), images, targets, 0.8, 0.0)
    lam = float(lam)
    assert 0 < lam < 1
    np.testing.assert_allclose(out, lam * images + (1 - lam) * images[::-1], atol=1e-6)
    expected = np.zeros((4, 4))
    for i in range(4):
      expected[i, i] += lam
      expected[i, 3 - i] += 1 - lam
    np.testing.assert_allclose(soft, expected, atol=1e-6)


def test_cutmix_pastes_a_box_and_corrects_lam():
  images, targets = _batch()
  seen = 0
  for seed in range(8):
    out, soft, lam = mix(jax.random.key(seed), images, targets, 0.0, 1.0)
    out, lam = np.asarray(out), float(lam)
    pasted = np.all(out == images[::-1], axis=-1) & ~np.all(out == images, axis=-1)
    box = pasted[0]
    # Exactly one axis-aligned box, the same for every image, of area (1 - lam) H W.
    assert np.array_equal(pasted, np.broadcast_to(box, pasted.shape))
    ys, xs = np.nonzero(box)
    if ys.size:
      assert box[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
      seen += 1
    assert box.sum() == pytest.approx((1 - lam) * 8 * 10)
    np.testing.assert_allclose(soft[0], [lam, 0, 0, 1 - lam], atol=1e-6)
  assert seen >= 4


def test_cutmix_box_hand_computed():
  # lam 0.75 on 8 x 10: ratio 0.5, cut 4 x 5 around the drawn centre, clipped to the image.
  (top, bottom, left, right), lam = mixup.cutmix_box(jax.random.key(3), 8, 10, jnp.float32(0.75))
  cy = int(jax.random.randint(jax.random.split(jax.random.key(3))[0], (), 0, 8))
  cx = int(jax.random.randint(jax.random.split(jax.random.key(3))[1], (), 0, 10))
  assert (int(top), int(bottom)) == (max(cy - 2, 0), min(cy + 2, 8))
  assert (int(left), int(right)) == (max(cx - 2, 0), min(cx + 2, 10))
  area = (int(bottom) - int(top)) * (int(right) - int(left))
  assert float(lam) == pytest.approx(1 - area / 80)


def test_both_on_switches_between_mixup_and_cutmix():
  images, targets = _batch()
  cut = 0
  for seed in range(40):
    out, _, lam = mix(jax.random.key(seed), images, targets, 0.8, 1.0)
    mixed = np.allclose(out, float(lam) * images + (1 - float(lam)) * images[::-1], atol=1e-6)
    cut += not mixed
  assert 10 <= cut <= 30  # switch probability 0.5


def test_random_erasing_fills_one_box_with_noise_at_its_rate():
  images = jnp.zeros((400, 16, 16, 3))
  keys = jax.random.split(jax.random.key(0), 400)
  out = np.asarray(erase(keys, images, 0.25))
  erased = (out != 0).any(axis=(1, 2, 3))
  assert 0.18 < erased.mean() < 0.32
  for image in out[erased][:20]:
    box = (image != 0).all(-1)
    ys, xs = np.nonzero(box)
    assert box[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
    assert 0.02 * 256 * 0.5 <= box.sum() <= 256 / 3 + 16
  noise = out[erased][out[erased] != 0]
  assert abs(noise.std() - 1) < 0.1 and abs(noise.mean()) < 0.1


def test_drop_path_keeps_the_expectation():
  x = jnp.ones((20000, 3, 2))
  layer = vit.DropPath(rate=0.3, deterministic=False)
  out = np.asarray(layer.apply({}, x, rngs={"dropout": jax.random.key(0)}))
  kept = out[:, 0, 0] != 0
  # Whole samples are dropped (never single tokens), the kept ones scaled by 1 / 0.7.
  assert np.all((out == 0) | np.isclose(out, 1 / 0.7))
  assert np.array_equal(np.broadcast_to(kept[:, None, None], out.shape), out != 0)
  assert abs(kept.mean() - 0.7) < 0.01 and abs(out.mean() - 1.0) < 0.02
  np.testing.assert_array_equal(vit.DropPath(0.3, deterministic=True).apply({}, x), x)


def test_drop_path_rates_rise_linearly_over_the_blocks():
  """Block i of depth d drops with rate drop_path * i / (d - 1), as timm's torch.linspace."""
  torch = pytest.importorskip("torch")
  for depth, rate in ((12, 0.1), (24, 0.2), (32, 0.3)):
    expected = [x.item() for x in torch.linspace(0, rate, depth)]
    np.testing.assert_allclose(vit.drop_path_rates(rate, depth), expected, rtol=1e-6, atol=1e-8)
