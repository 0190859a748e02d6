"""Parity of the mimjax encoder with timm's `VisionTransformer.forward_features` on exported weights.

`export.save_timm` -> strict `load_state_dict` -> the same tokens as `MAE.encode` (all tokens after
the final LayerNorm, cls first) to a relative error of 1e-5. The sensitivity tests show the check
would catch a tanh-approximate GELU or LayerNorm eps 1e-5 on the timm side.
"""
import functools
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from mimjax import export  # pylint: disable=g-import-not-at-top
from mimjax.models import mae
from tests.export import parity

timm = parity.import_timm()
from timm.models.vision_transformer import VisionTransformer  # pylint: disable=g-import-not-at-top

TOL = 1e-5
GEOMETRIES = {
    "224px-p16": (224, dict(variant="mu/16", decoder_width=32, decoder_depth=2, decoder_heads=2)),
    "32px-p4": (32, dict(variant="mu/4", decoder_width=16, decoder_depth=1, decoder_heads=2)),
}


@functools.cache
def _case(geometry: str, tmp_root: str):
  """Exports random weights with a 10-class head; returns (dir, images, mimjax encode output)."""
  size, kwargs = GEOMETRIES[geometry]
  model = mae.MAE(**kwargs)
  images = np.random.default_rng(2).standard_normal((2, size, size, 3)).astype(np.float32)
  params = parity.random_params(kwargs, size)
  out_dir = os.path.join(tmp_root, geometry)
  export.save_timm(params, kwargs, out_dir, num_classes=10, image_size=size)
  tokens = jax.jit(functools.partial(model.apply, method="encode"))({"params": params}, images)
  return out_dir, images, np.asarray(tokens)


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("timm_parity"))


def _forward_features(out_dir, images, **overrides):
  with open(os.path.join(out_dir, "config.json")) as f:
    args = json.load(f)["model_args"]
  model = VisionTransformer(**args, **overrides)
  state = safetensors_torch.load_file(os.path.join(out_dir, "model.safetensors"))
  model.load_state_dict(state, strict=True)
  model.eval()
  with torch.no_grad():
    return model.forward_features(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_timm_parity(geometry, tmp_root):
  out_dir, images, ours = _case(geometry, tmp_root)
  error = parity.relative_error(_forward_features(out_dir, images), ours)
  print(f"{geometry}: forward_features relative error {error:.2e}")
  assert error <= TOL


def test_timm_local_dir_parity(tmp_root):
  """`timm.create_model('local-dir:...', pretrained=True)` reads our config.json and weights."""
  out_dir, images, ours = _case("32px-p4", tmp_root)
  model = timm.create_model("local-dir:" + out_dir, pretrained=True)
  model.eval()
  with torch.no_grad():
    x = torch.from_numpy(images.transpose(0, 3, 1, 2))
    tokens, logits = model.forward_features(x).numpy(), model(x).numpy()
  assert parity.relative_error(tokens, ours) <= TOL
  head = model.head.weight.detach().numpy()
  np.testing.assert_allclose(logits, ours[:, 0] @ head.T + model.head.bias.detach().numpy(),
                             rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("change", ["tanh-gelu", "ln-eps-1e-5"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_timm_parity_detects_wrong_gelu_or_eps(geometry, change, tmp_root):
  out_dir, images, ours = _case(geometry, tmp_root)
  overrides = {"tanh-gelu": dict(act_layer=functools.partial(torch.nn.GELU, approximate="tanh")),
               "ln-eps-1e-5": dict(norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-5))}
  error = parity.relative_error(_forward_features(out_dir, images, **overrides[change]), ours)
  print(f"{geometry} {change}: forward_features relative error {error:.2e}")
  assert error > 10 * TOL
