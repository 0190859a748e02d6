r"""MAE pre-training (He et al. 2021): the published recipe, or the CPU demo.

The ViT-B/16 recipe on ImageNet-1K (batch 4096, 800 epochs, lr 1.5e-4 * batch / 256):

  mimjax-train --config configs/mae.py:variant=B/16,dataset=imagenet2012 --workdir /ckpt/mae_b16

The demo (a small ViT on the bundled offline photos, a few minutes on 2 CPU cores):

  mimjax-train --config configs/mae.py:demo --workdir workdirs/mae_demo

Any key can be overridden: --config.total_steps=1000 --config.input.batch_size=1024
"""
from mimjax import config_lib


def get_config(arg=None):
  return config_lib.apply_arg(config_lib.base_config("mae"), arg).lock()
