"""The recipes as the official runs: LUT's BatchNorm updates per step, layer-wise lr decay."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mimjax import config_lib
from mimjax import optim
from mimjax import state as state_lib
from mimjax import step as step_lib
from mimjax.export import timm_vit
from mimjax.models import lut as lut_model
from mimjax.models import masking
from tests import helpers


def test_batchnorm_statistics_update_once_per_view():
  """Two head calls in one apply (view 1, view 2) are two momentum updates, as two torch calls."""
  class TwoViews(nn.Module):
    @nn.compact
    def __call__(self, x1, x2):
      head = lut_model.ProjectionHead(hidden=6, out=3)
      return head(x1, True), head(x2, True)

  rng = np.random.default_rng(0)
  x1, x2 = (rng.standard_normal((5, 4)).astype(np.float32) + s for s in (1.0, -2.0))
  model = TwoViews()
  variables = model.init(jax.random.key(0), x1, x2)
  _, updated = model.apply(variables, x1, x2, mutable=["batch_stats"])
  w = np.asarray(variables["params"]["ProjectionHead_0"]["fc1"]["kernel"])
  h1, h2 = x1 @ w, x2 @ w
  stats = updated["batch_stats"]["ProjectionHead_0"]["bn"]
  # torch momentum 0.1 == flax 0.9; starting from mean 0 and var 1; torch keeps the unbiased var.
  np.testing.assert_allclose(stats["mean"], 0.9 * 0.1 * h1.mean(0) + 0.1 * h2.mean(0), atol=1e-5)
  var1, var2 = h1.var(0, ddof=1), h2.var(0, ddof=1)
  np.testing.assert_allclose(stats["var"], 0.9 * (0.9 + 0.1 * var1) + 0.1 * var2, atol=1e-5)


def test_lut_step_updates_batchnorm_per_micro_batch():
  """With accum_steps=4 the step's statistics are 4 micro-batches x 2 views of updates in turn,
  each over its micro-batch only: the official run's 8 updates per step over 1024 images."""
  c = helpers.tiny_config("lut", **{"optim.accum_steps": 4})
  model = state_lib.build_model(c)
  tx = optim.make(c, optax.constant_schedule(1e-3))
  state = jax.jit(state_lib.init_fn(c, model, tx))(jax.random.key(0))
  rng = np.random.default_rng(1)
  batch = {k: rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8) for k in ("view1", "view2")}
  expected = state["batch_stats"]
  noise = masking.sample_noise(jax.random.fold_in(jax.random.key(c.seed), 0), 8, 16)
  from mimjax import data  # pylint: disable=g-import-not-at-top
  student = jax.jit(lambda variables, v1, v2, n: model.apply(
      variables, data.normalize(v1), data.normalize(v2), n, method="student",
      mutable=["batch_stats"])[1]["batch_stats"])
  for a in range(4):  # micro-batch a holds rows a, a + 4
    expected = student({"params": state["params"], "batch_stats": expected},
                       batch["view1"][a::4], batch["view2"][a::4], noise[a::4])
  step = jax.jit(step_lib.make_train_step(c, model, tx, optax.constant_schedule(1e-3), 4))
  new_state, _ = step(state, batch)
  # Successive micro-batches move the statistics by ~0.1: 1e-4 tells them apart.
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
                         new_state["batch_stats"], expected)
  one_batch = jax.tree_util.tree_map(np.asarray, new_state["batch_stats"])
  assert not np.allclose(one_batch["projector"]["bn"]["mean"],
                         np.asarray(state["batch_stats"]["projector"]["bn"]["mean"]))


# MAE's util/lr_decay.py, restated: torch names -> (layer id, lr scale, weight decay or not).
def _reference_groups(state_shapes, depth, layer_decay, no_weight_decay=("cls_token", "pos_embed")):
  num_layers = depth + 1
  out = {}
  for name, shape in state_shapes.items():
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
      layer = 0
    elif name.startswith("blocks"):
      layer = int(name.split(".")[1]) + 1
    else:
      layer = num_layers
    decay = not (len(shape) == 1 or name in no_weight_decay)
    out[name] = (layer_decay ** (num_layers - layer), decay)
  return out


@pytest.mark.parametrize("variant,layer_decay", [("mu/4", 0.65), ("W32-D5-H2/4", 0.75)])
def test_layer_decay_and_weight_decay_equal_maes_param_groups(variant, layer_decay):
  from mimjax.models import classifier  # pylint: disable=g-import-not-at-top
  model = classifier.Classifier(variant, num_classes=3)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  depth = int(variant.split("-D")[1].split("-")[0]) if "-D" in variant else 2
  scales = optim.layer_scales(params, depth, layer_decay)
  decayed = optim.decay_mask(params, decay_cls=False)
  flat = lambda tree: {"/".join(str(getattr(k, "key", k)) for k in path): v
                       for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  scales, decayed, shapes = flat(scales), flat(decayed), flat(params)
  table = timm_vit.timm_rules({"variant": variant}, 16, global_pool="avg", fine_tuned=True,
                              learned_pos=True)
  # Every tensor of the timm model is one of its parameters (pos_embed included: timm trains
  # it), so each must be a mimjax parameter, not a constant the export computes.
  constants = [key for rule in table if not rule.mimjax for key in rule.torch]
  assert not constants, constants
  torch_shapes = {}
  for rule in table:
    for path, key in zip(rule.mimjax, rule.torch, strict=True):
      shape = shapes[path].shape
      torch_shapes[key] = (shape[::-1] if rule.transform == "dense_kernel" else shape)
  reference = _reference_groups(torch_shapes, depth, layer_decay)
  checked = 0
  for rule in table:
    for path, key in zip(rule.mimjax, rule.torch):
      assert scales[path] == pytest.approx(reference[key][0]), (path, key)
      assert bool(decayed[path]) == reference[key][1], (path, key)
      checked += 1
  assert checked == len(scales)  # every parameter has a torch counterpart
  # The embeddings (cls, position, patch) get decay^(depth + 1), the head 1; no weight decay on
  # the cls token and the position embedding.
  for path in ("encoder/cls", "encoder/pos_embed", "encoder/patch_embed/kernel"):
    assert scales[path] == pytest.approx(layer_decay ** (depth + 1)), path
  assert not decayed["encoder/cls"] and not decayed["encoder/pos_embed"]
  assert decayed["encoder/patch_embed/kernel"]
  assert scales["head/kernel"] == 1.0


@pytest.mark.parametrize("variant,blr,layer_decay,drop_path,epochs", [
    ("B/16", 5e-4, 0.65, 0.1, 100), ("L/16", 1e-3, 0.75, 0.2, 50), ("H/14", 1e-3, 0.75, 0.3, 50)])
def test_finetune_recipe(variant, blr, layer_decay, drop_path, epochs):
  c = helpers.load_config("finetune", f"variant={variant},dataset=imagenet2012")
  assert (c.method, c.model.variant, c.epochs, c.input.batch_size) == ("finetune", variant,
                                                                       epochs, 1024)
  assert (c.optim.base_lr, c.optim.layer_decay, c.model.drop_path) == (blr, layer_decay, drop_path)
  assert optim.peak_learning_rate(c.optim.base_lr, 1024, c.optim.lr_rule) == pytest.approx(blr * 4)
  assert (c.optim.b1, c.optim.b2, c.optim.weight_decay, c.optim.decay_cls) == (0.9, 0.999, 0.05,
                                                                               False)
  assert (c.optim.warmup_epochs, c.optim.min_lr) == (5, 1e-6)
  f = c.finetune
  assert (f.label_smoothing, f.mixup, f.cutmix, f.random_erasing) == (0.1, 0.8, 1.0, 0.25)
  assert c.model.global_pool and c.input.eval_crop_fraction == 224 / 256
  assert c.model.dtype == "bfloat16"  # mixed precision, as the official runs
  lut = helpers.load_config("finetune", f"variant={variant},recipe=lut")
  # LUT's main_finetune.py: lr = 1e-3 * sqrt(1024) / 8.
  assert optim.peak_learning_rate(lut.optim.base_lr, 1024, lut.optim.lr_rule) == pytest.approx(4e-3)
  assert lut.optim.layer_decay == 0.75 and lut.model.dtype == "bfloat16"


@pytest.mark.parametrize("method", ["mae", "lut", "finetune"])
def test_recipes_compute_in_bfloat16_and_the_demos_in_float32(method):
  """bfloat16 compute, float32 parameters and optimizer state: the official runs' mixed
  precision; the CPU demos stay float32."""
  recipe = helpers.load_config(method, "variant=L/16,dataset=imagenet2012")
  assert recipe.model.dtype == "bfloat16"
  assert helpers.load_config(method).model.dtype == "bfloat16"  # no argument: the B/16 recipe
  assert helpers.load_config(method, "demo").model.dtype == "float32"
  recipe.model.variant = "mu/4"  # the state's dtypes, at a size that initializes in a second
  model = state_lib.build_model(recipe)
  tx = optim.make(recipe, optax.constant_schedule(1e-3))
  abstract = jax.eval_shape(state_lib.init_fn(recipe, model, tx), jax.random.key(0))
  floats = [a.dtype for a in jax.tree_util.tree_leaves(abstract)
            if jnp.issubdtype(a.dtype, jnp.floating)]
  assert floats and set(floats) == {jnp.dtype("float32")}


def test_finetune_schedule_ends_at_min_lr():
  sched = optim.schedule(1.0, 10, 110, min_lr=1e-3)
  assert float(sched(0)) == 0.0 and float(sched(10)) == pytest.approx(1.0)
  assert float(sched(110)) == pytest.approx(1e-3)


def _tiny_finetune_config():
  c = helpers.load_config("finetune", "demo")
  c.input.image_size, c.input.batch_size, c.model.variant = 16, 8, "mu/4"
  c.finetune.mixup = c.finetune.cutmix = c.finetune.random_erasing = 0.0
  return c


def test_finetune_step_trains_the_position_embedding():
  """As MAE's fine-tuning (timm's `pos_embed` parameter): it starts as the fixed sin-cos table,
  a step moves it by the lr of layer 0 (Adam's first step is lr x sign(g)), no weight decay."""
  from mimjax.methods import finetune  # pylint: disable=g-import-not-at-top
  from mimjax.models import classifier  # pylint: disable=g-import-not-at-top
  from mimjax.models import vit  # pylint: disable=g-import-not-at-top
  c = _tiny_finetune_config()
  model = state_lib.build_model(c)
  assert model.learned_pos
  # Gradients reach the encoder through a head of std 2e-5: a tiny eps makes Adam's first
  # step lr x sign(g) for all of them.
  c.optim.eps = 1e-20
  lr = 1e-3
  tx = optim.make(c, optax.constant_schedule(lr))
  state = jax.jit(state_lib.init_fn(c, model, tx))(jax.random.key(0))
  table = vit.sincos_2d(32, (4, 4))[None]
  np.testing.assert_array_equal(state["params"]["encoder"]["pos_embed"], table)
  # A fresh classifier computes what the fixed-table one computes.
  images = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype(np.float32)
  fixed = classifier.Classifier("mu/4", num_classes=c.model.num_classes, learned_pos=False)
  encoder = {k: v for k, v in state["params"]["encoder"].items() if k != "pos_embed"}
  np.testing.assert_array_equal(
      model.apply({"params": state["params"]}, images),
      fixed.apply({"params": dict(state["params"], encoder=encoder)}, images))
  # Initialized from a pre-trained MAE (no pos_embed): the table stays the sin-cos one.
  from tests.export import parity  # pylint: disable=g-import-not-at-top
  pretrained = parity.random_params(dict(variant="mu/4", decoder_width=16, decoder_depth=1,
                                         decoder_heads=2), 16)
  grafted = finetune.Finetune().graft(state, pretrained, lambda _, tree: tree, "W")
  np.testing.assert_array_equal(grafted["params"]["encoder"]["pos_embed"], table)
  np.testing.assert_array_equal(grafted["params"]["encoder"]["cls"], pretrained["encoder"]["cls"])

  rng = np.random.default_rng(1)
  batch = {"image": rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
           "label": rng.integers(0, 20, (8,)).astype(np.int32)}
  step = jax.jit(step_lib.make_train_step(c, model, tx, optax.constant_schedule(lr), 10))
  new_state, _ = step(grafted, batch)
  moved = np.abs(np.asarray(new_state["params"]["encoder"]["pos_embed"]) - table)
  scale = c.optim.layer_decay ** 3  # layer 0 of a 2-block encoder
  # Every entry moves by lr x scale; weight decay (0.05 x a value up to 1) would add up to 5%.
  np.testing.assert_allclose(moved, lr * scale, rtol=1e-3)


def test_graft_refuses_a_learned_position_embedding_it_cannot_hold():
  from mimjax import errors  # pylint: disable=g-import-not-at-top
  from mimjax.methods import finetune  # pylint: disable=g-import-not-at-top
  c = _tiny_finetune_config()
  model = state_lib.build_model(c)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  params = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), params)
  method = finetune.Finetune()
  keep = lambda _, tree: tree
  bigger = dict(params, encoder=dict(params["encoder"], pos_embed=np.zeros((1, 65, 32))))
  with pytest.raises(errors.ConfigError, match="image size it was trained at"):
    method.graft({"params": params}, bigger, keep, "W")
  fixed = dict(params, encoder={k: v for k, v in params["encoder"].items() if k != "pos_embed"})
  with pytest.raises(errors.ConfigError, match="learn_pos_embed=False would discard"):
    method.graft({"params": fixed}, params, keep, "W")


# Keys the recipes leave to the schema on purpose: how to compute, not what the papers publish.
NOT_PUBLISHED = ("model.attention_impl", "model.remat", "model.num_registers")
PUBLISHED_INPUT = ("input.dataset", "input.batch_size", "input.image_size", "input.fast_resize")


def _published(c):
  """{key: value} of what a recipe publishes: the run length, the data's size, every model,
  optimizer and method key."""
  out = {}
  def walk(section, prefix):
    for key in section:
      value = section[key]
      if hasattr(value, "keys"):
        walk(value, f"{prefix}{key}.")
      else:
        out[f"{prefix}{key}"] = value
  walk(c, "")
  method_sections = ("model.", "optim.", "lut.", "finetune.")
  keep = lambda k: (k == "epochs" or k in PUBLISHED_INPUT or k.startswith(method_sections)
                    or (c.method == "finetune" and k in ("input.randaugment",
                                                         "input.eval_crop_fraction")))
  return {k: v for k, v in out.items() if keep(k) and k not in NOT_PUBLISHED}


def _shifted(value):
  """Another value of the same type."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 7
  if isinstance(value, float):
    return value + 0.125
  return value + "_shifted" if isinstance(value, str) else value


@pytest.mark.parametrize("method,arg", [
    ("mae", None), ("mae", "variant=L/16,dataset=imagenet2012"), ("mae", "demo"),
    ("lut", None), ("lut", "variant=H/14"), ("lut", "demo"),
    ("finetune", None), ("finetune", "variant=L/16"), ("finetune", "recipe=lut"),
    ("finetune", "demo")])
def test_recipes_set_every_published_value_themselves(method, arg, monkeypatch):
  """Each recipe value has one home, configs/: with every schema default moved, the recipes
  publish the same values (a recipe that leaned on a default would move with it)."""
  expected = _published(helpers.load_config(method, arg))
  schema = config_lib.base_config

  def moved_schema(name):
    c = schema(name)
    for key, value in _published(c).items():
      *parents, leaf = key.split(".")
      section = c
      for p in parents:
        section = section[p]
      section[leaf] = _shifted(value)
    return c

  monkeypatch.setattr(config_lib, "base_config", moved_schema)
  assert _published(helpers.load_config(method, arg)) == expected
