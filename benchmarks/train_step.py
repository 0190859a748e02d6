r"""Train-step throughput and MFU, mimjax against a PyTorch reference, in one run.

  python benchmarks/train_step.py --config configs/mae.py:variant=B/16 \
      --config.input.batch_size=256 --steps 20

(The recipes compute in bfloat16; on a CPU, time float32: --config.model.dtype=float32.)

JAX side: the trainer's own step (step.build_step: model, shardings, donation) on synthetic
uint8 batches already on the devices (the input pipeline is data_throughput.py's business);
the model FLOPs that MFU counts (step.model_flops), the same figure the trainer logs MFU with.
`--profile_dir DIR` writes a jax.profiler trace of the timed steps there (TensorBoard's profile
plugin or Perfetto read it). Needs jax, flax, optax and ml_collections only (no TensorFlow, no
input pipeline), so it runs on a bare accelerator host. PyTorch side (MAE only, `--torch`):
Hugging Face `ViTMAEForPreTraining` with the same model and batch, `torch.compile`, AdamW
(fused on CUDA), bf16 autocast when the config computes in bfloat16. Both report images/s and,
where the device's peak is known (mimjax/hardware.py), MFU; the PyTorch MFU uses the same FLOPs per
image, since it is the same model. Figures are printed, never asserted.
"""
import contextlib
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from mimjax import config_lib
from mimjax import hardware
from mimjax import optim
from mimjax import sharding
from mimjax import state as state_lib
from mimjax import step as step_lib

config_flags.DEFINE_config_file("config", None, "A configs/*.py file, optionally :ARG.")
flags.DEFINE_integer("steps", 10, "Timed steps (after the warm-up steps); the median step is "
                     "reported, which a busy machine's spikes disturb less than the mean.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (compilation, caches).")
flags.DEFINE_bool("torch", True, "Also time the PyTorch reference (MAE configs).")
flags.DEFINE_bool("torch_compile", True, "torch.compile the reference.")
flags.DEFINE_string("profile_dir", None, "Write a jax.profiler trace of the timed steps here.")
FLAGS = flags.FLAGS


def _mfu_text(images_per_sec, flops_per_image, num_devices, peak):
  if peak is None or flops_per_image is None:
    return "MFU ? (no peak known for this device)"
  return f"MFU {images_per_sec * flops_per_image / num_devices / peak:.1%}"


def time_jax(config):
  """(median seconds per step, FLOPs per image) of the trainer's step."""
  config_lib.validate(config, jax.process_count(), jax.device_count(), check_data=False)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  total_steps = step_lib.NOMINAL_STEPS
  built = step_lib.build_step(config, mesh, optim.schedule(1e-4, 10, total_steps), total_steps)
  state = jax.jit(built.init, out_shardings=built.shardings)(jax.random.key(0))
  spec = step_lib.abstract_batch(config, built.batch_sharding)
  batch = {k: jax.device_put(jax.random.randint(jax.random.key(i), s.shape, 0, 256)
                             .astype(jnp.uint8), built.batch_sharding)
           for i, (k, s) in enumerate(spec.items())}
  for _ in range(FLAGS.warmup):
    state, metrics = built.step_fn(state, batch)
  jax.block_until_ready(metrics)
  profiling = contextlib.nullcontext()
  if FLAGS.profile_dir:
    profiling = jax.profiler.trace(FLAGS.profile_dir)
  times = []
  with profiling:
    for _ in range(FLAGS.steps):
      start = time.perf_counter()
      state, metrics = built.step_fn(state, batch)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  step_flops = step_lib.model_flops(config)
  flops_per_image = step_flops / config.input.batch_size if step_flops else None
  return seconds, flops_per_image


def time_torch(config):
  """Median seconds per step of Hugging Face ViTMAEForPreTraining, same model and batch."""
  import torch
  import transformers

  from mimjax.export import hf_vitmae

  device = "cuda" if torch.cuda.is_available() else "cpu"
  hf = transformers.ViTMAEConfig(**hf_vitmae.hf_config(state_lib.model_kwargs(config),
                                                       config.input.image_size))
  model = transformers.ViTMAEForPreTraining(hf).to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05,
                          fused=device == "cuda")
  bf16 = config.model.dtype == "bfloat16"
  size, batch = config.input.image_size, config.input.batch_size
  images = torch.randn(batch, 3, size, size, device=device)

  def step(x):
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
      loss = model(pixel_values=x).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss

  if FLAGS.torch_compile:
    step = torch.compile(step)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  for _ in range(FLAGS.warmup):
    step(images)
  sync()
  times = []
  for _ in range(FLAGS.steps):
    start = time.perf_counter()
    loss = step(images)
    float(loss.detach())  # waits for the step
    sync()
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  name = (f"{torch.cuda.get_device_name()}, torch {torch.__version__}" if device == "cuda"
          else f"cpu, torch {torch.__version__}")
  del model, opt, images, step
  torch._dynamo.reset()  # pylint: disable=protected-access  (its caches hold the model)
  if device == "cuda":
    torch.cuda.empty_cache()
  return seconds, name


def main(argv):
  del argv
  config = FLAGS.config
  batch = config.input.batch_size
  when = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
  # PyTorch first: JAX takes most of an accelerator's memory when its backend starts, PyTorch
  # gives its cache back when done.
  reference = time_torch(config) if FLAGS.torch and config.method == "mae" else None
  kind = jax.devices()[0].device_kind
  spec = hardware.chip(kind)
  peak = spec.peak_flops(config.model.dtype) if spec else None
  print(f"{config.method.upper()} {config.model.variant} {config.input.image_size}px, batch {batch}, "
        f"{config.model.dtype}, attention {config.model.attention_impl or 'default'}, "
        f"{jax.device_count()} x {kind}, {when}, jax {jax.__version__}", flush=True)
  seconds, flops_per_image = time_jax(config)
  jax_rate = batch / seconds
  gflop = f"{flops_per_image / 1e9:.4g} GFLOP/image (model)" if flops_per_image else "FLOPs ?"
  print(f"  mimjax  step {seconds * 1e3:.1f} ms | {jax_rate:.1f} images/s | {gflop} | "
        f"{_mfu_text(jax_rate, flops_per_image, jax.device_count(), peak)}", flush=True)
  if reference is not None:
    torch_seconds, name = reference
    torch_rate = batch / torch_seconds
    print(f"  PyTorch step {torch_seconds * 1e3:.1f} ms | {torch_rate:.1f} images/s | "
          f"HF ViTMAEForPreTraining on {name}"
          f"{', torch.compile' if FLAGS.torch_compile else ''} | "
          f"{_mfu_text(torch_rate, flops_per_image, 1, peak)}")
    print(f"  ratio mimjax / PyTorch: {jax_rate / torch_rate:.2f}x images/s")
  elif FLAGS.torch:
    print("  (no PyTorch reference for LUT: Hugging Face has no LUT model)")


if __name__ == "__main__":
  app.run(main)
