"""Model FLOP/s utilization (MFU): the trainer's scalars, and step times at an assumed MFU.

`StepUtilization` turns a step's model FLOPs (`step.model_flops`) and the measured steps/s into
the `tflops_per_device` and `mfu` scalars the trainer logs; `step_flops(compiled)` reads XLA's
count for one device's compiled program (the hardware's work: recomputation included), which
mimjax-compile reports beside the model FLOPs. The chips' peaks are in `hardware`.
"""
from mimjax import hardware


def step_flops(compiled, loop_trips: int = 1) -> float | None:
  """FLOPs of one call of a compiled function on one device, from XLA's cost analysis.

  XLA counts a loop's body once, whatever its trip count: for the train step, whose micro-batch
  loop runs `optim.accum_steps` times, pass that as `loop_trips`. The optimizer update outside
  the loop is then counted that many times too: a few FLOPs per parameter, against thousands per
  parameter in each micro-step of a real model. The loops XLA makes itself (the collective
  matmuls of fsdp at large sizes) stay counted once, so this reads low there: MFU takes the
  model's count (`step.model_flops`) instead.
  """
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX versions: one dict per partition
    cost = cost[0] if cost else None
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  return flops * loop_trips if flops > 0 else None


def mfu(flops_per_device: float, step_seconds: float, peak_flops: float) -> float:
  """The share of the device's peak that `flops_per_device` in `step_seconds` attains."""
  return flops_per_device / step_seconds / peak_flops


def step_seconds_at(flops_per_device: float, peak_flops: float, utilization: float) -> float:
  """The step time of `flops_per_device` at a given MFU."""
  return flops_per_device / (peak_flops * utilization)


class StepUtilization:
  """`tflops_per_device` and `mfu` of the train step, from its model FLOPs and the measured steps/s.

  `step_flops` is the whole step's count over the global batch (`step.model_flops`), shared
  evenly by the devices. Without a known peak (a CPU, an unlisted accelerator) only
  `tflops_per_device` is logged, and that is said once; without a FLOP count nothing is logged.
  """

  def __init__(self, step_flops: float | None, num_devices: int, device_kind: str, dtype: str,
               log=print):
    self.flops_per_device = step_flops / num_devices if step_flops else None
    spec = hardware.chip(device_kind)
    self.peak = spec.peak_flops(dtype) if spec else None
    if self.flops_per_device is None:
      log("No FLOP count for this step (it is counted on a CPU device: keep cpu in "
          "JAX_PLATFORMS): mfu and tflops_per_device are not logged")
    elif self.peak is None:
      log(f"No peak FLOP/s known for device kind {device_kind!r} (see mimjax/hardware.py): "
          "logging tflops_per_device, not mfu")

  def scalars(self, steps_per_sec: float) -> dict[str, float]:
    if self.flops_per_device is None or steps_per_sec <= 0:
      return {}
    out = {"tflops_per_device": self.flops_per_device * steps_per_sec / hardware.TERA}
    if self.peak is not None:
      out["mfu"] = mfu(self.flops_per_device, 1.0 / steps_per_sec, self.peak)
    return out
