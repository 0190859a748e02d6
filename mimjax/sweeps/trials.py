"""From a sweep file and a base config to validated trials: names, configs, trainer commands.

A trial's config is built twice: once by setting each override on the locked base config
(ml_collections' typed semantics: a missing key or a value of the wrong type fails), and once by
parsing the exact command line its trainer will get (`--config.KEY=VALUE`, as mimjax-train does).
The two must agree, so what is validated here is what the trainer runs.
"""
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
from typing import Any

from absl import flags
import ml_collections
from ml_collections import config_flags

from mimjax import errors

MAX_NAME_LENGTH = 120


class SweepError(errors.UserError, ValueError):
  """A sweep that cannot run as written; the message names the trial and the fix."""


@dataclasses.dataclass(frozen=True)
class Base:
  """What every trial shares: the config file (`PATH[:ARG]`) and the trainer flags after `--`."""
  config: str
  flags: tuple[str, ...] = ()

  @property
  def config_flags(self) -> tuple[str, ...]:
    return tuple(f for f in self.flags if f.startswith("--config."))


@dataclasses.dataclass
class Trial:
  """One run of the sweep: the base config plus `overrides`, trained in ROOT/`name`."""
  name: str
  overrides: dict[str, Any]
  config: ml_collections.ConfigDict | None = None
  total_steps: int | None = None

  def flags(self) -> list[str]:
    return [f"--config.{key}={render(value)}" for key, value in self.overrides.items()]

  def trainer_args(self, base: Base, workdir: str) -> list[str]:
    return [f"--config={base.config}", f"--workdir={workdir}", *base.flags, *self.flags()]

  def label(self) -> str:
    return f"trial {self.name} ({describe(self.overrides)})"


def describe(overrides: dict[str, Any]) -> str:
  return ",".join(f"{k}={v}" for k, v in overrides.items()) or "the base config"


def render(value: Any) -> str:
  """A value as config_flags reads it back from `--config.KEY=...`."""
  return repr(value) if isinstance(value, (tuple, list)) else str(value)


# ---------------------------------------------------------------------------------------------
# Loading the sweep file and the base config.
# ---------------------------------------------------------------------------------------------
def _split_spec(spec: str) -> tuple[str, str | None]:
  path, sep, arg = spec.partition(":")
  return path, (arg if sep else None)


def absolute_config_spec(spec: str) -> str:
  """`configs/mae.py:demo` -> `/abs/configs/mae.py:demo`, so trials may run from anywhere."""
  path, arg = _split_spec(spec)
  if not os.path.isfile(path):
    raise errors.PathNotFoundError(f"--config: no config file {path!r}: give configs/NAME.py[:ARG]")
  path = os.path.abspath(path)
  return path if arg is None else f"{path}:{arg}"


def load_sweep(spec: str) -> list[dict[str, Any]]:
  """`FILE[:ARG]` -> FILE's get_sweep(ARG): a non-empty list of {dotted key: value} dicts."""
  path, arg = _split_spec(spec)
  if not os.path.isfile(path):
    raise errors.PathNotFoundError(f"--sweep: no sweep file {path!r}: give FILE.py[:ARG]")
  module_spec = importlib.util.spec_from_file_location("mimjax_sweep_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise SweepError(f"--sweep: {path} defines no get_sweep(arg=None) returning a list of "
                     "{dotted key: value} dicts")
  trials = module.get_sweep(arg)
  if not isinstance(trials, (list, tuple)) or not all(isinstance(t, dict) for t in trials):
    raise SweepError(f"--sweep: {path}: get_sweep() must return a list of {{dotted key: value}} "
                     f"dicts, not {type(trials).__name__}")
  if not trials:
    raise SweepError(f"--sweep: {spec}: get_sweep() returned an empty sweep: give it at least "
                     "one trial")
  for i, trial in enumerate(trials):
    bad = [k for k in trial if not isinstance(k, str) or not k]
    if bad:
      raise SweepError(f"--sweep: trial {i} has key(s) {bad} that are not dotted config keys")
  return [dict(t) for t in trials]


def parse_config(config: str, config_args=()) -> ml_collections.ConfigDict:
  """The locked config that mimjax-train builds from `--config=CONFIG` and `config_args`."""
  argv = ["mimjax-sweep", f"--config={config}", *config_args]
  values = flags.FlagValues()
  # sys_argv: config_flags reads the overrides from it (sys.argv by default).
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  try:
    values(argv)
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    raise SweepError(errors.config_error_message(e)) from None
  return values.config


# ---------------------------------------------------------------------------------------------
# Overrides on the locked config.
# ---------------------------------------------------------------------------------------------
def set_override(config: ml_collections.ConfigDict, key: str, value: Any):
  """config[key] = value with the locked config's typed semantics; SweepError names the key."""
  *parents, leaf = key.split(".")
  target = config
  for depth, part in enumerate(parents):
    if not isinstance(target, ml_collections.ConfigDict) or part not in target:
      raise SweepError(f"config.{'.'.join(parents[:depth + 1])} does not exist")
    target = target[part]
  if not isinstance(target, ml_collections.ConfigDict) or leaf not in target:
    hint = ""
    if isinstance(target, ml_collections.ConfigDict):
      close = [k for k in target if k.startswith(leaf[:3])]
      hint = f" (did you mean {', '.join(close)}?)" if close else f" (it has {', '.join(target)})"
    raise SweepError(f"config.{key} does not exist{hint}")
  current = target[leaf]
  if isinstance(current, ml_collections.ConfigDict):
    raise SweepError(f"config.{key} is a section, not a value: sweep its keys (config.{key}.NAME)")
  if value is None and current is not None:
    raise SweepError(f"config.{key}=None: the key holds a {type(current).__name__}")
  wrong_type = SweepError(
      f"config.{key}={value!r}: {type(value).__name__} given where the config holds "
      f"{type(current).__name__ if current is not None else 'a typed placeholder'}"
      f"{f' ({current!r})' if current is not None else ''}")
  if isinstance(value, bool) != isinstance(current, bool) and current is not None:
    raise wrong_type
  try:
    target[leaf] = value
  except (TypeError, ValueError):
    raise wrong_type from None


def get_value(config: ml_collections.ConfigDict, key: str) -> Any:
  for part in key.split("."):
    config = config[part]
  return config


def resolve(base: Base, trial: Trial) -> ml_collections.ConfigDict:
  """The trial's config, as its trainer will build it; SweepError on any mismatch."""
  direct = parse_config(base.config, base.config_flags)
  for key, value in trial.overrides.items():
    try:
      set_override(direct, key, value)
    except SweepError as e:
      raise SweepError(f"{trial.label()}: {e}") from None
  try:
    parsed = parse_config(base.config, [*base.config_flags, *trial.flags()])
  except SweepError as e:
    raise SweepError(f"{trial.label()}: the trainer cannot read its command line: {e}") from None
  for key in trial.overrides:
    if get_value(parsed, key) != get_value(direct, key):
      raise SweepError(f"{trial.label()}: config.{key}={trial.overrides[key]!r} reads back as "
                       f"{get_value(parsed, key)!r} from --config.{key}=...; use a plain "
                       "number, bool or string")
  return parsed


def canonical(config: ml_collections.ConfigDict) -> str:
  return json.dumps(json.loads(config.to_json()), sort_keys=True)


def check_distinct(trials: list[Trial]):
  """Two trials with the same config would train the same run twice."""
  seen = {}
  for trial in trials:
    key = canonical(trial.config)
    if key in seen:
      raise SweepError(f"{seen[key].label()} and {trial.label()} give the same config: the sweep "
                       "lists one run twice; remove one")
    seen[key] = trial


# ---------------------------------------------------------------------------------------------
# Trial names: readable, filesystem-safe, unique.
# ---------------------------------------------------------------------------------------------
def _format(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return "x".join(_format(v) for v in value)
  return repr(value) if isinstance(value, float) else str(value)


def _short_hash(overrides: dict[str, Any]) -> str:
  text = json.dumps(overrides, sort_keys=True, default=repr)
  return hashlib.sha1(text.encode()).hexdigest()[:6]


def _labels(keys: list[str]) -> dict[str, str]:
  """Each key's last part (`model.mask_ratio` -> `mask_ratio`), or the whole key where two clash."""
  last = {}
  for key in keys:
    last.setdefault(key.rsplit(".", 1)[-1], set()).add(key)
  return {key: (key.rsplit(".", 1)[-1] if len(last[key.rsplit(".", 1)[-1]]) == 1 else key)
          for key in keys}


def name(overrides: dict[str, Any], labels: dict[str, str]) -> str:
  """`{model.mask_ratio: 0.6, optim.base_lr: 0.001}` -> `mask_ratio_0.6-base_lr_0.001`."""
  parts = [f"{labels[key]}_{_format(value)}" for key, value in overrides.items()]
  text = re.sub(r"[^A-Za-z0-9._+=-]+", "_", "-".join(parts)) or "base"
  text = text.lstrip(".") or "base"
  if len(text) > MAX_NAME_LENGTH:
    text = f"{text[:MAX_NAME_LENGTH - 7]}-{_short_hash(overrides)}"
  return text


def name_trials(all_overrides: list[dict[str, Any]], taken: dict[str, str] = None) -> list[str]:
  """A unique name per trial; `taken` (name -> overrides JSON) are names already in use."""
  taken = dict(taken or {})
  labels = _labels(list(dict.fromkeys(k for o in all_overrides for k in o)))
  names = [name(o, labels) for o in all_overrides]
  counts = {}
  for n in names:
    counts[n] = counts.get(n, 0) + 1
  out = []
  for overrides, n in zip(all_overrides, names):
    identity = json.dumps(overrides, sort_keys=True, default=repr)
    if counts[n] > 1 or (n in taken and taken[n] != identity):
      n = f"{n}-{_short_hash(overrides)}"
    out.append(n)
  return out
