"""The shared config schema, the published recipes, and validation before anything compiles.

Config files (`configs/*.py`) build on `base_config`; derived values (steps from epochs, the
learning rate from the batch size) are computed by the trainer from the config, never stored in it.
"""
import os

import ml_collections
from ml_collections import config_dict

from mimjax import data
from mimjax import errors
from mimjax import evals
from mimjax.models import vit

METHODS = ("mae", "lut")
LR_RULES = ("linear", "sqrt")
DTYPES = ("float32", "bfloat16")
VARIANTS = ("S/16", "B/16", "L/16", "H/14")


class ConfigError(errors.UserError, ValueError):
  """A config value that cannot work; the message names the key and the fix."""


def parse_arg(arg: str | None) -> dict[str, str]:
  """'variant=B/16,dataset=imagenet2012' -> dict; a bare word ('demo') maps to True."""
  out = {}
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    out[key.strip()] = value.strip() if value else "True"
  return out


def base_config(method: str) -> ml_collections.ConfigDict:
  """The published ViT-B/16 recipe of `method` on imagenet2012, as the papers and official code define it."""
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  c.epochs = 1600 if method == "lut" else 800
  c.total_steps = config_dict.placeholder(int)  # when set, overrides `epochs`

  c.input = data.make_default_config()
  c.input.dataset = "imagenet2012"
  c.input.split = "train"
  c.input.batch_size = 4096  # global
  c.input.image_size = 224

  c.model = ml_collections.ConfigDict()
  c.model.variant = "B/16"
  c.model.mask_ratio = 0.75
  c.model.norm_pix_loss = True
  c.model.decoder_width = 512
  c.model.decoder_depth = 8
  c.model.decoder_heads = 16
  c.model.dtype = "float32"  # compute dtype; parameters are always float32
  c.model.attention_impl = config_dict.placeholder(str)  # None (XLA), 'xla' or 'cudnn'
  c.model.remat = False
  c.model.num_registers = 0  # register tokens (Darcet et al. 2023); exports refuse them
  if method == "lut":
    c.model.head_hidden = 4096

  c.optim = ml_collections.ConfigDict()
  c.optim.base_lr = 1.5e-4
  c.optim.lr_rule = "sqrt" if method == "lut" else "linear"
  c.optim.warmup_epochs = 40
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.05
  c.optim.grad_clip_norm = 0.0  # 0 = none, as in the reference
  c.optim.accum_steps = 1  # micro-batches per optimizer step

  if method == "lut":
    c.lut = ml_collections.ConfigDict()
    c.lut.bc_weight = 0.25
    c.lut.ema_base = 0.996

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by fsdp
  c.mesh.fsdp = 1   # >1 shards parameters and optimizer state over this many devices
  c.mesh.fsdp_min_size = 2 ** 14  # smaller arrays stay replicated

  c.log_every_steps = 50
  c.ckpt_every_steps = 1000
  c.keep_checkpoints = 3
  c.image_every_steps = 5000  # input / masked / reconstruction grids to TensorBoard; 0 = never
  c.init_from = ""  # a workdir or export dir to start from when the workdir has no checkpoint
  # Evaluators run during training: name -> evals.make_config(type, ...) (see mimjax/evals).
  c.evals = ml_collections.ConfigDict()
  return c


def apply_arg(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies the config argument: `demo`, `variant=...`, `dataset=...`."""
  args = parse_arg(arg)
  unknown = set(args) - {"demo", "variant", "dataset"}
  if unknown:
    raise ConfigError(f"unknown config argument(s) {sorted(unknown)}: use demo, variant=, dataset=")
  if "demo" in args:
    # A small ViT on the bundled offline photos: a few minutes on 2 CPU cores.
    c.input.dataset = "offline_photos"
    c.input.batch_size = 32
    c.input.image_size = 64
    c.model.variant = "nano/8"
    c.model.decoder_width = 64
    c.model.decoder_depth = 2
    c.model.decoder_heads = 4
    if c.method == "lut":
      c.model.head_hidden = 256
    c.optim.base_lr = 8e-3 if c.method == "mae" else 7e-4  # both give a peak lr of 1e-3 at batch 32
    c.total_steps = 200  # warm-up keeps the recipe's share: 40/800 of the steps
    c.log_every_steps = 10
    c.ckpt_every_steps = 100
    c.image_every_steps = 100
    # kNN accuracy on held-out crops of the bundled photos (one class per photo).
    c.evals.knn = evals.make_config("knn", every_steps=100, train_split="train[:75%]",
                                    val_split="train[75%:]")
  if "variant" in args:
    if args["variant"] not in VARIANTS:
      raise ConfigError(f"variant={args['variant']!r} is not a published recipe: use one of {VARIANTS}")
    c.model.variant = args["variant"]
  if "dataset" in args:
    c.input.dataset = args["dataset"]
  return c


def _check(condition: bool, key: str, message: str):
  if not condition:
    raise ConfigError(f"config.{key}: {message}")


def validate(c: ml_collections.ConfigDict, num_processes: int, num_devices: int):
  """Raises ConfigError naming the key and the fix; cheap, runs before anything compiles."""
  _check(c.method in METHODS, "method", f"{c.method!r} is not one of {METHODS}")
  try:
    spec = vit.decode_variant(c.model.variant)
  except ValueError as e:
    raise ConfigError(f"config.model.variant: {e}") from None
  ratio = c.model.mask_ratio
  _check(0 < ratio < 1, "model.mask_ratio", f"{ratio} must lie in (0, 1), e.g. 0.75")
  if c.method == "lut":
    _check(ratio >= 0.5, "model.mask_ratio",
           f"{ratio} is below 0.5: LUT's two views need disjoint masks, use >= 0.5 (0.75)")
  size = c.input.image_size
  _check(size > 0 and size % spec.patch == 0, "input.image_size",
         f"{size} is not divisible by the patch size {spec.patch} of {c.model.variant}")
  _check(spec.width % spec.heads == 0 and spec.width % 4 == 0, "model.variant",
         "width must be divisible by the heads and by 4")
  _check(c.model.decoder_width % c.model.decoder_heads == 0 and c.model.decoder_width % 4 == 0,
         "model.decoder_width", "must be divisible by model.decoder_heads and by 4")
  _check(c.model.dtype in DTYPES, "model.dtype", f"{c.model.dtype!r} is not one of {DTYPES}")
  _check(c.model.attention_impl in (None, "xla", "cudnn"), "model.attention_impl",
         "use None, 'xla' or 'cudnn'")
  kept = int((size // spec.patch) ** 2 * (1 - ratio))
  _check(kept >= 1, "model.mask_ratio", f"{ratio} keeps no patch of a {size}px image")
  _check(c.total_steps is None or c.total_steps > 0, "total_steps", "must be positive (or unset)")
  _check(c.epochs > 0, "epochs", "must be positive")
  _check(c.optim.accum_steps >= 1, "optim.accum_steps", "must be >= 1")
  batch = c.input.batch_size
  _check(batch > 0 and batch % num_devices == 0, "input.batch_size",
         f"{batch} is not divisible by the {num_devices} devices: use a multiple of {num_devices}")
  _check(batch % num_processes == 0, "input.batch_size",
         f"{batch} is not divisible by the {num_processes} processes")
  micro = batch // c.optim.accum_steps
  _check(batch % c.optim.accum_steps == 0 and micro % num_devices == 0, "optim.accum_steps",
         f"the micro-batch {batch}/{c.optim.accum_steps} must be a whole multiple of "
         f"the {num_devices} devices")
  fsdp, dp = c.mesh.fsdp, c.mesh.data
  _check(fsdp >= 1 and num_devices % fsdp == 0, "mesh.fsdp",
         f"{fsdp} does not divide the {num_devices} devices")
  _check(dp == -1 or dp * fsdp == num_devices, "mesh.data",
         f"data x fsdp = {dp} x {fsdp} must equal the {num_devices} devices (or use data=-1)")
  for key in ("log_every_steps", "ckpt_every_steps", "keep_checkpoints"):
    _check(c[key] >= 1, key, "must be >= 1")
  o = c.optim
  _check(o.lr_rule in LR_RULES, "optim.lr_rule", f"{o.lr_rule!r} is not one of {LR_RULES}")
  for key in ("base_lr", "weight_decay", "warmup_epochs", "grad_clip_norm"):
    _check(o[key] >= 0, f"optim.{key}", f"{o[key]} must be >= 0")
  _check(o.warmup_epochs <= c.epochs, "optim.warmup_epochs", "must not exceed config.epochs")
  for key in ("b1", "b2"):
    _check(0 <= o[key] < 1, f"optim.{key}", f"{o[key]} must lie in [0, 1)")
  _check(o.eps > 0, "optim.eps", "must be positive")
  if c.method == "lut":
    _check(0 < c.lut.ema_base <= 1, "lut.ema_base", "must lie in (0, 1]")
    _check(c.lut.bc_weight >= 0, "lut.bc_weight", "must be >= 0")
    _check(c.model.head_hidden >= 1, "model.head_hidden", "must be >= 1")
  if c.init_from:
    _check(os.path.isdir(c.init_from), "init_from",
           f"{c.init_from!r} is not a directory: give an export directory or a training workdir")
  _check(c.model.get("num_registers", 0) >= 0, "model.num_registers", "must be >= 0")
  try:
    data.validate_config(c.input, method=c.method, num_processes=num_processes,
                         num_devices=num_devices)
  except ValueError as e:
    # The data package names its keys relative to the input section.
    message = str(e).replace("config.", "config.input.")
    if "config.input." not in message:
      message = f"config.input: {message}"
    raise ConfigError(message) from None
  try:  # after the input: an evaluator's data falls back on it
    evals.validate(c, num_processes, num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def steps(c: ml_collections.ConfigDict, num_examples: int) -> tuple[int, int]:
  """(total_steps, warmup_steps): from `total_steps` when set, otherwise from epochs."""
  per_epoch = max(num_examples // c.input.batch_size, 1)
  total = c.total_steps or c.epochs * per_epoch
  warmup = (round(total * c.optim.warmup_epochs / c.epochs) if c.total_steps
            else c.optim.warmup_epochs * per_epoch)
  return total, min(warmup, total)



# The keys that fix the shapes of the train state: a checkpoint only resumes under the same values.
STATE_KEYS = ("method", "model.variant", "model.decoder_width", "model.decoder_depth",
              "model.decoder_heads", "model.head_hidden", "model.num_registers")


def check_resumable(saved: ml_collections.ConfigDict, current: ml_collections.ConfigDict,
                    where: str):
  """Raises ConfigError naming the keys whose change makes `saved`'s checkpoint unusable."""
  def get(c, key):
    for part in key.split("."):
      c = c.get(part) if c is not None else None
    return c

  changed = [f"config.{k}: {get(saved, k)!r} in the checkpoint, {get(current, k)!r} now"
             for k in STATE_KEYS if get(saved, k) != get(current, k)]
  # Clipping adds a stage to the optimizer state; its threshold alone may change.
  if bool(get(saved, "optim.grad_clip_norm")) != bool(get(current, "optim.grad_clip_norm")):
    changed.append("config.optim.grad_clip_norm: clipping on in one run and off in the other")
  if changed:
    raise ConfigError(f"cannot resume from {where}: " + "; ".join(changed) +
                      ". Use a new --workdir (and --config.init_from to start from these weights).")
