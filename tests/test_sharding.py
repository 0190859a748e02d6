"""FSDP sharding rules, on the real B/16 state shapes."""
import jax
from jax.sharding import PartitionSpec as P

from mimjax import sharding
from mimjax import state as state_lib
from tests import helpers


def test_fsdp_spec_splits_the_largest_divisible_dimension():
  assert sharding.fsdp_spec((768, 3072), 8, 1) == P(None, "fsdp")
  assert sharding.fsdp_spec((3072, 768), 8, 1) == P("fsdp", None)
  assert sharding.fsdp_spec((7, 768), 8, 1) == P(None, "fsdp")
  assert sharding.fsdp_spec((7, 9), 8, 1) == P()  # nothing divisible: replicated
  assert sharding.fsdp_spec((768,), 8, 10_000) == P()  # too small to be worth it
  assert sharding.fsdp_spec((768, 3072), 1, 1) == P()


def test_b16_state_is_almost_all_sharded():
  c = helpers.load_config("lut", "variant=B/16")
  model = state_lib.build_model(c)
  init = state_lib.init_fn(c, model, state_lib.shape_only_optimizer(c))
  abstract = jax.eval_shape(init, jax.random.key(0))
  specs = jax.tree_util.tree_map(lambda a: sharding.fsdp_spec(a.shape, 8, c.mesh.fsdp_min_size),
                                 abstract)
  sizes = jax.tree_util.tree_map(lambda a: a.size, abstract)
  total = sum(jax.tree_util.tree_leaves(sizes))
  split = sum(s for s, p in zip(jax.tree_util.tree_leaves(sizes), jax.tree_util.tree_leaves(
      specs, is_leaf=lambda x: isinstance(x, P))) if p != P())
  assert split / total > 0.99
  qkv = ("encoder", "transformer", "block0", "attn", "qkv", "kernel")
  param_spec = specs["params"]
  for key in qkv:
    param_spec = param_spec[key]
  assert param_spec == P(None, "fsdp")
