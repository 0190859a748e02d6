"""`mimjax.load_pretrained`: an export directory gives the model's own encode/reconstruct."""
import functools

import jax
import numpy as np
import pytest

import mimjax
from mimjax import api
from mimjax import export
from mimjax.models import mae


def test_load_pretrained_matches_apply(tiny, tmp_path):
  kwargs, size, params = tiny
  export.save_hf(params, kwargs, size, str(tmp_path))
  loaded = mimjax.load_pretrained(tmp_path)
  assert loaded.model_kwargs == kwargs and loaded.image_size == size

  model = mae.MAE(**kwargs)
  rng = np.random.default_rng(0)
  images = rng.standard_normal((2, size, size, 3)).astype(np.float32)  # numpy in
  noise = rng.random((2, 16)).astype(np.float32)
  tokens = loaded.encode(images)
  want = jax.jit(functools.partial(model.apply, method="encode"))({"params": params}, images)
  assert tokens.shape == (2, 17, 32)
  np.testing.assert_allclose(tokens, want, rtol=1e-6, atol=1e-6)

  loss, pred, mask = loaded.reconstruct(images, noise)
  want = jax.jit(model.apply)({"params": params}, images, noise)
  assert pred.shape == (2, 16, 48) and mask.shape == (2, 16) and float(mask.sum()) == 2 * 12
  np.testing.assert_allclose(pred, want.pred, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(mask, want.mask)
  np.testing.assert_allclose(loss, want.loss, rtol=1e-6)

  with pytest.raises(ValueError, match=r"noise must have shape \(batch, patches\) = \(2, 16\)"):
    loaded.reconstruct(images, noise[:, :8])
  with pytest.raises(ValueError, match="NHWC with 3 channels"):
    loaded.encode(images.transpose(0, 3, 1, 2))


def test_unknown_directory_fails_clearly(tmp_path):
  (tmp_path / "weights.pt").write_bytes(b"")
  with pytest.raises(FileNotFoundError,
                     match=r"expected a directory holding config.json \+ model.safetensors.*"
                           r"checkpoints/.*found: \['weights.pt'\]"):
    mimjax.load_pretrained(tmp_path)
  with pytest.raises(FileNotFoundError, match="no such directory"):
    mimjax.load_pretrained(tmp_path / "missing")


def test_loaders_list_has_the_workdir_hook():
  assert [loader.name for loader in api._LOADERS] == ["export", "workdir"]  # pylint: disable=protected-access
