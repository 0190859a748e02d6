r"""MAE pre-training (He et al. 2021): the published recipe, or the CPU demo.

The ViT-B/16 recipe on ImageNet-1K, as facebookresearch/mae's PRETRAIN.md and the paper's
1600-epoch runs (batch 4096, lr 1.5e-4 * batch / 256, AdamW (0.9, 0.95), wd 0.05, 40 warm-up
epochs, PIL-exact antialiased bicubic RandomResizedCrop, mixed precision: bfloat16 compute):

  mimjax-train --config configs/mae.py:variant=B/16,dataset=imagenet2012 --workdir /ckpt/mae_b16

The demo (a small ViT on the bundled offline photos, a few minutes on 2 CPU cores):

  mimjax-train --config configs/mae.py:demo --workdir workdirs/mae_demo

Any key can be overridden: --config.total_steps=1000 --config.input.batch_size=1024
"""
from mimjax import config_lib
from mimjax import evals


def pretraining_recipe(c):
  """The hyper-parameters MAE and LUT share (MAE's main_pretrain.py / PRETRAIN.md, ViT-B)."""
  c.epochs = 1600  # the paper's headline runs; PRETRAIN.md's example command uses 800
  c.input.dataset = "imagenet2012"
  c.input.batch_size = 4096  # 64 per GPU x 64 GPUs
  c.input.image_size = 224
  c.input.fast_resize = False  # PIL's antialiased bicubic, as torchvision on PIL images
  c.model.variant = "B/16"
  # Mixed precision, as the official runs (torch.cuda.amp): bfloat16 compute, float32
  # parameters and optimizer state; bfloat16 needs no loss scaling.
  c.model.dtype = "bfloat16"
  c.model.mask_ratio = 0.75
  c.model.norm_pix_loss = True
  c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 512, 8, 16
  c.optim.base_lr = 1.5e-4
  c.optim.warmup_epochs = 40
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.95, 1e-8
  c.optim.weight_decay = 0.05
  c.optim.decay_cls = True  # pre-training decays every >1-D parameter, the tokens included
  c.optim.grad_clip_norm = 0.0


def demo(c):
  """A small ViT on the bundled offline photos: a few minutes on 2 CPU cores."""
  c.input.dataset = "offline_photos"
  c.input.batch_size = 32
  c.input.image_size = 64
  c.model.variant = "nano/8"
  c.model.dtype = "float32"  # a CPU run, and the float32 the parity tests compare against
  c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 64, 2, 4
  c.total_steps = 200  # warm-up keeps the recipe's share: 40/1600 of the steps
  c.optim.accum_steps = 1
  c.log_every_steps = 10
  c.ckpt_every_steps = 100
  c.image_every_steps = 100
  # kNN accuracy on held-out crops of the bundled photos (one class per photo) while it trains.
  c.evals.knn = evals.make_config("knn", every_steps=100, train_split="train[:75%]",
                                  val_split="train[75%:]")


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  config_lib.check_args(args, ("demo", "variant", "dataset"))
  c = config_lib.base_config("mae")
  pretraining_recipe(c)
  c.optim.lr_rule = "linear"  # lr = base_lr * batch / 256
  c.optim.accum_steps = 1
  if "demo" in args:
    demo(c)
    c.optim.base_lr = 8e-3  # a peak lr of 1e-3 at batch 32
  if "variant" in args:
    config_lib.set_variant(c, args["variant"])
  if "dataset" in args:
    c.input.dataset = args["dataset"]
  return c.lock()
