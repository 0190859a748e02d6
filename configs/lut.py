r"""LUT pre-training (MAE plus the broader-context loss on unmasked tokens, EMA teacher).

The ViT-B/16 recipe on ImageNet-1K (batch 4096, 1600 epochs, lr 1.5e-4 * sqrt(batch) / 4,
BC weight 0.25, EMA momentum 0.996 -> 1):

  mimjax-train --config configs/lut.py:variant=B/16,dataset=imagenet2012 --workdir /ckpt/lut_b16

The demo (a small ViT on the bundled offline photos, a few minutes on 2 CPU cores):

  mimjax-train --config configs/lut.py:demo --workdir workdirs/lut_demo

Any key can be overridden: --config.total_steps=1000 --config.lut.bc_weight=0.5
"""
from mimjax import config_lib


def get_config(arg=None):
  return config_lib.apply_arg(config_lib.base_config("lut"), arg).lock()
