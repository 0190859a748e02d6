"""timm VisionTransformer export: strict loads with and without a head, names, counts, files."""
import json
import os

import numpy as np
import pytest

from mimjax import export
from mimjax.export import common
from mimjax.export import timm_vit
from mimjax.models import vit
from tests.export import parity

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
timm = parity.import_timm()
from timm.models.vision_transformer import VisionTransformer  # pylint: disable=g-import-not-at-top


def _load_strict(model, state):
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  return model


def test_strict_load_without_head(tiny):
  kwargs, size, params = tiny
  lut_like = dict(params, projector={"fc1": {"kernel": np.ones((32, 8), np.float32)}})
  state = export.to_timm_state_dict(lut_like, kwargs, size)  # only `encoder` is used
  assert not any(k.startswith("head") for k in state)
  model = _load_strict(VisionTransformer(**export.timm_model_args(kwargs, size)), state)
  assert isinstance(model.head, torch.nn.Identity) and model.global_pool == "token"
  assert model.norm.eps == 1e-6 and model.blocks[0].mlp.act.approximate == "none"
  encoder_only = {"encoder": params["encoder"]}  # the decoder is not needed either
  assert sorted(export.to_timm_state_dict(encoder_only, kwargs, size)) == sorted(state)


def test_strict_load_with_fresh_head(tiny):
  kwargs, size, params = tiny
  state = export.to_timm_state_dict(params, kwargs, size, num_classes=1000, head_seed=3)
  _load_strict(VisionTransformer(**export.timm_model_args(kwargs, size, num_classes=1000)), state)
  weight, bias = state["head.weight"], state["head.bias"]
  assert weight.shape == (1000, 32) and not bias.any()
  assert abs(weight.std() / 2e-5 - 1) < 0.05
  again = export.to_timm_state_dict(params, kwargs, size, num_classes=1000, head_seed=3)
  np.testing.assert_array_equal(again["head.weight"], weight)


def test_save_timm_files_and_config(tiny, tmp_path):
  kwargs, size, params = tiny
  export.save_timm(params, kwargs, str(tmp_path), num_classes=5, image_size=size)
  assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["architecture"] == "vit_base_patch16_224"  # no timm name for mu/4: model_args rule
  assert config["model_args"]["embed_dim"] == 32 and config["model_args"]["num_classes"] == 5
  assert config["pretrained_cfg"]["input_size"] == [3, 16, 16]
  state = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
  built = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
  built.load_state_dict(state, strict=True)
  np.testing.assert_array_equal(built.pos_embed.detach().numpy()[0], vit.sincos_2d(32, (4, 4)))


def test_named_architecture_loads_strictly(tmp_path):
  """Ti/16 at 224 px is timm's vit_tiny_patch16_224: create it by name and load strictly."""
  kwargs = dict(variant="Ti/16", decoder_depth=1)
  params = {"encoder": parity.random_params(kwargs, 224)["encoder"]}
  export.save_timm(params, kwargs, str(tmp_path), num_classes=10)
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["architecture"] == "vit_tiny_patch16_224"
  model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
  model.load_state_dict(safetensors_torch.load_file(str(tmp_path / "model.safetensors")))


@pytest.mark.parametrize("name", sorted(timm_vit._TIMM_NAMES))  # pylint: disable=protected-access
def test_timm_names_match_their_variants(name):
  """Every timm name the exporter may write builds exactly the architecture of its mimjax variant."""
  size = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H"}[name.split("_")[1]]
  patch, image_size = int(name.split("_")[2][len("patch"):]), int(name.split("_")[3])
  kwargs = {"variant": f"{size}/{patch}"}
  assert export.timm_architecture(kwargs, image_size) == name
  args = export.timm_model_args(kwargs, image_size)
  with torch.device("meta"):
    named = timm.create_model(name, pretrained=False, num_classes=0)
    explicit = VisionTransformer(**args)
  shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}
  assert shapes(named) == shapes(explicit)
  assert named.global_pool == "token" and named.norm.eps == 1e-6
  assert named.blocks[0].mlp.act.approximate == "none" and named.blocks[0].attn.qkv.bias is not None


def test_parameter_count_b16_matches_timm():
  """The mimjax B/16 encoder has timm's vit_base_patch16_224 parameters minus the (fixed) pos_embed."""
  ours = common.count(common.expected_shapes({"variant": "B/16"}, 224, ("encoder",)))
  with torch.device("meta"):
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
  theirs = sum(p.numel() for p in model.parameters())
  assert ours == theirs - model.pos_embed.numel() == 85_647_360


def test_refuses_non_finite_params(tiny, tmp_path):
  kwargs, size, params = tiny
  params["encoder"]["cls"] = np.full_like(params["encoder"]["cls"], np.inf)
  with pytest.raises(export.ConversionError, match="non-finite.*cls_token"):
    export.save_timm(params, kwargs, str(tmp_path), image_size=size)
  assert not os.listdir(tmp_path)
