"""The config schema and its validation before anything compiles.

Each recipe value has one home. `base_config` (with the methods' `add_config`) is the schema:
every key with its type and a neutral default (off, empty, or small and safe: never a published
value). The recipes are config files (`configs/*.py`, what they share in `configs/common.py`)
built on it; they set every published value, each with its source. Derived values (steps from
epochs, the learning rate from the batch size) are computed by the trainer from the config,
never stored in it.
"""

import os

import ml_collections
from ml_collections import config_dict

from mimjax import data
from mimjax import errors
from mimjax import evals
from mimjax import methods
from mimjax.models import vit

LR_RULES = ("linear", "sqrt", "sqrt8")
DTYPES = ("float32", "bfloat16")
VARIANTS = ("S/16", "B/16", "L/16", "H/14")


ConfigError = errors.ConfigError  # where users and config files look for it


def parse_arg(arg: str | None) -> dict[str, str]:
  """'variant=B/16,dataset=imagenet2012' -> dict; a bare word ('demo') maps to True."""
  out = {}
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    out[key.strip()] = value.strip() if value else "True"
  return out


def base_config(method: str) -> ml_collections.ConfigDict:
  """The config schema of `method`: every key with a neutral default (the recipes, with their
  published values, are configs/*.py).

  The shared keys are set here; the method adds its own (`mimjax.methods`).
  """
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  c.epochs = 1
  c.total_steps = config_dict.placeholder(int)  # when set, overrides `epochs`

  c.input = data.make_default_config()  # the global batch, the dataset, ...

  c.model = ml_collections.ConfigDict()
  c.model.variant = "Ti/16"
  c.model.dtype = "float32"  # compute dtype; parameters are always float32
  c.model.attention_impl = config_dict.placeholder(str)  # None (XLA), 'xla' or 'cudnn'
  c.model.remat = False
  c.model.num_registers = 0  # register tokens (Darcet et al. 2023); exports refuse them

  c.optim = ml_collections.ConfigDict()
  c.optim.base_lr = 1e-3  # the lr at batch 256 (see lr_rule)
  c.optim.lr_rule = "linear"
  c.optim.warmup_epochs = 0
  c.optim.min_lr = 0.0  # where the cosine ends
  c.optim.b1 = 0.9  # AdamW's own defaults (optax, torch)
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0
  c.optim.decay_cls = True  # weight decay on the cls token (pre-training: yes; fine-tuning: no)
  c.optim.layer_decay = 1.0  # layer-wise lr decay: block i's lr x decay^(depth + 1 - (i + 1))
  c.optim.grad_clip_norm = 0.0  # 0 = none
  c.optim.accum_steps = 1  # micro-batches per optimizer step

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by fsdp
  c.mesh.fsdp = 1   # >1 shards parameters and optimizer state over this many devices
  c.mesh.fsdp_min_size = 2 ** 14  # smaller arrays stay replicated

  c.log_every_steps = 50
  c.ckpt_every_steps = 1000
  c.keep_checkpoints = 3
  c.image_every_steps = 5000  # input / masked / reconstruction grids to TensorBoard; 0 = never
  c.init_from = ""  # a workdir or export dir to start from when the workdir has no checkpoint
  # A jax.profiler trace of steps start_step ... start_step + num_steps - 1 (step 1 compiles)
  # in WORKDIR/profile, for TensorBoard's profile plugin (mimjax/profiling.py); 0 steps = none.
  c.profile = ml_collections.ConfigDict()
  c.profile.num_steps = 0
  c.profile.start_step = 10
  # Evaluators run during training: name -> evals.make_config(type, ...) (see mimjax/evals).
  c.evals = ml_collections.ConfigDict()
  methods.get(method).add_config(c)
  return c


def set_variant(c: ml_collections.ConfigDict, variant: str) -> None:
  """`variant=` of a recipe's config argument: one of the published sizes."""
  if variant not in VARIANTS:
    raise ConfigError(f"variant={variant!r} is not a published recipe: use one of {VARIANTS}")
  c.model.variant = variant


def check_args(args: dict[str, str], allowed: tuple[str, ...]) -> None:
  unknown = set(args) - set(allowed)
  if unknown:
    raise ConfigError(f"unknown config argument(s) {sorted(unknown)}: use "
                      + ", ".join(f"{a}=" if a != "demo" else a for a in allowed))


def _check(condition: bool, key: str, message: str):
  if not condition:
    raise ConfigError(f"config.{key}: {message}")


def validate(c: ml_collections.ConfigDict, num_processes: int, num_devices: int,
             check_data: bool = True):
  """Raises ConfigError naming the key and the fix; cheap, runs before anything compiles.

  `check_data=False` skips the dataset checks (whether it is prepared and large enough), for
  tools that only compile the step (mimjax-compile).
  """
  method = methods.get(c.method)
  try:
    spec = vit.decode_variant(c.model.variant)
  except ValueError as e:
    raise ConfigError(f"config.model.variant: {e}") from None
  size = c.input.image_size
  _check(size > 0 and size % spec.patch == 0, "input.image_size",
         f"{size} is not divisible by the patch size {spec.patch} of {c.model.variant}")
  _check(spec.width % spec.heads == 0 and spec.width % 4 == 0, "model.variant",
         "width must be divisible by the heads and by 4")
  _check(c.model.dtype in DTYPES, "model.dtype", f"{c.model.dtype!r} is not one of {DTYPES}")
  _check(c.model.attention_impl in (None, "xla", "cudnn"), "model.attention_impl",
         "use None, 'xla' or 'cudnn'")
  _check(c.total_steps is None or c.total_steps > 0, "total_steps", "must be positive (or unset)")
  _check(c.epochs > 0, "epochs", "must be positive")
  _check(c.optim.accum_steps >= 1, "optim.accum_steps", "must be >= 1")
  batch = c.input.batch_size
  _check(batch > 0, "input.batch_size", f"{batch} must be positive (the global batch)")
  _check(batch % num_devices == 0, "input.batch_size",
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
  _check(c.seed >= 0, "seed", f"{c.seed} must be >= 0")
  _check(c.image_every_steps >= 0, "image_every_steps", "must be >= 0 (0 = never)")
  _check(c.mesh.fsdp_min_size >= 0, "mesh.fsdp_min_size", "must be >= 0")
  _check(c.profile.num_steps >= 0, "profile.num_steps", "must be >= 0 (0 = no trace)")
  _check(c.profile.start_step >= 1, "profile.start_step",
         f"{c.profile.start_step} must be >= 1 (step 1 is the first update)")
  if c.input.get("cache_dir"):
    _check(_creatable(c.input.cache_dir), "input.cache_dir",
           f"{c.input.cache_dir!r} cannot be created: give a writable directory (or '' for "
           "$MIMJAX_CACHE_DIR or ~/.cache/mimjax)")
  o = c.optim
  _check(o.lr_rule in LR_RULES, "optim.lr_rule", f"{o.lr_rule!r} is not one of {LR_RULES}")
  for key in ("base_lr", "min_lr", "weight_decay", "warmup_epochs", "grad_clip_norm"):
    _check(o[key] >= 0, f"optim.{key}", f"{o[key]} must be >= 0")
  _check(o.warmup_epochs <= c.epochs, "optim.warmup_epochs", "must not exceed config.epochs")
  for key in ("b1", "b2"):
    _check(0 <= o[key] < 1, f"optim.{key}", f"{o[key]} must lie in [0, 1)")
  _check(o.eps > 0, "optim.eps", "must be positive")
  _check(0 < o.layer_decay <= 1, "optim.layer_decay", f"{o.layer_decay} must lie in (0, 1]")
  method.validate(c, _check)
  if c.init_from:
    from mimjax import storage  # local: keeps the config module free of storage clients
    storage.check_bucket(c.init_from)
    _check(storage.path(c.init_from).is_dir(), "init_from",
           f"{c.init_from!r} is not a directory: give an export directory or a training workdir")
  _check(c.model.get("num_registers", 0) >= 0, "model.num_registers", "must be >= 0")
  if not check_data:
    return
  try:
    data.validate_config(c.input, training=True, num_processes=num_processes,
                         num_devices=num_devices)
  except ValueError as e:
    # The data package names its keys relative to the input section.
    message = str(e).replace("config.", "config.input.")
    if "config.input." not in message:
      message = f"config.input: {message}"
    raise ConfigError(message) from None
  try:  # after the input's own checks: evaluators read the same dataset by default
    evals.validate(c, num_processes, num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def _creatable(path: str) -> bool:
  """Whether a local directory exists or could be made (URLs are left to the storage layer)."""
  if "://" in path:
    return True
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK) and not path.startswith("/proc")


def steps(c: ml_collections.ConfigDict, num_examples: int) -> tuple[int, int]:
  """(total_steps, warmup_steps): from `total_steps` when set, otherwise from epochs."""
  per_epoch = max(num_examples // c.input.batch_size, 1)
  total = c.total_steps or c.epochs * per_epoch
  warmup = (round(total * c.optim.warmup_epochs / c.epochs) if c.total_steps
            else c.optim.warmup_epochs * per_epoch)
  return total, min(warmup, total)



# The keys that fix the shapes of the train state: a checkpoint only resumes under the same
# values (with the method's own `shape_keys`).
STATE_KEYS = ("method", "model.variant", "model.num_registers")


def check_resumable(saved: ml_collections.ConfigDict, current: ml_collections.ConfigDict,
                    where: str):
  """Raises ConfigError naming the keys whose change makes `saved`'s checkpoint unusable."""
  def get(c, key):
    for part in key.split("."):
      c = c.get(part) if c is not None else None
    return c

  method = methods.get(current.method)
  def get_saved(key):  # a key the checkpoint predates has the value runs had before it existed
    value = get(saved, key)
    return method.legacy_defaults.get(key) if value is None else value

  changed = [f"config.{k}: {get_saved(k)!r} in the checkpoint, {get(current, k)!r} now"
             for k in STATE_KEYS + method.shape_keys
             if get_saved(k) != get(current, k)]
  # Clipping adds a stage to the optimizer state; its threshold alone may change.
  if bool(get(saved, "optim.grad_clip_norm")) != bool(get(current, "optim.grad_clip_norm")):
    changed.append("config.optim.grad_clip_norm: clipping on in one run and off in the other")
  # So does layer-wise lr decay (a missing key is a run from before it existed: off).
  decays = [(get(c, "optim.layer_decay") or 1.0) != 1.0 for c in (saved, current)]
  if decays[0] != decays[1]:
    changed.append("config.optim.layer_decay: on (< 1) in one run and off (1) in the other")
  if changed:
    raise ConfigError(f"cannot resume from {where}: " + "; ".join(changed) +
                      ". Use a new --workdir (and --config.init_from to start from these weights).")
