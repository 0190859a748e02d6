"""Exports in the fine-tuning layout: timm with global average pooling and fc_norm (the final norm
dropped), fine-tuned classifiers to timm and to Hugging Face ViTForImageClassification."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimjax import export
from mimjax.models import classifier as classifier_lib
from mimjax.models import vit
from tests.export import parity

torch = pytest.importorskip("torch")
timm = parity.import_timm()
from timm.models.vision_transformer import VisionTransformer  # pylint: disable=g-import-not-at-top

TOL = 1e-5


def _timm(state, args):
  model = VisionTransformer(**args)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  return model.eval()


def _run(model, images, pre_logits=False):
  with torch.no_grad():
    x = torch.from_numpy(images.transpose(0, 3, 1, 2))
    return model.forward_head(model.forward_features(x), pre_logits=pre_logits).numpy()


def _rel(a, b):
  return float(np.abs(a - b).max() / np.abs(b).max())


def test_pretrained_encoder_exports_with_fresh_fc_norm(tiny):
  kwargs, size, params = tiny
  state = export.to_timm_state_dict(params, kwargs, size, num_classes=7, global_pool="avg")
  assert "norm.weight" not in state  # the pre-trained final norm is dropped
  np.testing.assert_array_equal(state["fc_norm.weight"], 1)
  np.testing.assert_array_equal(state["fc_norm.bias"], 0)
  model = _timm(state, export.timm_model_args(kwargs, size, 7, global_pool="avg"))
  assert isinstance(model.norm, torch.nn.Identity) and model.global_pool == "avg"
  images = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
  # mimjax: the blocks' tokens without the final norm, patch mean, LayerNorm(1, 0).
  encoder = {k: v for k, v in params["encoder"].items()}
  encoder["transformer"] = {k: v for k, v in encoder["transformer"].items() if k != "norm"}
  tokens = vit.Encoder(kwargs["variant"], final_norm=False).apply({"params": encoder}, images)
  pooled = np.asarray(tokens[:, 1:]).mean(1)
  mean, var = pooled.mean(-1, keepdims=True), pooled.var(-1, keepdims=True)
  expected = (pooled - mean) / np.sqrt(var + 1e-6)
  assert _rel(_run(model, images, pre_logits=True), expected) < TOL


def _classifier(kwargs, size, global_pool, learned_pos=True):
  """A classifier with every parameter perturbed, so that a swapped or dropped tensor shows: the
  position embedding too, so that only the trained table (not the sin-cos one) gives its logits."""
  model = classifier_lib.Classifier(kwargs["variant"], num_classes=5, drop_path=0.1,
                                    global_pool=global_pool, learned_pos=learned_pos)
  images = np.random.default_rng(1).standard_normal((3, size, size, 3)).astype(np.float32)
  params = model.init(jax.random.key(0), jnp.asarray(images))["params"]
  assert ("pos_embed" in params["encoder"]) == learned_pos
  rng = np.random.default_rng(2)
  params = jax.tree_util.tree_map(
      lambda x: np.asarray(x) + 0.1 * rng.standard_normal(x.shape).astype(np.float32), params)
  if learned_pos:
    table = vit.sincos_2d(32, (size // 4,) * 2)[None]
    assert np.abs(params["encoder"]["pos_embed"] - table).max() > 0.1
  logits = np.asarray(model.apply({"params": params}, images))  # deterministic: no drop path
  return params, images, logits


@pytest.mark.parametrize("global_pool,learned_pos", [(True, True), (False, True), (True, False)])
def test_fine_tuned_classifier_exports_to_timm(tiny, global_pool, learned_pos):
  """The trained position embedding is timm's `pos_embed`; a classifier fine-tuned with the fixed
  table (learned_pos=False, checkpoints from before it was learned) writes the sin-cos table."""
  kwargs, size, _ = tiny
  params, images, logits = _classifier(kwargs, size, global_pool, learned_pos)
  state = export.to_timm_state_dict(params, kwargs, size)
  assert state["head.weight"].shape == (5, 32)
  assert ("norm.weight" in state) != global_pool and ("fc_norm.weight" in state) == global_pool
  expected_pos = (params["encoder"]["pos_embed"] if learned_pos
                  else vit.sincos_2d(32, (size // 4,) * 2)[None])
  np.testing.assert_array_equal(state["pos_embed"], expected_pos)
  pool = "avg" if global_pool else "token"
  timm_model = _timm(state, export.timm_model_args(kwargs, size, 5, global_pool=pool))
  assert _rel(_run(timm_model, images), logits) < TOL


def test_learned_position_embedding_of_another_image_size_is_refused(tiny):
  kwargs, size, _ = tiny
  params, _, _ = _classifier(kwargs, size, global_pool=True)
  with pytest.raises(export.ConversionError, match="image size the classifier was fine-tuned at"):
    export.to_timm_state_dict(params, kwargs, 2 * size)


def test_fine_tuned_classifier_exports_to_hugging_face(tiny, tmp_path):
  transformers = pytest.importorskip("transformers")
  kwargs, size, _ = tiny
  params, images, logits = _classifier(kwargs, size, global_pool=False)
  export.save_hf_classifier(params, kwargs, size, str(tmp_path))
  model = transformers.ViTForImageClassification.from_pretrained(str(tmp_path)).eval()
  np.testing.assert_array_equal(model.vit.embeddings.position_embeddings.detach().numpy(),
                                params["encoder"]["pos_embed"])
  with torch.no_grad():
    theirs = model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))).logits.numpy()
  assert _rel(theirs, logits) < TOL
  pooled, _, _ = _classifier(kwargs, size, global_pool=True)
  with pytest.raises(export.ConversionError, match="global_pool=False"):
    export.save_hf_classifier(pooled, kwargs, size, str(tmp_path / "pooled"))
