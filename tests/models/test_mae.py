"""MAE's loss against a direct NumPy computation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimjax.models import mae
from mimjax.models import masking


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_matches_numpy(norm_pix):
  rng = np.random.default_rng(0)
  images = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
  pred = rng.normal(size=(3, 4, 48)).astype(np.float32)
  mask = np.array([[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 0, 1]], np.float32)
  target = images.reshape(3, 2, 4, 2, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(3, 4, 48)
  if norm_pix:
    target = (target - target.mean(-1, keepdims=True)) / np.sqrt(
        target.var(-1, ddof=1, keepdims=True) + 1e-6)
  per_patch = ((pred - target) ** 2).mean(-1)
  expected = (per_patch * mask).sum() / mask.sum()
  got = mae.reconstruction_loss(images, pred, mask, 4, norm_pix)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_loss_ignores_visible_patches_and_trains():
  model = mae.MAE("mu/4", decoder_width=32, decoder_depth=1, decoder_heads=2)
  images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  noise = masking.sample_noise(jax.random.key(1), 2, 16)
  params = model.init(jax.random.key(2), images, noise)["params"]
  out = model.apply({"params": params}, images, noise)
  assert out.pred.shape == (2, 16, 48) and float(out.mask.sum()) == 2 * 12
  # Changing the pixels of a visible patch changes no target the loss looks at... but it does
  # change the encoder's input, so compare losses computed with the same predictions instead.
  visible = np.argwhere(np.asarray(out.mask) == 0)[0]
  row, col = divmod(int(visible[1]), 4)
  edited = np.asarray(images).copy()
  edited[visible[0], row * 4:(row + 1) * 4, col * 4:(col + 1) * 4] += 10
  same = mae.reconstruction_loss(edited, out.pred, out.mask, 4, True)
  np.testing.assert_allclose(same, out.loss, rtol=1e-6)
  grads = jax.grad(lambda p: model.apply({"params": p}, images, noise).loss)(params)
  assert float(jnp.abs(grads["encoder"]["patch_embed"]["kernel"]).max()) > 0
