"""LUT: MAE plus the broader-context loss on the unmasked tokens, through an EMA teacher."""
import jax
import jax.numpy as jnp

from mimjax import data
from mimjax.methods import base
from mimjax.methods import mae
from mimjax.models import lut as lut_model


class LUT(mae.MAE):
  name = "lut"
  batch_keys = ("view1", "view2")
  image_key = "view1"
  carried_state = ("batch_stats",)
  shape_keys = mae.MAE.shape_keys + ("model.head_hidden",)

  def add_config(self, c):
    super().add_config(c)
    # Neutral: the recipes are configs/*.py.
    c.model.head_hidden = 512
    c.lut = dict(bc_weight=1.0, ema_base=0.99)  # the plain sum of the two losses

  def augment(self, data_cfg):
    size, antialias = data_cfg.image_size, not data_cfg.fast_resize

    def views(encoded, seed):
      view1, view2 = data.augment.lut_train(encoded, seed, size, antialias)
      return {"view1": view1, "view2": view2}
    return views

  def validate(self, c, check):
    super().validate(c, check)
    ratio = c.model.mask_ratio
    check(ratio >= 0.5, "model.mask_ratio",
          f"{ratio} is below 0.5: LUT's two views need disjoint masks, use >= 0.5 (0.75)")
    check(0 < c.lut.ema_base <= 1, "lut.ema_base", "must lie in (0, 1]")
    check(c.lut.bc_weight >= 0, "lut.bc_weight", "must be >= 0")
    check(c.model.head_hidden >= 1, "model.head_hidden", "must be >= 1")

  def build_model(self, c):
    return lut_model.LUT(**self.model_kwargs(c), **self.compute_kwargs(c),
                         head_hidden=c.model.head_hidden)

  def init_variables(self, c, model, rng, image_size):
    images, noise = self.dummy_inputs(c, image_size)
    return model.init(rng, images, images, noise)

  def extra_state(self, c, variables):
    # The teacher starts as a copy of the student.
    return dict(batch_stats=variables["batch_stats"],
                teacher=lut_model.teacher_subset(variables))

  def graft(self, state, loaded, put, source):
    state = super().graft(state, loaded, put, source)
    # A copy: the teacher's buffers must not alias the student's (the step donates both).
    teacher = dict(state["teacher"], params=jax.tree_util.tree_map(
        jnp.copy, {k: state["params"][k] for k in lut_model.TEACHER_MODULES}))
    return dict(state, teacher=teacher)

  def loss(self, c, model, params, state, inputs, noise, rng):
    view1, view2 = data.normalize(inputs["view1"]), data.normalize(inputs["view2"])
    # BatchNorm statistics over this micro-batch, updated once per view (as the reference).
    student, new_vars = model.apply({"params": params, "batch_stats": state["batch_stats"]},
                                    view1, view2, noise, method="student",
                                    mutable=["batch_stats"])
    z1, z2 = model.apply(state["teacher"], view1, view2, method="teacher")
    bc = lut_model.cross_view_bc_loss(student.q1, student.q2, z1, z2)
    mae_value = student.reconstruction.loss
    total = mae_value + c.lut.bc_weight * bc
    return total, ({"mae_loss": mae_value, "bc_loss": bc},
                   {"batch_stats": new_vars["batch_stats"]})

  def after_update(self, c, state, step, total_steps):
    momentum = lut_model.ema_momentum(step, total_steps, c.lut.ema_base, c.optim.accum_steps)
    student = {"params": state["params"], "batch_stats": state["batch_stats"]}
    teacher = lut_model.ema_update(state["teacher"], student, momentum)
    return dict(state, teacher=teacher), {"ema_momentum": momentum}


base.register(LUT())
