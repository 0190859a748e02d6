"""The interface between the trainer and a training method, and the registry of methods.

The trainer owns everything generic: the mesh, the input pipeline, abstract init, sharding, the
optimizer, gradient accumulation, non-finite checks, checkpoints and the loop. A method owns what
differs: its config keys, its augmentation and batch keys (which the pipeline runs), its model,
the state it adds beside `params` and `opt_state`, the loss of one micro-batch with its metrics,
what happens after each optimizer update, and its pictures for TensorBoard.
"""
from typing import Any, Callable, Mapping

import jax
import ml_collections

from mimjax import errors

_REGISTRY: dict[str, "Method"] = {}


class Method:
  """One training objective. Subclasses override what they need; defaults suit a plain method."""

  name: str = ""
  # The keys of its batches: uint8 (S, S, 3) images made by `augment`, and "label" (int32,
  # from the dataset) when the loss reads one.
  batch_keys: tuple[str, ...] = ()
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

  # --- input and pictures ------------------------------------------------------------------
  def augment(self, data_cfg: ml_collections.ConfigDict) -> Callable:
    """The training augmentation, which the input pipeline (mimjax.data) runs per example:
    (encoded image bytes, seed) -> {batch key: uint8 (S, S, 3) image} for every batch key but
    "label". TF graph ops keyed by the stateless `seed` only (mimjax/data/augment.py holds the
    ops); `data_cfg` is the config's `input` section."""
    raise NotImplementedError

  def visualize(self, c: ml_collections.ConfigDict, model) -> Callable | None:
    """None, or (params, batch, rng) -> {name: uint8 (1, H, W, 3) image}: pictures of the model
    on a training batch, which the trainer jits and writes to TensorBoard every
    `config.image_every_steps`."""
    return None

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
