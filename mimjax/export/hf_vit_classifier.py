"""A fine-tuned classifier as Hugging Face `ViTForImageClassification`.

That model classifies the [CLS] token after the final LayerNorm and has no other pooling, so
only classifiers fine-tuned with `model.global_pool=False` (MAE's `--cls_token` fine-tuning)
have an exact Hugging Face form; a global-pool classifier is refused with the way out (timm,
whose `global_pool='avg'` holds it exactly). Blocks use the transformers 4 names, which
transformers 4 and 5 both read. A classifier's trained position embedding is written as
`vit.embeddings.position_embeddings` (the fixed table where it has none).
"""
import os
from typing import Any, Mapping

import numpy as np

from mimjax.export import common
from mimjax.export import hf_vitmae
from mimjax.export import rules as R
from mimjax.models import vit

SCOPE = ("encoder", "head")


def _check_token_classifier(params):
  if "head" not in params:
    raise R.ConversionError("ViTForImageClassification export needs a fine-tuned classifier "
                            "(params with a 'head'): fine-tune with configs/finetune.py first")
  if "fc_norm" in params:
    raise R.ConversionError(
        "this classifier pools the patch tokens (global_pool=True), which Hugging Face's "
        "ViTForImageClassification cannot represent (it classifies the [CLS] token): export it "
        "to timm (--format timm), or fine-tune with --config.model.global_pool=False")


def hf_classifier_rules(model_kwargs: Mapping[str, Any], image_size: int,
                        learned_pos: bool = False) -> list[R.Rule]:
  """`learned_pos`: the classifier's trained position embedding becomes
  `vit.embeddings.position_embeddings` (else the fixed table)."""
  spec = vit.decode_variant(model_kwargs["variant"])
  grid = common.grid_of(model_kwargs, image_size)
  names = hf_vitmae.NAMINGS["legacy"]
  table = hf_vitmae.encoder_rules(spec, grid, names, learned_pos)
  table += R.dense("head", "classifier")
  return table


def hf_classifier_config(model_kwargs: Mapping[str, Any], image_size: int,
                         num_classes: int) -> dict[str, Any]:
  """The `ViTConfig` keys that rebuild this classifier."""
  spec = vit.decode_variant(model_kwargs["variant"])
  common.grid_of(model_kwargs, image_size)
  return {
      "architectures": ["ViTForImageClassification"],
      "model_type": "vit",
      "hidden_size": spec.width,
      "num_hidden_layers": spec.depth,
      "num_attention_heads": spec.heads,
      "intermediate_size": spec.mlp_dim,
      "hidden_act": hf_vitmae.HIDDEN_ACT,
      "hidden_dropout_prob": 0.0,
      "attention_probs_dropout_prob": 0.0,
      "initializer_range": 0.02,
      "layer_norm_eps": vit.LN_EPS,
      "image_size": int(image_size),
      "patch_size": spec.patch,
      "num_channels": common.CHANNELS,
      "qkv_bias": True,
      "id2label": {str(i): f"LABEL_{i}" for i in range(num_classes)},
      "label2id": {f"LABEL_{i}": i for i in range(num_classes)},
  }


def to_hf_classifier_state_dict(params, model_kwargs: Mapping[str, Any],
                                image_size: int = 224) -> dict[str, np.ndarray]:
  _check_token_classifier(params)
  table = hf_classifier_rules(model_kwargs, image_size,
                              common.has_learned_pos(params, model_kwargs, image_size))
  return R.to_torch(table, common.flatten(params), SCOPE)


def save_hf_classifier(params, model_kwargs: Mapping[str, Any], image_size: int,
                       out_dir: str) -> str:
  """Writes `model.safetensors` + `config.json` that ViTForImageClassification.from_pretrained reads."""
  state = to_hf_classifier_state_dict(params, model_kwargs, image_size)
  num_classes = int(np.shape(params["head"]["bias"])[0])
  common.save_safetensors(state, os.path.join(out_dir, common.WEIGHTS_FILE), {
      "layout": "transformers.ViTForImageClassification", "producer": "mimjax.export",
      "mimjax_version": common.mimjax_version(), "variant": model_kwargs["variant"],
      "image_size": image_size, "num_classes": num_classes})
  common.save_json(hf_classifier_config(model_kwargs, image_size, num_classes),
                   os.path.join(out_dir, common.CONFIG_FILE))
  return out_dir
