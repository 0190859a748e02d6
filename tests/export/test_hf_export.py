"""Hugging Face ViTMAEForPreTraining export and import: files, config, round trips, refusals."""
import json
import os

import jax
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from mimjax import export
from mimjax.export import common
from mimjax.export import hf_vitmae
from mimjax.models import vit
from tests.export import parity

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _tree_equal(a, b):
  return (jax.tree.structure(a) == jax.tree.structure(b) and
          all(x.dtype == y.dtype and np.array_equal(x, y)
              for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def _from_pretrained(path):
  model, info = transformers.ViTMAEForPreTraining.from_pretrained(path, output_loading_info=True)
  assert not any(info.values()), info  # no missing / unexpected / mismatched keys
  return model.eval()


def test_round_trip_is_bitwise(tiny, tmp_path):
  kwargs, size, params = tiny
  lut_like = dict(params, projector={"fc1": {"kernel": np.ones((32, 8), np.float32)}})
  export.save_hf(lut_like, kwargs, size, str(tmp_path))  # heads beyond encoder/decoder: ignored
  kwargs_back, params_back, size_back = export.load_hf(str(tmp_path))
  assert kwargs_back == kwargs and size_back == size
  assert _tree_equal(params_back, params)


@pytest.mark.parametrize("naming", sorted(hf_vitmae.NAMINGS))
def test_every_naming_loads_into_transformers_and_back(tiny, tmp_path, naming):
  """All namings load strictly into the installed transformers with the same values, and back."""
  kwargs, size, params = tiny
  export.save_hf(params, kwargs, size, str(tmp_path), naming=naming)
  model = _from_pretrained(str(tmp_path))
  theirs = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  ours = export.to_hf_state_dict(params, kwargs, size, naming="current")  # the module names
  assert sorted(theirs) == sorted(ours)
  for key in ours:
    np.testing.assert_array_equal(theirs[key], ours[key], err_msg=key)
  assert _tree_equal(export.load_hf(str(tmp_path))[1], params)
  resaved = tmp_path / "resaved"  # whatever transformers itself writes is read back too
  model.save_pretrained(str(resaved))
  assert _tree_equal(export.load_hf(str(resaved))[1], params)


def test_files_are_safetensors_with_string_metadata(tiny, tmp_path):
  kwargs, size, params = tiny
  export.save_hf(params, kwargs, size, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
  with safetensors.safe_open(str(tmp_path / "model.safetensors"), framework="np") as f:
    metadata = f.metadata()
    tensors = {k: f.get_tensor(k) for k in f.keys()}
  assert metadata["format"] == "pt" and metadata["variant"] == "mu/4"
  assert metadata["mimjax_version"] and metadata["layout"] == "transformers.ViTMAEForPreTraining"
  assert all(isinstance(v, str) for v in metadata.values())
  assert all(t.dtype == np.float32 and t.flags.c_contiguous and np.isfinite(t).all()
             for t in tensors.values())
  np.testing.assert_array_equal(tensors["decoder.decoder_pos_embed"][0],
                                vit.sincos_2d(16, (4, 4)))


def test_config_rebuilds_the_model(tiny, tmp_path):
  kwargs, size, params = tiny
  export.save_hf(params, kwargs, size, str(tmp_path))
  ours = json.loads((tmp_path / "config.json").read_text())
  expected = transformers.ViTMAEConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
      hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True, image_size=16, patch_size=4,
      num_channels=3, decoder_hidden_size=16, decoder_num_hidden_layers=1,
      decoder_num_attention_heads=2, decoder_intermediate_size=64, mask_ratio=0.75,
      norm_pix_loss=True, architectures=["ViTMAEForPreTraining"]).to_dict()
  assert {k: expected[k] for k in ours} == ours
  loaded = transformers.ViTMAEConfig.from_pretrained(str(tmp_path)).to_dict()
  assert {k: loaded[k] for k in ours} == ours


def test_custom_sizes_round_trip(tiny, tmp_path):
  """Sizes that match no named variant come back as the explicit 'W-D-H/P' variant."""
  kwargs = dict(tiny[0], variant="W24-D1-H3/4", norm_pix_loss=False, mask_ratio=0.5)
  params = parity.random_params(kwargs, 8)
  export.save_hf(params, kwargs, 8, str(tmp_path))
  model = _from_pretrained(str(tmp_path))
  assert (model.config.hidden_size, model.config.num_hidden_layers) == (24, 1)
  kwargs_back, params_back, _ = export.load_hf(str(tmp_path))
  assert kwargs_back == kwargs and _tree_equal(params_back, params)
  assert hf_vitmae.variant_name(768, 12, 12, 16) == "B/16"
  assert vit.decode_variant("W24-D1-H3/4") == vit.VitSpec(24, 1, 3, 4, 96)


def test_imports_a_transformers_made_checkpoint(tmp_path):
  """A checkpoint made by transformers itself (as published MAE weights are) loads here."""
  config = transformers.ViTMAEConfig(
      hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
      image_size=16, patch_size=4, decoder_hidden_size=16, decoder_num_hidden_layers=1,
      decoder_num_attention_heads=2, decoder_intermediate_size=64, layer_norm_eps=1e-6)
  torch.manual_seed(0)
  model = transformers.ViTMAEForPreTraining(config)
  # transformers' own sin-cos tables; its fresh models leave them at zero (see the next test).
  model.decoder.initialize_weights(16)
  model.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False
  model.vit.embeddings.initialize_weights()
  model.save_pretrained(str(tmp_path))
  kwargs, params, size = export.load_hf(str(tmp_path))
  assert kwargs == dict(variant="W32-D1-H2/4", mask_ratio=0.75, norm_pix_loss=False,
                        decoder_width=16, decoder_depth=1, decoder_heads=2) and size == 16
  ours = export.to_hf_state_dict(params, kwargs, size, naming="current")
  for key, value in model.state_dict().items():
    np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)


def test_rejects_position_embeddings_that_are_not_sincos(tiny, tmp_path):
  kwargs, size, params = tiny
  export.save_hf(params, kwargs, size, str(tmp_path))
  path = str(tmp_path / "model.safetensors")
  state = safetensors.numpy.load_file(path)
  state["vit.embeddings.position_embeddings"] = state["vit.embeddings.position_embeddings"] + 0.01
  safetensors.numpy.save_file(state, path, metadata={"format": "pt"})
  with pytest.raises(export.ConversionError,
                     match=r"vit.embeddings.position_embeddings: .*not the fixed 2D sin-cos"):
    export.load_hf(str(tmp_path))
  state["vit.embeddings.position_embeddings"][:] = 0  # a fresh transformers model's table
  safetensors.numpy.save_file(state, path, metadata={"format": "pt"})
  with pytest.raises(export.ConversionError, match="cannot represent learned ones"):
    export.load_hf(str(tmp_path))


def test_refuses_non_finite_params(tiny, tmp_path):
  kwargs, size, params = tiny
  params["decoder"]["pred"]["bias"] = params["decoder"]["pred"]["bias"].copy()
  params["decoder"]["pred"]["bias"][3] = np.nan
  with pytest.raises(export.ConversionError, match=r"non-finite.*decoder.decoder_pred.bias"):
    export.save_hf(params, kwargs, size, str(tmp_path / "out"))
  assert not (tmp_path / "out" / "model.safetensors").exists()


def test_reports_missing_and_unexpected_keys(tiny, tmp_path):
  kwargs, size, params = tiny
  export.save_hf(params, kwargs, size, str(tmp_path))
  path = str(tmp_path / "model.safetensors")
  state = safetensors.numpy.load_file(path)
  state["vit.extra"] = state.pop("decoder.mask_token")
  safetensors.numpy.save_file(state, path, metadata={"format": "pt"})
  with pytest.raises(export.ConversionError,
                     match=r"missing \(1\): decoder.mask_token\n.*unexpected \(1\): vit.extra"):
    export.load_hf(str(tmp_path))


@pytest.mark.parametrize("change,message", [
    ({"hidden_act": "gelu_new"}, "exact \\(erf\\) GELU"),
    ({"qkv_bias": False}, "qkv bias"),
    ({"intermediate_size": 100}, "intermediate_size"),
    ({"num_channels": 1}, "RGB"),
])
def test_rejects_configs_mimjax_cannot_run(tiny, tmp_path, change, message):
  kwargs, size, params = tiny
  export.save_hf(params, kwargs, size, str(tmp_path))
  config = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
  with pytest.raises(ValueError, match=message):
    export.load_hf(str(tmp_path))


def test_warns_on_a_different_layer_norm_eps(tiny, tmp_path):
  kwargs, size, params = tiny
  export.save_hf(params, kwargs, size, str(tmp_path))
  config = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-12}))
  with pytest.warns(UserWarning, match="layer_norm_eps=1e-12"):
    export.load_hf(str(tmp_path))


def test_rejects_params_that_do_not_match_the_kwargs(tiny, tmp_path):
  kwargs, size, params = tiny
  with pytest.raises(export.ConversionError, match=r"decoder/embed/kernel: got \(32, 16\), expected \(32, 8\)"):
    export.to_hf_state_dict(params, dict(kwargs, decoder_width=8), size)
  with pytest.raises(ValueError, match="unknown model_kwargs \\['decoder_widht'\\]"):
    export.to_hf_state_dict(params, dict(kwargs, decoder_widht=8), size)
  with pytest.raises(ValueError, match="multiple of the patch size"):
    export.save_hf(params, kwargs, 18, str(tmp_path))


def test_not_an_export_dir(tmp_path):
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="config.json and model.safetensors"):
    export.load_hf(str(tmp_path))


def test_parameter_count_b16_matches_transformers():
  """MAE B/16 (decoder 512/8/16) has exactly ViTMAEForPreTraining's trainable parameters."""
  kwargs = dict(variant="B/16", decoder_width=512, decoder_depth=8, decoder_heads=16)
  ours = common.count(common.expected_shapes(kwargs, 224, ("encoder", "decoder")))
  with torch.device("meta"):
    model = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**{
        k: v for k, v in export.hf_config(kwargs, 224).items()
        if k not in ("architectures", "model_type")}))
  trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
  frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
  assert frozen == {"vit.embeddings.position_embeddings", "decoder.decoder_pos_embed"}
  assert ours == trainable == 111_655_680
