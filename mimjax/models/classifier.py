"""The fine-tuning classifier: the ViT encoder, global average pooling, fc_norm and a linear head.

As MAE's and LUT's fine-tuning (`models_vit.VisionTransformer(global_pool=True)`): the encoder
without its final LayerNorm, the mean of the patch tokens (cls excluded), a fresh LayerNorm
`fc_norm`, then `head` (weight ~ trunc-normal std 2e-5, bias 0). timm's
`VisionTransformer(global_pool='avg', fc_norm=True)` is the same model (see export/timm_vit.py).

`global_pool=False` is MAE's `--cls_token` fine-tuning instead: the [CLS] token after the
encoder's final LayerNorm, no fc_norm (timm's global_pool='token'; Hugging Face's
`ViTForImageClassification`, which has no other pooling).

The position embedding is a parameter (`encoder/pos_embed`, initialized to the encoder's fixed
sin-cos table), trained as MAE's fine-tuning trains timm's `pos_embed`; `learned_pos=False` keeps
the fixed table (classifiers fine-tuned before it was learned).
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from mimjax.models import vit

HEAD_STD = 2e-5


class Classifier(nn.Module):
  """`images` (NHWC, mean/std-normalized) -> float32 logits (N, num_classes)."""
  variant: str = "B/16"
  num_classes: int = 1000
  drop_path: float = 0.1
  global_pool: bool = True
  dtype: jnp.dtype = jnp.float32
  attention_impl: Optional[str] = None
  remat: bool = False
  learned_pos: bool = True

  @nn.compact
  def __call__(self, images, train: bool = False):
    tokens = vit.Encoder(self.variant, self.dtype, self.attention_impl, self.remat,
                         final_norm=not self.global_pool, drop_path=self.drop_path,
                         deterministic=not train, learned_pos=self.learned_pos,
                         name="encoder")(images)
    if self.global_pool:
      pooled = jnp.mean(tokens[:, 1:].astype(jnp.float32), axis=1)
      pooled = nn.LayerNorm(epsilon=vit.LN_EPS, name="fc_norm")(pooled)
    else:
      pooled = tokens[:, 0].astype(jnp.float32)
    # The reference's trunc_normal_(std=2e-5) truncates at +-2 absolute, which never bites: a
    # plain normal is the same distribution.
    head = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(HEAD_STD), name="head")
    return head(pooled)
