"""Fine-tuning: a pre-trained encoder, global average pooling, fc_norm and a linear head, trained
with the MAE fine-tuning recipe (layer-wise lr decay, drop path, random erasing, mixup / cutmix,
label smoothing); top-1 / top-5 on the validation split during training.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mimjax import data
from mimjax import errors
from mimjax.data import mixup
from mimjax.methods import base
from mimjax.models import classifier


class Finetune(base.Method):
  name = "finetune"
  batch_keys = ("image", "label")
  shape_keys = ("model.num_classes", "model.global_pool", "model.learn_pos_embed")
  # Fine-tuning runs saved before the position embedding was learned kept the fixed table.
  legacy_defaults = {"model.learn_pos_embed": False}

  def add_config(self, c):
    # Neutral: off, or the smallest valid value; the recipes are configs/finetune.py.
    c.model.num_classes = 2
    c.model.drop_path = 0.0  # the last block's rate (linear from 0 over the blocks)
    # True: global average pooling + fc_norm; False: the [CLS] token after the final norm.
    c.model.global_pool = False
    # True: train the position embedding from the fixed sin-cos table; False: keep the table.
    c.model.learn_pos_embed = False
    # Beta parameters 0 = off; the probabilities apply once mixup or cutmix is on.
    c.finetune = dict(
        label_smoothing=0.0, mixup=0.0, cutmix=0.0, mixup_prob=1.0, mixup_switch_prob=0.5,
        random_erasing=0.0)

  def augment(self, data_cfg):
    size, antialias = data_cfg.image_size, not data_cfg.fast_resize
    spec = data_cfg.randaugment
    policy = data.randaugment.from_spec(spec) if spec else None
    return lambda encoded, seed: {"image": data.augment.classify_train(encoded, seed, size,
                                                                       antialias, policy)}

  def validate(self, c, check):
    f = c.finetune
    check(c.model.num_classes >= 2, "model.num_classes", "must be >= 2")
    check(0 <= c.model.drop_path < 1, "model.drop_path", "must lie in [0, 1)")
    check(0 <= f.label_smoothing < 1, "finetune.label_smoothing", "must lie in [0, 1)")
    for key in ("mixup", "cutmix"):
      check(f[key] >= 0, f"finetune.{key}", "the Beta parameter must be >= 0 (0 = off)")
    for key in ("mixup_prob", "mixup_switch_prob", "random_erasing"):
      check(0 <= f[key] <= 1, f"finetune.{key}", "a probability must lie in [0, 1]")

  def build_model(self, c):
    m = c.model
    learned_pos = m.get("learn_pos_embed", self.legacy_defaults["model.learn_pos_embed"])
    return classifier.Classifier(m.variant, m.num_classes, m.drop_path, m.global_pool,
                                 jnp.dtype(m.dtype), m.attention_impl, m.remat, learned_pos)

  def init_variables(self, c, model, rng, image_size):
    return model.init(rng, jnp.zeros((2, image_size, image_size, 3), jnp.float32))

  def graft(self, state, loaded, put, source):
    """The pre-trained encoder (MAE's or LUT's student, or a classifier's); with global pooling
    its final norm is dropped; fc_norm and the head stay freshly initialized.

    A pre-trained encoder has no `pos_embed` (its table is fixed): the classifier's keeps its
    initial value, that same sin-cos table, as MAE's fine-tuning loads it from the checkpoint.
    """
    if "encoder" not in loaded:
      raise errors.ConfigError(
          f"config.init_from: {source} has no encoder (it has {sorted(loaded)})")
    encoder = dict(loaded["encoder"])
    own = state["params"]["encoder"]
    if "norm" not in own["transformer"]:
      encoder["transformer"] = {k: v for k, v in encoder["transformer"].items() if k != "norm"}
    if "pos_embed" in own and "pos_embed" not in encoder:
      encoder["pos_embed"] = own["pos_embed"]
    if "pos_embed" in encoder and "pos_embed" not in own:
      raise errors.ConfigError(
          f"config.init_from: {source} has a learned position embedding, which "
          "config.model.learn_pos_embed=False would discard: set it to True")
    shapes = lambda tree: jax.tree_util.tree_map(np.shape, tree)
    if "pos_embed" in encoder and np.shape(encoder["pos_embed"]) != np.shape(own["pos_embed"]):
      raise errors.ConfigError(
          f"config.init_from: the position embedding of {source} has shape "
          f"{np.shape(encoder['pos_embed'])}, this config's {np.shape(own['pos_embed'])}: "
          "fine-tune at the image size it was trained at (config.input.image_size)")
    if shapes(encoder) != shapes(state["params"]["encoder"]):
      raise errors.ConfigError(
          f"config.init_from: the encoder of {source} has other shapes than this "
          "config.model.variant's: use the variant it was pre-trained with")
    return dict(state, params=dict(state["params"], encoder=put("encoder", encoder)))

  def example_randomness(self, c, key, batch_size, image_size):
    # Random erasing per example, keyed by the example's row in the global batch.
    return jax.random.split(jax.random.fold_in(key, 7), batch_size)

  def loss(self, c, model, params, state, inputs, example_keys, rng):
    f = c.finetune
    images = mixup.random_erasing(example_keys, data.normalize(inputs["image"]), f.random_erasing)
    targets = mixup.smooth_targets(inputs["label"], c.model.num_classes, f.label_smoothing)
    k_mix, k_drop = jax.random.split(rng)
    images, targets, _ = mixup.mixup_cutmix(k_mix, images, targets, f.mixup, f.cutmix,
                                            f.mixup_prob, f.mixup_switch_prob)
    logits = model.apply({"params": params}, images, train=True, rngs={"dropout": k_drop})
    loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
    return loss, ({}, {})


base.register(Finetune())

