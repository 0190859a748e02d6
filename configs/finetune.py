r"""Fine-tuning a pre-trained encoder on ImageNet-1K: the MAE recipe (or LUT's), or the CPU demo.

After pre-training (configs/mae.py or configs/lut.py in W), the one command:

  mimjax-train --config configs/finetune.py:variant=B/16,dataset=imagenet2012 \
      --config.init_from=W --workdir /ckpt/ft_b16

`init_from` is a pre-training workdir or an export directory (its encoder is used, its final
norm dropped; fc_norm and the head start fresh; the position embedding is learned, from the
fixed sin-cos table). The recipe, per variant, as facebookresearch/mae's FINETUNE.md: batch
1024, AdamW (0.9, 0.999), wd 0.05 (not on the cls token, the position embedding, biases and
norms), lr = blr * batch / 256 with blr 5e-4 (B) or 1e-3 (L, H), layer-wise lr decay 0.65 (B)
or 0.75 (L, H), drop path 0.1 / 0.2 / 0.3, 100 epochs (B) or 50 (L, H), 5 warm-up epochs then
cosine to 1e-6, per step; RandomResizedCrop (0.08, 1) + flip, RandAugment rand-m9-mstd0.5-inc1,
random erasing 0.25, mixup 0.8 / cutmix 1.0 (switch 0.5), label smoothing 0.1; global average
pooling + fc_norm; top-1 / top-5 on the validation split (resize 256, centre crop 224);
mixed precision: bfloat16 compute, float32 parameters.

`recipe=lut` takes naver-ai/lut's docs/FINETUNE.md instead (ViT-B: blr 1e-3, lr = blr *
sqrt(batch) / 8, layer decay 0.75, drop path 0.1, 100 epochs).

The demo fine-tunes the pre-training demo's encoder on the bundled digits (10 classes;
train[:80%] / train[80%:]):

  mimjax-train --config configs/finetune.py:demo --config.init_from=workdirs/mae_demo \
      --workdir workdirs/ft_demo
"""
from configs import common
from mimjax import config_lib
from mimjax import evals

# variant -> (blr, layer decay, drop path, epochs): FINETUNE.md's commands.
MAE_RECIPES = {
    "S/16": (5e-4, 0.65, 0.1, 100),  # the LUT paper's ViT-S (MAE's B settings)
    "B/16": (5e-4, 0.65, 0.1, 100),
    "L/16": (1e-3, 0.75, 0.2, 50),
    "H/14": (1e-3, 0.75, 0.3, 50),
}


def get_config(arg=None):
  args = common.parse(arg, common.ARGS + ("recipe",))
  c = config_lib.base_config("finetune")
  variant = args.get("variant", "B/16")
  config_lib.set_variant(c, variant)
  blr, layer_decay, drop_path, epochs = MAE_RECIPES[variant]
  c.epochs = epochs
  c.input.dataset = args.get("dataset", "imagenet2012")
  c.input.batch_size = 1024  # 32 per GPU x 32 GPUs
  c.input.image_size = 224
  c.input.fast_resize = False  # PIL's antialiased bicubic, as torchvision on PIL images
  c.input.eval_crop_fraction = 224 / 256  # resize 256, centre crop 224 (util/datasets.py)
  c.input.randaugment = "rand-m9-mstd0.5-inc1"  # FINETUNE.md --aa
  c.model.num_classes = 1000  # ImageNet-1K
  c.model.drop_path = drop_path
  c.model.global_pool = True  # main_finetune.py's default: average pooling + fc_norm
  c.model.learn_pos_embed = True  # timm's pos_embed parameter, loaded from the sin-cos table
  c.model.dtype = "bfloat16"  # mixed precision, as FINETUNE.md's runs (parameters float32)
  c.optim.base_lr = blr
  c.optim.lr_rule = "linear"
  c.optim.warmup_epochs = 5
  c.optim.min_lr = 1e-6
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 0.05
  c.optim.decay_cls = False  # main_finetune's no_weight_decay list: cls_token, pos_embed
  c.optim.layer_decay = layer_decay
  c.optim.accum_steps = 1
  c.optim.grad_clip_norm = 0.0  # main_finetune.py's --clip_grad: None
  # FINETUNE.md's --smoothing 0.1 --mixup 0.8 --cutmix 1.0 --reprob 0.25 (switch 0.5 and
  # probability 1 are main_finetune.py's defaults).
  c.finetune.label_smoothing = 0.1
  c.finetune.mixup, c.finetune.cutmix = 0.8, 1.0
  c.finetune.mixup_prob, c.finetune.mixup_switch_prob = 1.0, 0.5
  c.finetune.random_erasing = 0.25
  # top-1 / top-5 on the validation split, once an epoch at batch 1024.
  c.evals.val = evals.make_config("classification", every_steps=1250, split="validation")
  c.image_every_steps = 0
  recipe = args.get("recipe", "mae")
  if recipe == "lut":
    c.optim.base_lr = 1e-3
    c.optim.lr_rule = "sqrt8"  # lr = blr * sqrt(batch) / 8 (LUT's main_finetune.py)
    c.optim.layer_decay = 0.75
  elif recipe != "mae":
    raise config_lib.ConfigError(f"recipe={recipe!r}: use recipe=mae or recipe=lut")
  if "demo" in args:
    # The pre-training demo's ViT on the bundled digits: about a minute on 2 CPU cores.
    common.demo(c)
    c.evals.val.split = common.DIGITS_HELD_OUT
    c.model.num_classes = 10
    c.model.drop_path = 0.1
    c.optim.base_lr = 2e-3 * 256 / 64  # a peak lr of 2e-3
    c.optim.layer_decay = 0.75
    # Mixup and cutmix regularize 100 ImageNet epochs; in a demo's 600 steps they hide the
    # learning (150 steps with them: top-1 0.19, val loss barely below ln(10)).
    c.finetune.mixup = c.finetune.cutmix = 0.0
    c.total_steps = 600
    c.evals.val.every_steps = 200
    c.ckpt_every_steps = 200
    c.log_every_steps = 50
  return c.lock()
