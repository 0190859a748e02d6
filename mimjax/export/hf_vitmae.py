"""MAE (encoder and decoder) as Hugging Face `ViTMAEForPreTraining`, in both directions.

`save_hf` writes a directory `from_pretrained` reads: `model.safetensors` (numpy + safetensors,
no torch needed) and `config.json` with the `ViTMAEConfig` keys. The fixed sin-cos tables are
written as `vit.embeddings.position_embeddings` and `decoder.decoder_pos_embed`.

`load_hf` reads such a directory back (ours, a published MAE checkpoint, or one saved by
transformers) into MAE constructor kwargs and params. Incoming position embeddings must be the
sin-cos tables: mimjax computes them and cannot hold learned ones.

Key namings (NAMINGS): transformers 4 named the modules `vit.encoder.layer.N.attention.attention.query`
etc. (the published facebook/vit-mae-* checkpoints); transformers 5 renamed them
(`vit.layers.N.attention.q_proj`) and renames old checkpoints on load. `save_hf` writes the legacy
names by default, which both read; every naming is read back.
"""
import warnings
from typing import Any, Mapping

import numpy as np

from mimjax import errors
from mimjax import storage
from mimjax.export import common
from mimjax.export import rules as R
from mimjax.models import vit

SCOPE = ("encoder", "decoder")

# Key namings: the torch module names of one block and where the blocks live.
_BLOCK_CURRENT = {"norm1": "layernorm_before",
                  "qkv": ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
                  "out": "attention.o_proj", "norm2": "layernorm_after", "fc1": "mlp.fc1",
                  "fc2": "mlp.fc2"}
_BLOCK_LEGACY = {"norm1": "layernorm_before",
                 "qkv": ("attention.attention.query", "attention.attention.key",
                         "attention.attention.value"),
                 "out": "attention.output.dense", "norm2": "layernorm_after",
                 "fc1": "intermediate.dense", "fc2": "output.dense"}
NAMINGS = {
    # transformers >= 5 module names.
    "current": {"block": _BLOCK_CURRENT, "encoder_layers": "vit.layers",
                "decoder_layers": "decoder.decoder_layers"},
    # transformers 4 module names: published checkpoints (facebook/vit-mae-*); transformers 5 still
    # reads them (renaming on load).
    "legacy": {"block": _BLOCK_LEGACY, "encoder_layers": "vit.encoder.layer",
               "decoder_layers": "decoder.decoder_layers"},
    # What transformers 5's own `save_pretrained` writes: the legacy names, reversed back from the
    # current ones (its rename of 'encoder.layer.' <-> 'layers.' also catches 'decoder_layers.').
    "transformers5_saved": {"block": _BLOCK_LEGACY, "encoder_layers": "vit.encoder.layer",
                            "decoder_layers": "decoder.decoder_encoder.layer"},
}
LN_EPS = vit.LN_EPS
HIDDEN_ACT = "gelu"  # exact (erf) GELU in transformers


def encoder_rules(spec, grid, names, learned_pos: bool = False) -> list[R.Rule]:
  """The encoder's table under the `vit.` prefix, shared by ViTMAE and ViTForImageClassification
  (`learned_pos`: a fine-tuned classifier's trained position embedding)."""
  table = R.conv("encoder/patch_embed", "vit.embeddings.patch_embeddings.projection")
  table += [R.rule("encoder/cls", "vit.embeddings.cls_token"),
            R.pos_embed("vit.embeddings.position_embeddings", spec.width, grid, learned_pos)]
  for i in range(spec.depth):
    table += R.block(f"encoder/transformer/block{i}", f"{names['encoder_layers']}.{i}",
                     names["block"])
  table += R.layernorm("encoder/transformer/norm", "vit.layernorm")
  return table


def hf_rules(model_kwargs: Mapping[str, Any], image_size: int,
             naming: str = "legacy") -> list[R.Rule]:
  """The table for ViTMAEForPreTraining, generated for the encoder and decoder depths."""
  kwargs = common.arch_kwargs(model_kwargs)
  spec = vit.decode_variant(kwargs["variant"])
  grid = common.grid_of(kwargs, image_size)
  if naming not in NAMINGS:
    raise ValueError(f"unknown naming {naming!r}; known: {sorted(NAMINGS)}")
  names = NAMINGS[naming]
  table = encoder_rules(spec, grid, names)
  table += R.dense("decoder/embed", "decoder.decoder_embed")
  table += [R.rule("decoder/mask_token", "decoder.mask_token"),
            R.rule((), "decoder.decoder_pos_embed", "sincos_table", width=kwargs["decoder_width"],
                   grid=grid)]
  for i in range(kwargs["decoder_depth"]):
    table += R.block(f"decoder/transformer/block{i}", f"{names['decoder_layers']}.{i}",
                     names["block"])
  table += R.layernorm("decoder/transformer/norm", "decoder.decoder_norm")
  table += R.dense("decoder/pred", "decoder.decoder_pred")
  return table


def hf_config(model_kwargs: Mapping[str, Any], image_size: int) -> dict[str, Any]:
  """The `ViTMAEConfig(...).to_dict()` keys that rebuild this model (no transformers needed)."""
  kwargs = common.arch_kwargs(model_kwargs)
  spec = vit.decode_variant(kwargs["variant"])
  common.grid_of(kwargs, image_size)
  return {
      "architectures": ["ViTMAEForPreTraining"],
      "model_type": "vit_mae",
      "hidden_size": spec.width,
      "num_hidden_layers": spec.depth,
      "num_attention_heads": spec.heads,
      "intermediate_size": spec.mlp_dim,
      "hidden_act": HIDDEN_ACT,
      "hidden_dropout_prob": 0.0,
      "attention_probs_dropout_prob": 0.0,
      "initializer_range": 0.02,
      "layer_norm_eps": LN_EPS,
      "image_size": int(image_size),
      "patch_size": spec.patch,
      "num_channels": common.CHANNELS,
      "qkv_bias": True,
      "decoder_hidden_size": kwargs["decoder_width"],
      "decoder_num_hidden_layers": kwargs["decoder_depth"],
      "decoder_num_attention_heads": kwargs["decoder_heads"],
      "decoder_intermediate_size": 4 * kwargs["decoder_width"],
      "mask_ratio": float(kwargs["mask_ratio"]),
      "norm_pix_loss": bool(kwargs["norm_pix_loss"]),
  }


def variant_name(width: int, depth: int, heads: int, patch: int) -> str:
  """The named variant with these sizes ('B/16'), else the explicit form 'W768-D12-H12/16'."""
  for name in sorted(vit._WIDTHS):  # pylint: disable=protected-access
    if vit._WIDTHS[name] == (width, depth, heads):  # pylint: disable=protected-access
      return f"{name}/{patch}"
  return f"W{width}-D{depth}-H{heads}/{patch}"


def from_hf_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
  """`config.json` of a ViTMAE model -> (MAE kwargs, image_size); refuses what mimjax can't run."""
  def get(key, default=None):
    if key not in config and default is None:
      raise ValueError(f"ViTMAE config has no {key!r}")
    return config.get(key, default)

  problems = []
  if get("model_type", "vit_mae") != "vit_mae":
    problems.append(f"model_type is {config['model_type']!r}, expected 'vit_mae'")
  if get("hidden_act", "gelu") != HIDDEN_ACT:
    problems.append(f"hidden_act is {config['hidden_act']!r}: mimjax uses the exact (erf) GELU, 'gelu'")
  if not get("qkv_bias", True):
    problems.append("qkv_bias is false: mimjax's attention always has a qkv bias")
  if get("num_channels", 3) != common.CHANNELS:
    problems.append(f"num_channels is {config['num_channels']}: the MAE decoder predicts RGB")
  size, patch = get("image_size", 224), get("patch_size", 16)
  if isinstance(size, (list, tuple)):
    if len(set(size)) != 1:
      problems.append(f"image_size {size} is not square")
    size = size[0]
  if isinstance(patch, (list, tuple)):
    if len(set(patch)) != 1:
      problems.append(f"patch_size {patch} is not square")
    patch = patch[0]
  width, dec_width = get("hidden_size"), get("decoder_hidden_size", 512)
  if get("intermediate_size", 4 * width) != 4 * width:
    problems.append(f"intermediate_size {config['intermediate_size']} != 4 * hidden_size")
  if get("decoder_intermediate_size", 4 * dec_width) != 4 * dec_width:
    problems.append(f"decoder_intermediate_size {config['decoder_intermediate_size']} "
                    "!= 4 * decoder_hidden_size")
  if problems:
    raise ValueError("this ViTMAE config cannot be represented in mimjax:\n  " +
                     "\n  ".join(problems))
  eps = get("layer_norm_eps", LN_EPS)
  if eps != LN_EPS:
    warnings.warn(f"the checkpoint's config says layer_norm_eps={eps}; mimjax uses {LN_EPS} (the "
                  "MAE reference's value, which published MAE weights were trained with)")
  kwargs = {
      "variant": variant_name(width, get("num_hidden_layers"), get("num_attention_heads"), patch),
      "mask_ratio": float(get("mask_ratio", 0.75)),
      "norm_pix_loss": bool(get("norm_pix_loss", False)),
      "decoder_width": dec_width,
      "decoder_depth": get("decoder_num_hidden_layers", 8),
      "decoder_heads": get("decoder_num_attention_heads", 16),
  }
  return kwargs, int(size)


def to_hf_state_dict(params, model_kwargs: Mapping[str, Any], image_size: int = 224,
                     naming: str = "legacy") -> dict[str, np.ndarray]:
  """mimjax params (MAE or LUT; `encoder` + `decoder` are used) -> ViTMAEForPreTraining state dict."""
  table = hf_rules(model_kwargs, image_size, naming)
  shapes = common.expected_shapes(model_kwargs, image_size, SCOPE)
  return R.to_torch(table, common.flatten(params), SCOPE, shapes)


def naming_of(state: Mapping[str, Any], model_kwargs: Mapping[str, Any], image_size: int) -> str:
  """The naming in NAMINGS whose table has exactly the keys of `state` (else the closest one)."""
  def distance(naming):
    wanted = {k for r in hf_rules(model_kwargs, image_size, naming) for k in r.torch}
    return len(wanted ^ set(state))
  return min(NAMINGS, key=distance)


def from_hf_state_dict(state: Mapping[str, Any], model_kwargs: Mapping[str, Any],
                       image_size: int) -> dict[str, Any]:
  """ViTMAEForPreTraining state dict (any naming in NAMINGS) -> nested mimjax params (float32)."""
  table = hf_rules(model_kwargs, image_size, naming_of(state, model_kwargs, image_size))
  shapes = common.expected_shapes(model_kwargs, image_size, SCOPE)
  return common.unflatten(R.from_torch(table, state, shapes))


def save_hf(params, model_kwargs: Mapping[str, Any], image_size: int, out_dir: str,
            naming: str = "legacy") -> str:
  """Writes `out_dir/{model.safetensors, config.json}` for `ViTMAEForPreTraining.from_pretrained`."""
  kwargs = common.arch_kwargs(model_kwargs)
  state = to_hf_state_dict(params, kwargs, image_size, naming)
  common.save_safetensors(state, storage.join(out_dir, common.WEIGHTS_FILE), {
      "layout": "transformers.ViTMAEForPreTraining", "producer": "mimjax.export",
      "mimjax_version": common.mimjax_version(), "variant": kwargs["variant"],
      "image_size": image_size})
  common.save_json(hf_config(kwargs, image_size), storage.join(out_dir, common.CONFIG_FILE))
  return out_dir


def is_hf_dir(path: str) -> bool:
  return all(storage.path(path).joinpath(f).is_file() for f in (common.CONFIG_FILE, common.WEIGHTS_FILE))


def load_hf(path: str) -> tuple[dict[str, Any], dict[str, Any], int]:
  """A ViTMAE directory (config.json + model.safetensors) -> (MAE kwargs, params, image_size)."""
  if not is_hf_dir(path):
    found = (sorted(p.name for p in storage.path(path).iterdir())
             if storage.path(path).is_dir() else "not a directory")
    raise errors.PathNotFoundError(
        f"{path!r} is not a ViTMAE export: expected {common.CONFIG_FILE} and {common.WEIGHTS_FILE} "
        f"(found: {found}); pickled pytorch_model.bin files are not read")
  config = common.load_json(storage.join(path, common.CONFIG_FILE))
  model_kwargs, image_size = from_hf_config(config)
  state, _ = common.load_safetensors(storage.join(path, common.WEIGHTS_FILE))
  return model_kwargs, from_hf_state_dict(state, model_kwargs, image_size), image_size
