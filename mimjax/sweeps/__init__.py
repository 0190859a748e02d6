"""Config sweeps: many trainer runs from one base config and a list of overrides.

A sweep file (`configs/sweeps/*.py`, or a config file itself) defines `get_sweep(arg=None)`
returning a list of trials, each a `{dotted config key: value}` dict of overrides:

  from mimjax import sweeps

  def get_sweep(arg=None):
    return sweeps.product(
        sweeps.sweep("model.mask_ratio", [0.6, 0.75, 0.9]),
        sweeps.sweep("optim.base_lr", [4e-3, 8e-3]))

`launch/sweep.py` (mimjax-sweep) runs it; see mimjax/sweeps/cli.py.
"""
import builtins
import itertools
from typing import Any, Iterable, Sequence

Trial = dict[str, Any]


def sweep(key: str, values: Iterable[Any]) -> list[Trial]:
  """One key over `values`: [{key: v} for v in values]."""
  return [{key: value} for value in values]


def product(*sweeps: Sequence[Trial]) -> list[Trial]:
  """Every combination of one trial from each sweep, the first sweep varying slowest."""
  return [_merge(combination) for combination in itertools.product(*sweeps)]


def zip(*sweeps: Sequence[Trial]) -> list[Trial]:  # pylint: disable=redefined-builtin
  """The i-th trials of all sweeps merged, for keys that move together; lengths must agree."""
  lengths = sorted({len(s) for s in sweeps})
  if len(lengths) > 1:
    raise ValueError(f"sweeps.zip needs sweeps of one length, got lengths {lengths}")
  return [_merge(group) for group in builtins.zip(*sweeps)]


def _merge(trials: Iterable[Trial]) -> Trial:
  merged = {}
  for trial in trials:
    for key, value in trial.items():
      if key in merged and merged[key] != value:
        raise ValueError(f"sweeps: key {key!r} is set twice in one trial ({merged[key]!r}, {value!r})")
      merged[key] = value
  return merged
