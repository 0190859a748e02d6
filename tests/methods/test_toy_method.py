"""A fourth training method, defined in this file alone, trains with the real trainer.

The toy colourizes: its augmentation crops a view and greys it, its loss regresses the colour
crop's pixels from the grey one through a small head, and its pictures show the two beside the
prediction. It registers itself and touches no other room: the config schema, the input
pipeline, the step, the pictures and the checkpoints all go through `mimjax.methods.Method`.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimjax import checkpoint
from mimjax import config_lib
from mimjax import data
from mimjax import errors
from mimjax import evals
from mimjax import methods
from mimjax import metric_files
from mimjax import state as state_lib
from mimjax import train
from mimjax.data import augment
from mimjax.data.tf_host import tf
from mimjax.methods import base


class Colourizer(nn.Module):
  """Grey pixels -> colour pixels, one pixel at a time."""
  hidden: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.relu(nn.Dense(self.hidden)(x)))


class Toy(base.Method):
  name = "toy"
  batch_keys = ("crop", "grey")
  shape_keys = ("toy.hidden",)
  keys_seen = set()  # the batch keys the loss was traced with

  def add_config(self, c):
    c.toy = dict(hidden=8)

  def validate(self, c, check):
    check(c.toy.hidden >= 1, "toy.hidden", "must be >= 1")

  def augment(self, data_cfg):
    size = data_cfg.image_size

    def crop_and_grey(encoded, seed):
      image = augment.to_uint8(augment.resize_shorter(augment.decode(encoded), size))
      crop = augment.random_crop_flip(image, size, seed)
      return {"crop": crop, "grey": tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(crop))}
    return crop_and_grey

  def build_model(self, c):
    return Colourizer(c.toy.hidden)

  def init_variables(self, c, model, rng, image_size):
    return model.init(rng, jnp.zeros((2, image_size, image_size, 3)))

  def loss(self, c, model, params, state, inputs, example_randomness, rng):
    self.keys_seen.update(inputs)
    pred = model.apply({"params": params}, data.normalize(inputs["grey"]))
    loss = jnp.mean(jnp.square(pred - data.normalize(inputs["crop"])))
    # How far the red channel lies from the green one, in grey levels, in each view.
    spread = lambda x: jnp.mean(jnp.abs(x[..., 0].astype(jnp.float32) - x[..., 1]))
    return loss, ({"grey_spread": spread(inputs["grey"]),
                   "crop_spread": spread(inputs["crop"])}, {})

  def visualize(self, c, model):
    def pictures(params, batch, rng):
      grey, crop = batch["grey"][:4], batch["crop"][:4]
      pred = data.denormalize(model.apply({"params": params}, data.normalize(grey)))
      rows = [grey, jnp.round(pred * 255).astype(jnp.uint8), crop]
      return {"toy_colourized": jnp.concatenate([jnp.concatenate(list(r), 1) for r in rows])[None]}
    return pictures


@pytest.fixture
def toy(monkeypatch):
  monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # the toy leaves with the test
  return methods.register(Toy())


def toy_config():
  c = config_lib.base_config("toy")
  c.input.update(dataset="digits", image_size=16, batch_size=8, num_threads=2)
  c.model.variant = "mu/4"
  c.update_from_flattened_dict({
      "epochs": 1, "total_steps": 4, "optim.base_lr": 0.1, "optim.warmup_epochs": 0,
      "log_every_steps": 1, "ckpt_every_steps": 2, "image_every_steps": 2})
  return c


def image_tags(workdir) -> dict[int, set[str]]:
  """The image summaries in the workdir's TensorBoard events: step -> tags."""
  tags = {}
  for path in tf.io.gfile.glob(f"{workdir}/tensorboard/events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "images":
          tags.setdefault(event.step, set()).add(value.tag)
  return tags


def test_a_method_defined_in_a_test_trains_with_the_real_trainer(toy, tmp_path):
  assert "toy" in methods.names()
  with pytest.raises(errors.ConfigError, match=r"config.method: 'simclr' is not one of .*'toy'"):
    methods.get("simclr")
  workdir = str(tmp_path)
  final = train.train(toy_config(), workdir)

  assert toy.keys_seen == {"crop", "grey"}
  rows = {r["step"]: r for r in metric_files.read(workdir) if "loss" in r}
  assert sorted(rows) == [1, 2, 3, 4]
  losses = [rows[s]["loss"] for s in (1, 2, 3, 4)]
  assert all(math.isfinite(l) for l in losses) and len(set(losses)) == 4, losses
  for r in rows.values():  # what its augmentation made is what its loss read
    assert r["grey_spread"] == 0 and r["crop_spread"] > 1, r
  assert image_tags(workdir) == {2: {"toy_colourized"}, 4: {"toy_colourized"}}

  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [2, 4]
  config, step, saved = state_lib.restore_state(workdir)
  assert config.method == "toy" and config.toy.hidden == 8 and step == 4
  for got, want in zip(jax.tree_util.tree_leaves(saved["params"]),
                       jax.tree_util.tree_leaves(final["params"])):
    np.testing.assert_array_equal(got, want)


def test_the_reconstruction_evaluator_refuses_a_method_that_reconstructs_nothing(toy):
  c = toy_config()
  c.evals.recon = evals.make_config("reconstruction", split="train")
  with pytest.raises(errors.ConfigError,
                     match="config.evals.recon.type: 'reconstruction' .* which 'toy' does not"):
    config_lib.validate(c, 1, 1)
