"""Parity of mimjax MAE with Hugging Face `ViTMAEForPreTraining` (torch, float32) on exported weights.

Same weights (through `export.save_hf` -> `from_pretrained`), same images and noise: same mask, and
the same encoder output (visible tokens after the final LN), predictions and loss to a relative
error of 1e-5. The sensitivity tests show the check has teeth: a tanh-approximate GELU or LayerNorm
eps 1e-5 on the HF side breaks it by more than 10x.
"""
import functools
import json
import os
import shutil

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mimjax import export  # pylint: disable=g-import-not-at-top
from mimjax.models import mae
from mimjax.models import masking
from mimjax.models import vit
from tests.export import parity

TOL = 1e-5
# (image size, MAE kwargs): ViT-mu/16 at 224 px with a 2-layer decoder; ViT-mu/4 at 32 px, 1 layer.
GEOMETRIES = {
    "224px-p16": (224, dict(variant="mu/16", decoder_width=32, decoder_depth=2, decoder_heads=2)),
    "32px-p4": (32, dict(variant="mu/4", decoder_width=16, decoder_depth=1, decoder_heads=2)),
}


@functools.cache
def _case(geometry: str, norm_pix_loss: bool, tmp_root: str):
  """Exports random weights; returns (dir, images, noise, (mimjax Reconstruction, latent))."""
  size, kwargs = GEOMETRIES[geometry]
  kwargs = dict(kwargs, norm_pix_loss=norm_pix_loss)
  model = mae.MAE(**kwargs)
  rng = np.random.default_rng(1)
  images = rng.standard_normal((2, size, size, 3)).astype(np.float32)
  noise = rng.random((2, (size // model.patch) ** 2)).astype(np.float32)
  params = parity.random_params(kwargs, size)
  out_dir = os.path.join(tmp_root, f"{geometry}-{norm_pix_loss}")
  export.save_hf(params, kwargs, size, out_dir)
  ours = jax.jit(functools.partial(model.apply, method=_reconstruct_and_latent))(
      {"params": params}, images, noise)
  return out_dir, images, noise, jax.tree.map(np.asarray, ours)


def _reconstruct_and_latent(model, images, noise):
  """MAE's output and its encoder's (masked) output, the visible tokens after the final LN."""
  latent = model.encoder(images, masking.random_masking(noise, model.mask_ratio).ids_keep)
  return model(images, noise), latent


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("hf_parity"))


def _run_hf(out_dir, images, noise, **config_changes):
  if config_changes:  # the same weights under a (deliberately wrong) config
    changed = out_dir + "-" + "-".join(f"{k}={v}" for k, v in sorted(config_changes.items()))
    os.makedirs(changed, exist_ok=True)
    with open(os.path.join(out_dir, "config.json")) as f:
      config = json.load(f)
    with open(os.path.join(changed, "config.json"), "w") as f:
      json.dump({**config, **config_changes}, f)
    shutil.copy(os.path.join(out_dir, "model.safetensors"), changed)
    out_dir = changed
  model, info = transformers.ViTMAEForPreTraining.from_pretrained(
      out_dir, attn_implementation="eager", output_loading_info=True)
  assert not any(info.values()), info  # no missing / unexpected / mismatched keys
  model.eval()
  pixels, noise = torch.from_numpy(images.transpose(0, 3, 1, 2)), torch.from_numpy(noise)
  with torch.no_grad():
    out = model(pixels, noise=noise)
    latent = model.vit(pixels, noise=noise).last_hidden_state
  return model, (out, latent)


def _errors(theirs, ours):
  """(mask equal, max relative error of latent, predictions and loss, the errors by name)."""
  (out, latent), (rec, our_latent) = theirs, ours
  errors = {"latent": parity.relative_error(latent.numpy(), our_latent),
            "pred": parity.relative_error(out.logits.numpy(), rec.pred),
            "loss": parity.relative_error(out.loss.numpy(), rec.loss)}
  return np.array_equal(out.mask.numpy(), rec.mask), max(errors.values()), errors


@pytest.mark.parametrize("norm_pix_loss", [True, False])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_hf_parity(geometry, norm_pix_loss, tmp_root):
  out_dir, images, noise, ours = _case(geometry, norm_pix_loss, tmp_root)
  model, out = _run_hf(out_dir, images, noise)
  # The loaded position embeddings are ours (the fixed sin-cos tables), not re-initialized.
  size, kwargs = GEOMETRIES[geometry]
  grid = (size // vit.decode_variant(kwargs["variant"]).patch,) * 2
  np.testing.assert_array_equal(model.vit.embeddings.position_embeddings.detach().numpy()[0],
                                vit.sincos_2d(vit.decode_variant(kwargs["variant"]).width, grid))
  np.testing.assert_array_equal(model.decoder.decoder_pos_embed.detach().numpy()[0],
                                vit.sincos_2d(kwargs["decoder_width"], grid))
  assert model.config.norm_pix_loss == norm_pix_loss
  mask_equal, error, errors = _errors(out, ours)
  print(f"{geometry} norm_pix_loss={norm_pix_loss}: relative errors {errors}")
  assert mask_equal
  assert 0 < ours[0].mask.sum() < ours[0].mask.size
  assert error <= TOL, errors


@pytest.mark.parametrize("change", [{"hidden_act": "gelu_new"}, {"layer_norm_eps": 1e-5}],
                         ids=["tanh-gelu", "ln-eps-1e-5"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_hf_parity_detects_wrong_gelu_or_eps(geometry, change, tmp_root):
  out_dir, images, noise, ours = _case(geometry, True, tmp_root)
  _, out = _run_hf(out_dir, images, noise, **change)
  mask_equal, error, errors = _errors(out, ours)
  print(f"{geometry} {change}: relative errors {errors}")
  assert mask_equal  # masking does not depend on the weights
  assert error > 10 * TOL, errors
