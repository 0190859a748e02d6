"""What the recipes share: MAE's pre-training recipe (MAE and LUT), the CPU demo, the arguments.

Each recipe value has one home. `mimjax.config_lib.base_config` and the methods' `add_config`
hold the schema: every key with its type and a neutral default (off, empty, or small and safe;
never a published value). `configs/*.py` hold every published value, each with its source (the
paper or the official code) in a short comment: this module what the recipes share, each
method's file its own. Change a recipe here, never in the schema; a new recipe is a new file
that imports this one (`from configs import common`).
"""
from mimjax import config_lib
from mimjax import evals

ARGS = ("demo", "variant", "dataset")  # what every recipe's `get_config(arg)` accepts


def parse(arg, allowed=ARGS) -> dict[str, str]:
  """`get_config`'s argument ('variant=B/16,dataset=imagenet2012', 'demo'), checked."""
  args = config_lib.parse_arg(arg)
  config_lib.check_args(args, allowed)
  return args


def apply_args(c, args) -> None:
  """`variant=` and `dataset=`, over the recipe (and the demo)."""
  if "variant" in args:
    config_lib.set_variant(c, args["variant"])
  if "dataset" in args:
    c.input.dataset = args["dataset"]


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
  c.model.mask_ratio = 0.75  # PRETRAIN.md --mask_ratio
  c.model.norm_pix_loss = True  # PRETRAIN.md --norm_pix_loss
  # models_mae.py's mae_vit_*: decoder_embed_dim, decoder_depth, decoder_num_heads.
  c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 512, 8, 16
  c.optim.base_lr = 1.5e-4  # PRETRAIN.md --blr
  c.optim.warmup_epochs = 40  # PRETRAIN.md --warmup_epochs
  c.optim.min_lr = 0.0  # util/lr_sched.py: the cosine ends at --min_lr, 0 by default
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.95, 1e-8  # main_pretrain.py's AdamW betas
  c.optim.weight_decay = 0.05  # PRETRAIN.md --weight_decay
  c.optim.decay_cls = True  # pre-training decays every >1-D parameter, the tokens included
  c.optim.layer_decay = 1.0  # one lr for every layer (layer-wise decay is fine-tuning's)
  c.optim.grad_clip_norm = 0.0  # main_pretrain.py clips nothing


DIGITS_PRETRAIN = "train[:80%]"  # the demos train on 80% of the digits (labels unused) ...
DIGITS_HELD_OUT = "train[80%:]"  # ... and the held-out 20% scores them


def demo(c):
  """What every demo shares: a small ViT on the bundled digits, in float32 on a CPU.

  scikit-learn's 1,797 handwritten digits as 32 px colour images (mimjax/data/digits.py): real,
  labelled and offline, so a demo shows whether it learned (kNN or accuracy on held-out digits).
  """
  c.input.dataset, c.input.split = "digits", DIGITS_PRETRAIN
  c.input.image_size, c.input.batch_size = 32, 64
  # 8 px patches, 16 tokens per digit: 4 px patches did not beat random inits (README, "MAE
  # against LUT at this scale").
  c.model.variant = "W64-D4-H4/8"
  c.model.dtype = "float32"  # a CPU run, and the float32 the parity tests compare against
  c.log_every_steps = 100


def pretraining_demo(c):
  """The MAE / LUT demo, over `pretraining_recipe`: the small-scale setting measured to beat
  its random init (README, "MAE against LUT at this scale"), 2-3 minutes on 2 CPU cores; also
  what tests/evals/test_learn.py and benchmarks/small_scale_study.py train."""
  demo(c)
  c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 64, 2, 4
  # Pixel targets: norm_pix_loss makes a flat background patch's target its colour blown up to
  # unit variance.
  c.model.norm_pix_loss = False
  c.total_steps = 1200  # warm-up keeps the recipe's share: 40/1600 of the steps
  c.optim.accum_steps = 1
  # A peak lr of 2.5e-3 at batch 64 for both methods: at 5e-3 MAE's kNN swung with the CPU's
  # numerics (one seed of three at the random baseline on an Intel Xeon).
  c.optim.lr_rule, c.optim.base_lr = "linear", 0.01
  c.ckpt_every_steps = 600
  c.image_every_steps = 600
  # kNN top-1 on the held-out digits at step 0 (the random init) and every 600 steps: the gain
  # over step 0 is what pre-training learned. The mean patch feature: kNN on [CLS] stayed at
  # its random inits' level for MAE here (README, "The demos score themselves").
  c.evals.knn = evals.make_config("knn", every_steps=600, train_split=DIGITS_PRETRAIN,
                                  val_split=DIGITS_HELD_OUT, feature="mean")
