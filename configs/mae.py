r"""MAE pre-training (He et al. 2021): the published recipe, or the CPU demo.

The ViT-B/16 recipe on ImageNet-1K, as facebookresearch/mae's PRETRAIN.md and the paper's
1600-epoch runs (batch 4096, lr 1.5e-4 * batch / 256, AdamW (0.9, 0.95), wd 0.05, 40 warm-up
epochs, PIL-exact antialiased bicubic RandomResizedCrop, mixed precision: bfloat16 compute):

  mimjax-train --config configs/mae.py:variant=B/16,dataset=imagenet2012 --workdir /ckpt/mae_b16

The demo (a small ViT on the bundled digits, under 2 minutes on 2 CPU cores; it scores itself
by kNN on held-out digits at step 0 and at the end):

  mimjax-train --config configs/mae.py:demo --workdir workdirs/mae_demo

Any key can be overridden: --config.total_steps=1000 --config.input.batch_size=1024
"""
from configs import common
from mimjax import config_lib


def get_config(arg=None):
  args = common.parse(arg)
  c = config_lib.base_config("mae")
  common.pretraining_recipe(c)
  c.optim.lr_rule = "linear"  # lr = base_lr * batch / 256 (main_pretrain.py)
  c.optim.accum_steps = 1  # 64 per GPU x 64 GPUs, no accumulation (--accum_iter 1)
  if "demo" in args:
    common.pretraining_demo(c)
  common.apply_args(c, args)
  return c.lock()
