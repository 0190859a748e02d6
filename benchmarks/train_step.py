r"""Train-step throughput: images/s and achieved FLOP/s of the jitted step on synthetic batches.

  python benchmarks/train_step.py --config configs/mae.py:variant=B/16 \
      --config.input.batch_size=256 --config.model.dtype=bfloat16 --steps 20

The input pipeline is left out (see data_throughput.py): batches are random uint8 arrays already
on the devices. FLOPs come from XLA's cost analysis of the compiled step.
"""
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from mimjax import config_lib
from mimjax import optim
from mimjax import sharding
from mimjax import state as state_lib
from mimjax import train

config_flags.DEFINE_config_file("config", None, "A configs/*.py file, optionally :ARG.")
flags.DEFINE_integer("steps", 10, "Timed steps (after one warm-up step).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = FLAGS.config
  config_lib.validate(config, jax.process_count(), jax.device_count())
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  total_steps = 1000
  lr = optim.schedule(1e-4, 10, total_steps)
  model = state_lib.build_model(config)
  tx = optim.make(config, lr)
  init = state_lib.init_fn(config, model, tx)
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding.state_shardings(mesh, abstract, config.mesh.fsdp_min_size)
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
  size, batch = config.input.image_size, config.input.batch_size
  keys = ("view1", "view2") if config.method == "lut" else ("image",)
  batch_sharding = sharding.batch_sharding(mesh)
  batches = {k: jax.device_put(jax.random.randint(jax.random.key(i), (batch, size, size, 3), 0, 256)
                               .astype(jnp.uint8), batch_sharding) for i, k in enumerate(keys)}
  step = jax.jit(train.make_train_step(config, model, tx, lr, total_steps),
                 in_shardings=(shardings, batch_sharding),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  compiled = step.lower(state, batches).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0

  state, metrics = compiled(state, batches)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, metrics = compiled(state, batches)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / FLAGS.steps
  print(f"{config.method.upper()} {config.model.variant} {size}px, batch {batch}, "
        f"{config.model.dtype}, {jax.device_count()} x {jax.devices()[0].device_kind}")
  print(f"  step {seconds * 1e3:.1f} ms | {batch / seconds:.1f} images/s | "
        f"{flops / 1e9:.1f} GFLOP/step (XLA) | {flops / seconds / 1e12:.3f} TFLOP/s achieved")


if __name__ == "__main__":
  app.run(main)
