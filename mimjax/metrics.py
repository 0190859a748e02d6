"""Metric writers: TensorBoard (clu), `metrics.jsonl`, and a console progress line with ETA.

The workdir may be a gs:// URL: see metric_files.py for how each file is written there.
"""
import math
import time

import numpy as np

from mimjax import input_wait
from mimjax import metric_files

# An evaluator score `NAME/SCALAR` + GAIN_SUFFIX: the score minus its step-0 value.
GAIN_SUFFIX = "_gain"


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class MetricsLogger:
  """Writes scalars and images from the main process; the other processes write nothing.

  On a resumed run, `metrics.jsonl` lines past the resumed step (logged by the interrupted
  run after its last checkpoint) are dropped, so the file reads as one uninterrupted run.
  """

  def __init__(self, workdir: str, total_steps: int, start_step: int, is_main: bool = True):
    self.total_steps = total_steps
    self.is_main = is_main
    self._last = (time.monotonic(), start_step)
    if not is_main:
      return
    # A run from step 0 keeps no row of an attempt that stopped before its first checkpoint (that
    # attempt's step-0 evaluation included): it logs its own.
    self._jsonl = metric_files.JsonLines(workdir, start_step if start_step else -1)
    self._writer = metric_files.TensorBoard(workdir)

  def throughput(self, step: int, images_per_step: int) -> tuple[float, float]:
    """(images/s since the last call, seconds left at that pace)."""
    now = time.monotonic()
    last_time, last_step = self._last
    self._last = (now, step)
    steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
    eta = (self.total_steps - step) / steps_per_sec if steps_per_sec > 0 else math.inf
    return steps_per_sec * images_per_step, eta

  def write_scalars(self, step: int, scalars: dict[str, float]):
    if not self.is_main:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._writer.write_scalars(step, scalars)
    self._jsonl.write({"step": step, **scalars})
    eta = scalars.get("eta_seconds", math.inf)
    mfu = f"MFU {scalars['mfu']:.1%} | " if "mfu" in scalars else ""
    waiting = scalars.get("input_wait_fraction", 0.0)
    # Shown only when the run is input-bound (see input_wait.InputBoundWarning).
    wait = f"input wait {waiting:.0%} | " if waiting > input_wait.INPUT_BOUND else ""
    print(f"step {step}/{self.total_steps} | loss {scalars['loss']:.4f} | "
          f"lr {scalars['lr']:.2e} | {scalars['images_per_sec']:.0f} img/s | {mfu}{wait}"
          f"ETA {_format_duration(eta) if math.isfinite(eta) else '?'}", flush=True)

  def write_eval_scalars(self, step: int, scalars: dict[str, float]):
    """Evaluator results ('knn/top1', 'knn/top1_gain', 'knn/seconds', ...): TensorBoard,
    metrics.jsonl, and the console, where a score with a gain shows its step-0 value beside it."""
    if not self.is_main or not scalars:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._writer.write_scalars(step, scalars)
    self._jsonl.write({"step": step, **scalars})
    shown = []
    for k, v in scalars.items():
      gain = scalars.get(k + GAIN_SUFFIX)
      if gain is not None:
        shown.append(f"{k} {v:.4g} (step 0: {v - gain:.4g}, {gain:+.4g})")
      elif not k.endswith(GAIN_SUFFIX):
        shown.append(f"{k} {v:.4g}")
    print(f"step {step}/{self.total_steps} | " + " | ".join(shown), flush=True)

  def write_images(self, step: int, images: dict[str, np.ndarray]):
    if self.is_main:
      self._writer.write_images(step, images)

  def flush(self):
    """Makes everything written so far durable in the workdir (called at each checkpoint)."""
    if self.is_main:
      self._jsonl.flush()
      self._writer.flush()

  def close(self):
    if self.is_main:
      self._writer.close()
      self._jsonl.close()

