"""PyTorch export and import: timm `VisionTransformer` (encoder) and Hugging Face
`ViTMAEForPreTraining` (encoder + decoder), through declarative rule tables (see `rules.py`).

Writing needs only numpy and safetensors; torch, timm and transformers are the consumers.
"""
from mimjax.export.common import CONFIG_FILE, WEIGHTS_FILE
from mimjax.export.hf_vit_classifier import save_hf_classifier, to_hf_classifier_state_dict
from mimjax.export.hf_vitmae import (from_hf_config, from_hf_state_dict, hf_config, hf_rules,
                                     is_hf_dir, load_hf, save_hf, to_hf_state_dict)
from mimjax.export.rules import ConversionError, Rule, TRANSFORMS, from_torch, to_torch
from mimjax.export.timm_vit import (save_timm, timm_architecture, timm_config, timm_model_args,
                                    timm_rules, to_timm_state_dict)
