"""The interface between the trainer and a training method, and the registry of methods.

The trainer owns everything generic: the mesh, data, abstract init, sharding, the optimizer,
gradient accumulation, non-finite checks, checkpoints and the loop. A method owns what differs:
its config keys, its model, the state it adds beside `params` and `opt_state`, the loss of one
micro-batch with its metrics, and what happens after each optimizer update.
"""
from typing import Any, Mapping

import jax
import ml_collections

from mimjax import errors

_REGISTRY: dict[str, "Method"] = {}


class Method:
  """One training objective. Subclasses override what they need; defaults suit a plain method."""

  name: str = ""
  # The input pipeline the method reads (mimjax.data kinds) and the keys of its batches.
  data_kind: str = ""
  batch_keys: tuple[str, ...] = ()
  # The batch entry shown as input / masked / reconstruction grids; None: the method has none.
  image_key: str | None = None
  # State entries the forward pass updates (e.g. BatchNorm statistics): carried from one
  # micro-batch to the next and stored after the step.
  carried_state: tuple[str, ...] = ()
  # Config keys besides the generic ones that fix the state's shapes (for resuming).
  shape_keys: tuple[str, ...] = ()
  # The values of shape keys added later, as checkpoints saved before they existed hold them.
  legacy_defaults: Mapping[str, Any] = {}

  # --- config ------------------------------------------------------------------------------
  def add_config(self, c: ml_collections.ConfigDict) -> None:
    """Adds the method's keys (with their defaults) to the shared schema."""

  def validate(self, c: ml_collections.ConfigDict, check) -> None:
    """Method-specific checks; `check(condition, key, message)` raises a ConfigError."""

  # --- model and state ---------------------------------------------------------------------
  def build_model(self, c: ml_collections.ConfigDict):
    raise NotImplementedError

  def model_kwargs(self, c: ml_collections.ConfigDict) -> dict:
    """The architecture arguments exporters and `load_pretrained` need."""
    return dict(variant=c.model.variant)

  def init_variables(self, c, model, rng, image_size: int) -> Mapping[str, Any]:
    """The model's variables from `model.init` on a dummy batch (traced under eval_shape)."""
    raise NotImplementedError

  def extra_state(self, c, variables) -> dict[str, Any]:
    """State entries beside step/params/opt_state (BatchNorm statistics, a teacher, ...)."""
    return {}

  def graft(self, state: dict, loaded: Mapping[str, Any], put, source: str) -> dict:
    """`state` with its parameters replaced by those of `loaded` (config.init_from).

    `put(name, tree)` places a top-level module's tree with the state's sharding. The default
    replaces every top-level module both have, which must then have the same shapes.
    """
    params = state["params"]
    common = sorted(set(params) & set(loaded))
    if not common:
      raise errors.ConfigError(
          f"config.init_from: {source} shares no module with this model "
          f"(it has {sorted(loaded)}, this model {sorted(params)})")
    params = dict(params)
    for name in common:
      if _shapes(params[name]) != _shapes(loaded[name]):
        raise errors.ConfigError(
            f"config.init_from: the {name!r} of {source} has other shapes than this model's: "
            "check config.model against the model that was saved there")
      params[name] = put(name, loaded[name])
    return dict(state, params=params)

  # --- the step ----------------------------------------------------------------------------
  def example_randomness(self, c, key, batch_size: int, image_size: int):
    """A pytree with a leading batch axis, split into micro-batches with the batch (masking
    noise): what a micro-batch's loss draws does not depend on the accumulation steps."""
    return {}

  def loss(self, c, model, params, state, inputs, example_randomness, rng):
    """The loss of one micro-batch: -> (loss, (aux metrics, {carried state entries})).

    `state` holds the carried entries as updated by the previous micro-batch; `rng` is this
    micro-batch's own key (dropout, mixup).
    """
    raise NotImplementedError

  def after_update(self, c, state: dict, step, total_steps: int) -> tuple[dict, dict]:
    """Runs after the optimizer update, on the new state: -> (state, extra metrics)."""
    return state, {}


def _shapes(tree):
  return jax.tree_util.tree_map(lambda x: x.shape, tree)


def register(method: Method) -> Method:
  _REGISTRY[method.name] = method
  return method


def names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def get(name: str) -> Method:
  """The registered method `name`; raises ConfigError naming the choices."""
  if name not in _REGISTRY:
    raise errors.ConfigError(f"config.method: {name!r} is not one of {names()}")
  return _REGISTRY[name]
