r"""mimjax-compile: a train step's memory and speed on a TPU slice, known before paying for it.

  mimjax-compile --config configs/mae.py:variant=L/16 --topology v5e:4x4
  mimjax-compile --config configs/lut.py:variant=H/14 --topology v5p-32 \
      --config.mesh.fsdp=16 --report lut_h14.json
  mimjax-compile --config configs/mae.py:variant=B/16 --topology v5e:2x4 --compare_meshes

Compiles the trainer's own step (model, state, mesh, shardings, donation) ahead of time for the
slice's abstract devices (`jax.experimental.topologies`; nothing is materialized, no TPU needed)
and prints, per chip, the memory of parameters, optimizer state and activations against the
chip's HBM, the model's FLOPs per step and per image (and XLA's count for one chip's program),
the step time at an assumed MFU, and a verdict that gives the run's length and cost at that MFU
(`fits: 14.8 GiB of 16 GiB; 1600 epochs = 499,200 steps x 0.19 s = 26 h on 16 chips = 422
chip-hours at 40% MFU`).

Exit status (launchers rely on it): 0 fits, 1 does not fit (verdict printed), 2 user error (one
line), 3 internal error (a bug: traceback printed).
"""
import copy
import dataclasses
import json
import math
import os
import re
import sys
import time
import traceback

from mimjax import tf_env  # pylint: disable=unused-import  (first: before TensorFlow and jax)

from absl import app
from absl import flags
from ml_collections import config_flags

from mimjax import errors
from mimjax import flops as flops_lib
from mimjax import hardware
from mimjax import topology as topology_lib

config_flags.DEFINE_config_file("config", None, "A configs/*.py file, optionally :ARG.",
                                lock_config=True)
flags.DEFINE_string("topology", "local", "A TPU slice (v5e:4x4, v4:2x2x1, v5litepod-16, v4-8, "
                    "v5p-32, v6e-16, ...) or 'local' for this machine's devices.")
flags.DEFINE_string("report", None, "Write the figures as JSON here (a path or gs:// URL).")
flags.DEFINE_float("mfu", 0.4, "The MFU assumed for the step-time estimate, in (0, 1].")
flags.DEFINE_bool("compare_meshes", False, "Compile both as data=N (fsdp=1) and as fsdp=N "
                  "(data=1) and report both; the cheaper one that fits is recommended.")
errors.define_verbose_flag()
flags.mark_flags_as_required(["config"])
errors.refuse_empty_flags("report")
FLAGS = flags.FLAGS

PROG = "mimjax-compile"
EXIT_FITS, EXIT_DOES_NOT_FIT, EXIT_INTERNAL_ERROR = 0, 1, 3  # 2: errors.EXIT_USER_ERROR


@dataclasses.dataclass(frozen=True)
class CompileTarget:
  """What to compile for: devices (real or abstract), their chip and memory per device."""
  name: str
  devices: list
  chip: hardware.Chip | None
  hbm_bytes: int

  @property
  def num_processes(self) -> int:
    return len({d.process_index for d in self.devices})


def tpu_target(name: str) -> CompileTarget:
  tpu_slice = topology_lib.parse(name)
  chip = tpu_slice.tpu.chip
  return CompileTarget(f"{tpu_slice.jax_name} ({tpu_slice.gcloud_name})",
                topology_lib.devices(tpu_slice), chip, chip.hbm_bytes)


def local_target() -> CompileTarget:
  """This machine's devices; a CPU's 'HBM' is its share of the host's memory."""
  import jax

  devices = jax.devices()
  chip = hardware.chip(devices[0].device_kind)
  stats = devices[0].memory_stats() or {}
  if stats.get("bytes_limit"):
    hbm = int(stats["bytes_limit"])
  elif chip is not None:
    hbm = chip.hbm_bytes
  else:
    hbm = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // jax.local_device_count()
  return CompileTarget(f"local ({len(devices)} x {devices[0].device_kind})", devices, chip, hbm)


# ---------------------------------------------------------------------------------------------
# Memory: the state's share per device, and a floor for what the step needs on top of it.
# ---------------------------------------------------------------------------------------------
def _bytes_per_device(tree, shardings) -> int:
  import jax
  import numpy as np

  leaves = jax.tree_util.tree_leaves(tree)
  specs = jax.tree_util.tree_leaves(shardings)
  return int(sum(np.prod(s.shard_shape(a.shape), dtype=np.int64) * a.dtype.itemsize
                 for a, s in zip(leaves, specs)))


def state_breakdown(abstract, shardings) -> dict[str, int]:
  """Bytes per device of the parameters, the optimizer state and the rest (teacher, statistics)."""
  out = {"params": _bytes_per_device(abstract["params"], shardings["params"]),
         "optimizer_state": _bytes_per_device(abstract["opt_state"], shardings["opt_state"])}
  rest = [k for k in abstract if k not in ("params", "opt_state")]
  out["other_state"] = sum(_bytes_per_device(abstract[k], shardings[k]) for k in rest)
  return out


def activation_floor(config, num_devices: int) -> int:
  """Bytes per device that backpropagation must keep at the least: every block's input.

  Even with `model.remat` each block keeps its input for the backward pass; without remat it
  keeps more. So when the state, the gradients and this floor exceed the HBM, no compile is needed
  to know the step cannot fit.
  """
  import numpy as np

  from mimjax import methods
  from mimjax.models import vit

  m = config.model
  spec = vit.decode_variant(m.variant)
  patches = (config.input.image_size // spec.patch) ** 2
  kept = int(patches * (1 - m.get("mask_ratio", 0.0))) + 1  # + cls; all patches when unmasked
  # Every image view of the method's batch goes through the encoder (LUT's student: both).
  views = sum(key != "label" for key in methods.get(config.method).batch_keys)
  per_image = views * kept * spec.width * spec.depth
  if "decoder_width" in m:  # the decoder sees every position
    per_image += (patches + 1) * m.decoder_width * m.decoder_depth
  micro_batch = config.input.batch_size // config.optim.accum_steps // num_devices
  return int(micro_batch * per_image * np.dtype(m.dtype).itemsize)


def _suggestions(config, num_devices: int) -> str:
  tips = []
  if config.mesh.fsdp < num_devices:
    tips.append(f"--config.mesh.fsdp={num_devices}")
  if not config.model.remat:
    tips.append("--config.model.remat=True")
  if config.model.dtype == "float32":
    tips.append("--config.model.dtype=bfloat16")
  micro = config.input.batch_size // config.optim.accum_steps
  if micro % (2 * num_devices) == 0:
    tips.append(f"--config.optim.accum_steps={2 * config.optim.accum_steps}")
  return " or ".join(tips[:2]) if tips else "a larger slice"


# ---------------------------------------------------------------------------------------------
# The bill: the run's steps at the estimated step time.
# ---------------------------------------------------------------------------------------------
def run_steps(config) -> tuple[int | None, str | None]:
  """The run's total steps as the trainer derives them (`config_lib.steps`), and None with the
  reason where that needs the dataset's size and it is not known without reading the data."""
  from mimjax import config_lib
  from mimjax.data import config as data_config

  if config.total_steps:  # the dataset's size does not count
    return config_lib.steps(config, config.input.batch_size)[0], None
  dataset = config.input.dataset
  if dataset in (data_config.FOLDER, data_config.OFFLINE, data_config.DIGITS):
    return None, (f"the {dataset} dataset's size is known only by listing its images: set "
                  "config.total_steps for the bill")
  from absl import logging

  from mimjax import data

  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # tfds warns of a dataset missing here: the verdict says it
  try:  # a prepared tfds dataset's size is in its metadata
    num_examples = data.num_examples(config.input)
  except Exception as e:  # pylint: disable=broad-except
    # An estimate: a dataset this machine cannot read (not prepared here, a bucket out of
    # reach) leaves the run's length unknown, and the verdict says why.
    return None, str(e).split(". ")[0].strip().rstrip(".")
  finally:
    logging.set_verbosity(level)
  return config_lib.steps(config, num_examples)[0], None


def _amount(x: float) -> str:
  return f"{x:,.0f}" if x >= 10 else f"{x:.2g}" if x >= 0.01 else "< 0.01"


def _seconds(s: float) -> str:
  return f"{s:.2g} s" if s >= 0.01 else f"{_amount(s * 1e3)} ms"


def format_bill(r: dict) -> str | None:
  """`1600 epochs = 500,000 steps x 0.19 s = 26 h on 16 chips = 420 chip-hours at 40% MFU`, or
  why the steps are unknown; None without a step-time estimate."""
  if "step_seconds_at_mfu" not in r:
    return None
  seconds, mfu = _seconds(r["step_seconds_at_mfu"]), f"at {r['assumed_mfu']:.0%} MFU"
  epochs = f"{r['epochs']} epochs" if r["epochs"] else ""
  if r["total_steps"] is None:
    return (f"{epochs} of {r['dataset']}: steps unknown here ({r['total_steps_unknown']}); "
            f"{seconds} per step {mfu}")
  return (f"{epochs + ' = ' if epochs else ''}{r['total_steps']:,} steps x {seconds} = "
          f"{_amount(r['run_hours_at_mfu'])} h on {r['num_devices']} chips = "
          f"{_amount(r['chip_hours_at_mfu'])} chip-hours {mfu}")


def _gib(n: float) -> str:
  return f"{n / hardware.GIB:.1f} GiB"


def _hbm(n: int) -> str:
  return f"{n / hardware.GIB:g} GiB" if n % hardware.GIB == 0 else _gib(n)


def _xla_out_of_memory(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


# ---------------------------------------------------------------------------------------------
# The analysis.
# ---------------------------------------------------------------------------------------------
def analyze(config, target: CompileTarget, assumed_mfu: float) -> dict:
  """Compiles the trainer's step of `config` for `target` and returns the report (a dict)."""
  import jax

  from mimjax import checkpoint
  from mimjax import config_lib
  from mimjax import optim
  from mimjax import sharding
  from mimjax import step as step_lib

  n = len(target.devices)
  config_lib.validate(config, target.num_processes, n, check_data=False)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, target.devices)
  steps, steps_unknown = run_steps(config)
  total_steps = steps or step_lib.NOMINAL_STEPS
  lr = optim.schedule(1.0, max(total_steps // 20, 1), total_steps)
  built = step_lib.build_step(config, mesh, lr, total_steps)
  state = state_breakdown(built.abstract, built.shardings)
  batch = step_lib.abstract_batch(config, built.batch_sharding)
  batch_bytes = sum(math.prod(b.shape) for b in batch.values()) // n
  batch_size = config.input.batch_size
  report = dict(
      topology=target.name, device_kind=target.devices[0].device_kind, num_devices=n,
      mesh=dict(mesh.shape), method=config.method, variant=config.model.variant,
      dataset=config.input.dataset, image_size=config.input.image_size, batch_size=batch_size,
      dtype=config.model.dtype, remat=bool(config.model.remat),
      accum_steps=config.optim.accum_steps, total_steps=steps,
      epochs=None if config.total_steps else config.epochs,
      hbm_bytes_per_device=target.hbm_bytes,
      memory_bytes_per_device=dict(state, batch=batch_bytes),
      n_params=int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(built.abstract["params"]))))
  if steps_unknown:
    report["total_steps_unknown"] = steps_unknown
  step_flops = step_lib.model_flops(config)
  if step_flops is not None:  # known before compiling: the verdict's cost too
    per_device = step_flops / n
    report.update(flops_per_step=step_flops, flops_per_device_step=per_device,
                  flops_per_example=step_flops / batch_size)
    if target.chip is not None:
      peak_flops = target.chip.peak_flops(config.model.dtype)
      seconds = flops_lib.step_seconds_at(per_device, peak_flops, assumed_mfu)
      report.update(peak_flops_per_device=peak_flops, assumed_mfu=assumed_mfu,
                    step_seconds_at_mfu=seconds, images_per_sec_at_mfu=batch_size / seconds)
      if steps is not None:  # the bill: the run's hours on this slice, and its chip-hours
        hours = steps * seconds / 3600
        report.update(run_hours_at_mfu=hours, chip_hours_at_mfu=hours * n)

  floor = sum(state.values()) + state["params"] + batch_bytes + activation_floor(config, n)
  tips = _suggestions(config, n)
  if floor > target.hbm_bytes:
    report.update(compiled=False, fits=False, peak_memory_bytes_per_device=floor,
                  verdict=f"does not fit: at least {_gib(floor)} > {_hbm(target.hbm_bytes)} "
                          f"(state, gradients and every block's input, before compiling); "
                          f"try {tips}")
    return report

  # XLA's code generation for a TPU takes minutes on a small machine: say so before it starts.
  print(f"{PROG}: compiling the step for {target.name} with XLA (minutes for ViT-B and larger "
        "on a few CPU cores)", file=sys.stderr, flush=True)
  start = time.perf_counter()
  lowered = built.step_fn.lower(checkpoint.abstract_with_shardings(built.abstract, built.shardings),
                                batch)
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if not _xla_out_of_memory(e):
      raise
    message = " ".join(str(e).split())
    needed = re.search(r"\(([\d.]+)G\) exceeds", message)
    peak = max(floor, int(float(needed.group(1)) * hardware.GIB)) if needed else floor
    report.update(compiled=False, fits=False, peak_memory_bytes_per_device=peak,
                  compile_seconds=time.perf_counter() - start,
                  verdict=f"does not fit: XLA ran out of memory compiling the step "
                          f"({message[:200]}); try {tips}")
    return report
  report["compile_seconds"] = time.perf_counter() - start

  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes
          - memory.alias_size_in_bytes + memory.temp_size_in_bytes
          + memory.generated_code_size_in_bytes)
  report["memory_bytes_per_device"].update(
      temporaries=int(memory.temp_size_in_bytes),
      arguments=int(memory.argument_size_in_bytes),
      outputs_not_aliased=int(memory.output_size_in_bytes - memory.alias_size_in_bytes),
      generated_code=int(memory.generated_code_size_in_bytes))
  fits = peak <= target.hbm_bytes
  report.update(compiled=True, fits=fits, peak_memory_bytes_per_device=int(peak))
  if fits:
    run_bill = format_bill(report)
    report["verdict"] = (f"fits: {_gib(peak)} of {_hbm(target.hbm_bytes)}"
                         + (f"; {run_bill}" if run_bill else ""))
  else:
    report["verdict"] = f"does not fit: {_gib(peak)} > {_hbm(target.hbm_bytes)}; try {tips}"

  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
  report.update(xla_flops_per_device_step=flops_lib.step_flops(compiled, config.optim.accum_steps),
                bytes_accessed_per_device_step=float(cost.get("bytes accessed", 0.0)))
  return report


def compare_meshes(config, target: CompileTarget, assumed_mfu: float) -> dict:
  """The same step as data=N and as fsdp=N; recommends the cheaper one that fits."""
  n = len(target.devices)
  reports = {}
  for name, (dp, fsdp) in {f"data={n}": (-1, 1), f"fsdp={n}": (1, n)}.items():
    c = copy.deepcopy(config)
    c.mesh.data, c.mesh.fsdp = dp, fsdp
    reports[name] = analyze(c, target, assumed_mfu)
  fitting = [k for k, r in reports.items() if r["fits"]]

  # The model FLOPs are the same by construction: what differs is the program XLA made of them
  # (the recomputation it chose to fit the memory, the traffic of the parameters).
  work = lambda r: r.get("xla_flops_per_device_step") or math.inf
  lowest = min(work(r) for r in reports.values())

  def cost(name):  # XLA's FLOPs first; with equal FLOPs (within 2%) the memory traffic decides
    r = reports[name]
    return (work(r) > 1.02 * lowest, r.get("bytes_accessed_per_device_step", math.inf))

  best = min(fitting, key=cost) if fitting else None
  return dict(meshes=reports, recommended=best, fits=best is not None)


# ---------------------------------------------------------------------------------------------
# The console.
# ---------------------------------------------------------------------------------------------
def format_report(r: dict) -> str:
  mem = r["memory_bytes_per_device"]
  per_chip = r["batch_size"] // r["num_devices"]
  lines = [f"{r['method'].upper()} {r['variant']} {r['image_size']}px, batch {r['batch_size']} "
           f"({per_chip} per device), {r['dtype']}, remat {'on' if r['remat'] else 'off'}, "
           f"mesh {r['mesh']} on {r['topology']}",
           f"  {'per device':<34}{'GiB':>8}"]
  rows = [("parameters", "params"), ("optimizer state", "optimizer_state"),
          ("teacher and statistics", "other_state"), ("batch (uint8)", "batch"),
          ("activations and temporaries (XLA)", "temporaries"),
          ("program (XLA)", "generated_code")]
  for label, key in rows:
    # A row for the teacher and statistics only where there are any (LUT), not a step counter.
    if key in mem and (key != "other_state" or mem[key] >= 2 ** 20):
      lines.append(f"  {label:<34}{mem[key] / hardware.GIB:>8.2f}")
  peak_label = "peak (XLA)" if r.get("compiled") else "peak, at least"
  lines.append(f"  {peak_label:<34}{r['peak_memory_bytes_per_device'] / hardware.GIB:>8.2f}"
               f"   of {_hbm(r['hbm_bytes_per_device'])} HBM")
  if "flops_per_step" in r:
    lines.append(f"  model FLOPs: {r['flops_per_example'] / 1e9:.1f} GFLOP per image, "
                 f"{r['flops_per_step'] / 1e12:.1f} TFLOP per step, "
                 f"{r['flops_per_device_step'] / 1e12:.2f} TFLOP per step per device")
  if r.get("xla_flops_per_device_step"):
    lines.append(f"  XLA's program for one device: {r['xla_flops_per_device_step'] / 1e12:.2f} "
                 "TFLOP per step (recomputation included)")
  if "step_seconds_at_mfu" in r and r["fits"]:
    lines.append(f"  at {r['assumed_mfu']:.0%} MFU of {r['peak_flops_per_device'] / 1e12:.0f} "
                 f"TFLOP/s per device: {r['step_seconds_at_mfu'] * 1e3:.0f} ms per step, "
                 f"{r['images_per_sec_at_mfu']:,.0f} images/s")
  elif r["fits"] and "step_seconds_at_mfu" not in r:
    lines.append(f"  no peak FLOP/s known for {r['device_kind']!r}: no step-time estimate")
  if "compile_seconds" in r:
    lines.append(f"  compiled in {r['compile_seconds']:.0f} s")
  lines.append(r["verdict"])
  return "\n".join(lines)


def check_mfu(assumed_mfu: float) -> bool:
  if not 0 < assumed_mfu <= 1:
    raise errors.UserError(f"--mfu={assumed_mfu}: give the assumed MFU as a fraction in (0, 1], "
                           "e.g. 0.4")
  return True


# Refused when the flags are parsed (before the config loads), in the words of main_fn's checks.
flags.register_validator("mfu", check_mfu)
flags.register_validator("topology", lambda t: t == "local" or bool(topology_lib.parse(t)))


def main_fn(config, topology: str, report_path: str | None, assumed_mfu: float,
            compare: bool) -> int:
  check_mfu(assumed_mfu)
  target = local_target() if topology == "local" else tpu_target(topology)
  if compare:
    result = compare_meshes(config, target, assumed_mfu)
    for name, r in result["meshes"].items():
      print(f"[{name}] {format_report(r)}\n")
    print(f"recommended: {result['recommended']} (the cheaper that fits)" if result["fits"]
          else "does not fit with either mesh")
  else:
    result = analyze(config, target, assumed_mfu)
    print(format_report(result))
  if report_path:
    from etils import epath

    path = epath.Path(report_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
  sys.stdout.flush()
  return EXIT_FITS if result["fits"] else EXIT_DOES_NOT_FIT


def run(argv):
  del argv
  errors.quiet_library_logs()
  try:
    code = errors.exit_on_user_error(PROG, main_fn, FLAGS.config, FLAGS.topology, FLAGS.report,
                                     FLAGS.mfu, FLAGS.compare_meshes)
  except Exception:  # a bug: keep its traceback, and an exit status no launcher reads as a verdict
    traceback.print_exc()
    sys.exit(EXIT_INTERNAL_ERROR)
  sys.exit(code)


def main():
  app.run(run, flags_parser=errors.flags_parser(PROG))


if __name__ == "__main__":
  main()
