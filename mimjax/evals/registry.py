"""The evaluator registry: `config.evals.NAME.type` -> an evaluator class.

An evaluator is a class registered under a type name:

    @registry.register("knn")
    class KnnEvaluator:
      DEFAULTS = dict(k=20)                   # its own config keys, with their defaults
      def __init__(self, config, eval_config, model, mesh): ...   # built once, before training
      def run(self, params, step) -> dict[str, float]: ...         # scalars, e.g. {"top1": 0.5}

`DEFAULTS` extends the keys every evaluator has (`COMMON`); `validate(config, eval_config,
num_processes, num_devices)`, when a class has it, checks its values before anything compiles.
The trainer prefixes each scalar with the evaluator's name (`knn/top1`) and adds its cost
(`knn/seconds`). An evaluator with `at_start` also runs at step 0, before the first update, and
every later result carries its gain over that step-0 value (`knn/top1_gain`, the latest minus step
0's: a loss's gain is negative when it fell): each run measures its own random-init baseline.
"""
from typing import Any, Callable

import ml_collections

# Keys every evaluator takes. Empty / 0 data keys fall back to the trainer's config.input.
COMMON = dict(
    type="",
    every_steps=0,     # 0: only at the end of training
    at_start=True,     # also at step 0 (before the first update): the reference of the gains
    dataset="",        # as config.input.dataset ('' = config.input's)
    folder="",
    data_dir="",
    batch_size=0,      # global eval batch (0 = config.input.batch_size)
    image_size=0,      # 0 = config.input.image_size
)

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
  """Class decorator: makes `name` a valid `config.evals.*.type`."""
  def wrap(cls):
    if name in _REGISTRY and _REGISTRY[name] is not cls:
      raise ValueError(f"evaluator type {name!r} is registered twice")
    _REGISTRY[name] = cls
    return cls
  return wrap


def names() -> list[str]:
  return sorted(_REGISTRY)


def get(name: str) -> type:
  """The evaluator class of type `name`; KeyError naming the known types."""
  if name not in _REGISTRY:
    raise KeyError(f"unknown evaluator type {name!r}: use one of {names()}")
  return _REGISTRY[name]


def make_config(type: str, **overrides: Any) -> ml_collections.ConfigDict:  # pylint: disable=redefined-builtin
  """A `config.evals.NAME` entry of `type` with every key it accepts (so each can be overridden
  from the command line), the given values applied."""
  cls = get(type)
  c = ml_collections.ConfigDict(dict(COMMON, **getattr(cls, "DEFAULTS", {})))
  c.type = type
  for key, value in overrides.items():
    if key not in c:
      raise KeyError(f"evaluator type {type!r} has no key {key!r}: it has {sorted(c)}")
    c[key] = value
  return c
