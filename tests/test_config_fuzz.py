"""Config fuzzing from the schema: every leaf key of both configs, a value of the wrong type and,
where the key has a range, one outside it; each refused in one line that names the key.

The leaves come from iterating the config tree; only the out-of-range values are listed by hand
(RANGES), and a test fails when a new numeric or enumerated key has no entry, so that a new key
cannot go unchecked.
"""
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags
import pytest

from mimjax import config_lib
from mimjax import errors
from tests import helpers

METHODS = ("mae", "lut", "finetune")

# key -> (a value outside the key's range or domain, extra overrides that make it matter[, what
# the refusal must say when not `config.KEY`]).
RANGES = {
    "method": ("byol", {}),
    "seed": ("-1", {}),
    "epochs": ("0", {}),
    "total_steps": ("0", {}),
    "init_from": ("/no/such/export", {}),
    "input.dataset": ("no_such_dataset", {}),
    "input.folder": ("/no/such/folder", {"input.dataset": "folder"}),
    "input.split": ("no_such_split[", {}),
    # The data package names the directory it looked in.
    "input.data_dir": ("/no/such/tfds_dir", {"input.dataset": "imagenet2012"},
                       "config.input: tfds dataset 'imagenet2012' is not prepared in '/no/such"),
    "input.batch_size": ("0", {}),
    "input.image_size": ("0", {}),
    "input.shuffle_buffer": ("0", {}),
    "input.on_corrupt": ("ignore", {}),
    "input.eval_crop_fraction": ("1.5", {}),
    "input.cache_dir": ("/proc/no_such_cache", {}),
    "input.num_threads": ("-1", {}),
    "model.variant": ("Z/16", {}),
    "model.mask_ratio": ("1.0", {}),
    "model.decoder_width": ("0", {}),
    "model.decoder_depth": ("0", {}),
    "model.decoder_heads": ("0", {}),
    "model.dtype": ("float64", {}),
    "model.attention_impl": ("flash", {}),
    "model.head_hidden": ("0", {}),
    "optim.base_lr": ("-1.0", {}),
    "optim.min_lr": ("-1.0", {}),
    "model.num_classes": ("1", {}),
    "model.drop_path": ("1.0", {}),
    "finetune.label_smoothing": ("1.0", {}),
    "finetune.mixup": ("-0.5", {}),
    "finetune.cutmix": ("-0.5", {}),
    "finetune.mixup_prob": ("1.5", {}),
    "finetune.mixup_switch_prob": ("-0.5", {}),
    "finetune.random_erasing": ("1.5", {}),
    "optim.layer_decay": ("1.5", {}),
    "optim.lr_rule": ("cubic", {}),
    "optim.warmup_epochs": ("-1", {}),
    "optim.b1": ("1.0", {}),
    "optim.b2": ("-0.1", {}),
    "optim.eps": ("0.0", {}),
    "optim.weight_decay": ("-0.1", {}),
    "optim.grad_clip_norm": ("-1.0", {}),
    "optim.accum_steps": ("0", {}),
    "input.randaugment": ("rand-zz", {}),
    "model.num_registers": ("-1", {}),
    "evals.knn.type": ("no_such_evaluator", {}),
    "evals.knn.every_steps": ("-2", {}),
    "evals.knn.batch_size": ("-8", {}),
    "evals.knn.image_size": ("-8", {}),
    # A bad dataset, folder or tfds directory is named through the split that cannot be read.
    "evals.knn.dataset": ("no_such_dataset", {}, "config.evals.knn.train_split"),
    "evals.knn.folder": ("/no/such/folder", {"evals.knn.dataset": "folder"},
                          "config.evals.knn.train_split"),
    "evals.knn.data_dir": ("/no/such/tfds_dir", {"evals.knn.dataset": "imagenet2012"},
                            "config.evals.knn.train_split"),
    "evals.val.type": ("no_such_evaluator", {}),
    "evals.val.every_steps": ("-2", {}),
    "evals.val.batch_size": ("-8", {}),
    "evals.val.image_size": ("-8", {}),
    # A bad dataset, folder or tfds directory is named through the split that cannot be read.
    "evals.val.dataset": ("no_such_dataset", {}, "config.evals.val.split"),
    "evals.val.folder": ("/no/such/folder", {"evals.val.dataset": "folder"},
                          "config.evals.val.split"),
    "evals.val.data_dir": ("/no/such/tfds_dir", {"evals.val.dataset": "imagenet2012"},
                            "config.evals.val.split"),
    "evals.knn.train_split": ("no_such_split[", {}),
    "evals.knn.val_split": ("no_such_split[", {}),
    "evals.knn.k": ("0", {}),
    "evals.knn.temperature": ("0.0", {}),
    "evals.knn.feature": ("patch", {}),
    "evals.val.split": ("no_such_split[", {}),
    "lut.bc_weight": ("-1.0", {}),
    "lut.ema_base": ("1.5", {}),
    "mesh.data": ("0", {}),
    "mesh.fsdp": ("0", {}),
    "mesh.fsdp_min_size": ("-1", {}),
    "log_every_steps": ("0", {}),
    "ckpt_every_steps": ("0", {}),
    "keep_checkpoints": ("0", {}),
    "image_every_steps": ("-1", {}),
    "profile.num_steps": ("-1", {}),
    "profile.start_step": ("0", {"profile.num_steps": "2"}),
}
WRONG_TYPE = {int: "1.5", float: "abc", bool: "maybe"}


def leaves(c: ml_collections.ConfigDict, prefix=""):
  """(dotted key, declared type) of every leaf, from the config tree itself."""
  for key in sorted(c.keys()):
    value = c[key]
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", c.get_type(key)


CONFIGS = {m: helpers.load_config(m, "demo") for m in METHODS}
CASES = [(m, key, kind) for m in METHODS for key, kind in leaves(CONFIGS[m])]


def _parse(method, overrides, capsys):
  """The CLI's own flag parsing, in-process: the config file plus `--config.KEY=VALUE` flags.

  ml_collections reads the overrides from sys.argv, so the command line is set there too.
  """
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  argv = ["mimjax-train", f"--config={helpers.ROOT}/configs/{method}.py:demo"]
  argv += [f"--config.{k}={v}" for k, v in overrides.items()]
  saved_argv, sys.argv = sys.argv, argv
  try:
    errors.flags_parser("mimjax-train", values)(argv)
  except SystemExit as e:
    assert e.code == errors.EXIT_USER_ERROR
    err = capsys.readouterr().err
    return None, err
  finally:
    sys.argv = saved_argv
  return values.config, ""


def _refusal(method, overrides, capsys) -> str:
  """The one line with which parsing or validation refuses `overrides`."""
  config, err = _parse(method, overrides, capsys)
  if config is None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mimjax-train: error:"), err
    assert "Unknown command line flag" not in lines[0], lines[0]
    return lines[0]
  with pytest.raises(errors.UserError) as info:
    config_lib.validate(config, 1, 1)
  message = str(info.value)
  assert "\n" not in message
  return message


def test_every_checked_leaf_has_a_range_entry():
  untyped = [(m, k) for m, k, kind in CASES if k not in RANGES and kind is not bool]
  assert not untyped, f"add these keys to RANGES (a value outside their range): {untyped}"
  unknown = set(RANGES) - {k for _, k, _ in CASES}
  assert not unknown, f"RANGES names keys that no config has: {unknown}"


@pytest.mark.parametrize("method,key,kind", [c for c in CASES if c[2] in WRONG_TYPE],
                         ids=lambda v: str(getattr(v, "__name__", v)))
def test_wrong_type_is_refused_naming_the_key(method, key, kind, capsys):
  line = _refusal(method, {key: WRONG_TYPE[kind]}, capsys)
  assert key.split(".")[-1] in line, line


@pytest.mark.parametrize("method,key,kind", [c for c in CASES if c[1] in RANGES],
                         ids=lambda v: str(getattr(v, "__name__", v)))
def test_out_of_range_is_refused_naming_the_key(method, key, kind, capsys):
  value, context, *expected = RANGES[key]
  line = _refusal(method, {**context, key: value}, capsys)
  assert (expected[0] if expected else f"config.{key}") in line, line


def test_string_keys_refuse_a_non_string_value():
  for method, key, kind in CASES:
    if kind is not str:
      continue
    *parents, leaf = key.split(".")
    section = CONFIGS[method]
    for p in parents:
      section = section[p]
    with pytest.raises(TypeError, match=leaf):
      section[leaf] = 3
